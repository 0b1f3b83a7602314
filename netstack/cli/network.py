"""``pynet network ...``: create, ls, inspect, rm, prune, connect, disconnect.

Each command parses its flags, makes one or a few API calls and renders the
answer the way ``docker network ...`` does (same columns, same messages).
"""

from __future__ import annotations

from netstack.cli.args import BOOL, KV, LIST, VALUE, Flag, Spec
from netstack.cli.common import CliError, Context, filters_of, inspect_each, list_each, list_flags, remove_each

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LS_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"
LS_HEADERS = {
    "ID": "NETWORK ID",
    "Name": "NAME",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "IPv4": "IPV4",
    "IPv6": "IPV6",
    "Internal": "INTERNAL",
    "Labels": "LABELS",
    "CreatedAt": "CREATED AT",
}
PRUNE_WARNING = (
    "WARNING! This will remove all custom networks not used by at least one container.\n"
    "Are you sure you want to continue? [y/N] "
)


def _p(verb: str, usage: str, summary: str, flags: list[Flag], nargs: tuple[int, int | None], **kw: Any) -> Spec:
    return Spec(f"pynet network {verb}", usage, summary, flags, nargs, **kw)


CREATE = _p(
    "create",
    "[OPTIONS] NETWORK",
    "Create a network",
    [
        Flag("driver", "d", VALUE, "Driver to manage the Network", default="bridge"),
        Flag("subnet", "", LIST, "Subnet in CIDR format that represents a network segment", "strings"),
        Flag("ip-range", "", LIST, "Allocate container ip from a sub-range", "strings"),
        Flag("gateway", "", LIST, "IPv4 or IPv6 Gateway for the master subnet", "strings"),
        Flag("aux-address", "", KV, "Auxiliary IPv4 or IPv6 addresses used by Network driver", "NAME=IP"),
        Flag("ipam-driver", "", VALUE, "IP Address Management Driver", default="default"),
        Flag("ipam-opt", "", KV, "Set IPAM driver specific options", "KEY=VALUE"),
        Flag("opt", "o", KV, "Set driver specific options", "KEY=VALUE"),
        Flag("label", "", KV, "Set metadata on a network", "KEY=VALUE"),
        Flag("internal", "", BOOL, "Restrict external access to the network"),
        Flag("ipv6", "", BOOL, "Enable IPv6 networking"),
        Flag("attachable", "", BOOL, "Enable manual container attachment"),
        Flag("scope", "", VALUE, "Control the network's scope"),
    ],
    (1, 1),
)
LS = _p(
    "ls",
    "[OPTIONS]",
    "List networks",
    list_flags("network", "driver=bridge"),
    (0, 0),
)
INSPECT = _p(
    "inspect",
    "[OPTIONS] NETWORK [NETWORK...]",
    "Display detailed information on one or more networks",
    [
        Flag("format", "f", VALUE, "Format output using a custom template: 'json' or a Go template"),
        Flag("verbose", "v", BOOL, "Verbose output for diagnostics"),
    ],
    (1, None),
)
RM = _p("rm", "NETWORK [NETWORK...]", "Remove one or more networks", [], (1, None))
PRUNE = _p(
    "prune",
    "[OPTIONS]",
    "Remove all unused networks",
    [
        Flag("force", "f", BOOL, "Do not prompt for confirmation"),
        Flag("filter", "", KV, "Provide filter values (e.g. 'until=<timestamp>')", "filter"),
    ],
    (0, 0),
)
CONNECT = _p(
    "connect",
    "[OPTIONS] NETWORK SANDBOX",
    "Connect a sandbox to a network",
    [
        Flag("ip", "", VALUE, "IPv4 address (e.g., \"172.30.100.104\")"),
        Flag("ip6", "", VALUE, "IPv6 address (e.g., \"2001:db8::33\")"),
        Flag("alias", "", LIST, "Add network-scoped alias for the sandbox", "strings"),
        Flag("gw-priority", "", VALUE, "Highest gw-priority provides the default gateway", "int"),
    ],
    (2, 2),
)
DISCONNECT = _p(
    "disconnect",
    "[OPTIONS] NETWORK SANDBOX",
    "Disconnect a sandbox from a network",
    [Flag("force", "f", BOOL, "Force the sandbox to disconnect from a network")],
    (2, 2),
)


# --- create -------------------------------------------------------------------


def create(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    body = {
        "Name": args[0],
        "Driver": opts["driver"],
        "Scope": opts["scope"] or "",
        "EnableIPv6": opts["ipv6"],
        "IPAM": {
            "Driver": opts["ipam_driver"],
            "Config": ipam_config(opts["subnet"], opts["ip_range"], opts["gateway"], opts["aux_address"]),
            "Options": dict(opts["ipam_opt"]),
        },
        "Internal": opts["internal"],
        "Attachable": opts["attachable"],
        "Options": dict(opts["opt"]),
        "Labels": dict(opts["label"]),
    }
    resp = ctx.client().network_create(body)
    if resp.get("Warning"):
        ctx.err(resp["Warning"] + "\n")
    ctx.out(resp["Id"] + "\n")
    return 0


def ipam_config(
    subnets: list[str], ranges: list[str], gateways: list[str], aux: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Pair --ip-range, --gateway and --aux-address with the --subnet that
    contains each, as docker's ``createIPAMConfig`` does, with its messages."""
    if len(subnets) < len(ranges) or len(subnets) < len(gateways):
        raise CliError("every ip-range or gateway must have a corresponding subnet")
    import ipaddress

    def net(text: str, what: str) -> Any:
        try:
            return ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise CliError(f"invalid {what}: invalid CIDR address: {text}") from None

    def addr(text: str) -> Any:
        try:
            if "/" in text:
                return ipaddress.ip_interface(text).ip
            return ipaddress.ip_address(text)
        except ValueError:
            raise CliError(f"invalid address: {text}") from None

    nets = [net(s, "subnet") for s in subnets]
    for i, a in enumerate(nets):
        for b in nets[:i]:
            if a.version == b.version and (a.subnet_of(b) or b.subnet_of(a)):
                raise CliError("multiple overlapping subnet configuration is not supported")
    configs: list[dict[str, Any]] = [{"Subnet": s, "AuxiliaryAddresses": {}} for s in subnets]

    def owner(value: str, what: str) -> list[dict[str, Any]]:
        ip = addr(value)
        found = [c for c, n in zip(configs, nets) if ip.version == n.version and ip in n]
        if not found:
            raise CliError(f"no matching subnet for {what} {value}")
        return found

    for r in ranges:
        for c in owner(r, "range"):
            if "IPRange" in c:
                raise CliError(f"cannot configure multiple ranges ({r}, {c['IPRange']}) on the same subnet ({c['Subnet']})")
            c["IPRange"] = r
    for g in gateways:
        for c in owner(g, "gateway"):
            if "Gateway" in c:
                raise CliError(f"cannot configure multiple gateways ({g}, {c['Gateway']}) for the same subnet ({c['Subnet']})")
            c["Gateway"] = g
    for name, ip in aux:
        for c in owner(ip, "aux-address"):
            c["AuxiliaryAddresses"][name] = ip
    return configs


# --- ls -----------------------------------------------------------------------


def ls(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    return list_each(ctx, opts, ctx.client().networks, network_row, LS_HEADERS, LS_TABLE)


def network_row(net: dict[str, Any], trunc: bool) -> Any:
    from netstack.cli.render import Row, go_time, truncate_id

    ident = net.get("Id", "")
    labels = net.get("Labels") or {}
    fields = {
        "ID": truncate_id(ident) if trunc else ident,
        "Name": net.get("Name", ""),
        "Driver": net.get("Driver", ""),
        "Scope": net.get("Scope", ""),
        "IPv4": _bool(net.get("EnableIPv4", True)),
        "IPv6": _bool(net.get("EnableIPv6", False)),
        "Internal": _bool(net.get("Internal", False)),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "CreatedAt": go_time(net.get("Created", "")),
    }
    return Row("*formatter.networkContext", fields, labels)


def _bool(value: Any) -> str:
    return "true" if value else "false"


# --- inspect, rm, prune ---------------------------------------------------------


def inspect(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    client = ctx.client()
    return inspect_each(ctx, args, lambda n: client.network_inspect(n, opts["verbose"]), "network", opts["format"])


def rm(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    return remove_each(ctx, args, ctx.client().network_remove, "network")


def prune(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    if not opts["force"] and not ctx.confirm(PRUNE_WARNING):
        return 0
    report = ctx.client().networks_prune(filters_of(opts["filter"]) or None) or {}
    deleted = report.get("NetworksDeleted") or []
    if deleted:
        ctx.out("Deleted Networks:\n" + "".join(n + "\n" for n in deleted))
    return 0


# --- connect, disconnect ----------------------------------------------------------


def connect(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    gw = 0
    if opts["gw_priority"] is not None:
        try:
            gw = int(opts["gw_priority"])
        except ValueError:
            raise CONNECT.error(
                f'invalid argument "{opts["gw_priority"]}" for "--gw-priority" flag: expected an integer'
            ) from None
    body = {
        "Container": args[1],
        "EndpointConfig": {
            "IPAMConfig": {"IPv4Address": opts["ip"] or "", "IPv6Address": opts["ip6"] or ""},
            "Aliases": opts["alias"],
            "GwPriority": gw,
        },
    }
    ctx.client().network_connect(args[0], body)
    return 0


def disconnect(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    ctx.client().network_disconnect(args[0], {"Container": args[1], "Force": opts["force"]})
    return 0


COMMANDS = {
    "create": (CREATE, create),
    "ls": (LS, ls),
    "list": (LS, ls),
    "inspect": (INSPECT, inspect),
    "rm": (RM, rm),
    "remove": (RM, rm),
    "prune": (PRUNE, prune),
    "connect": (CONNECT, connect),
    "disconnect": (DISCONNECT, disconnect),
}
SUMMARY = "Manage networks"
