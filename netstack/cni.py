"""``pynet-cni``: a CNI 1.1 plugin whose networks are pynet networks.

A runtime runs it once per operation, with ``CNI_*`` in the environment and
the network configuration on stdin (CNI SPEC.md).  Every operation is a few
calls to pynetd over its UNIX socket; the plugin itself keeps no state:

    ADD      ensure the pynet network named by the config (created on first
             use, bridge or macvlan, addresses from pynet's IPAM), then
             create a sandbox ``cni-<containerid>-<ifname>`` on CNI_NETNS
             with one endpoint named CNI_IFNAME; print the result
    DEL      remove that sandbox (force); a sandbox or netns already gone is
             success, so DEL is idempotent
    CHECK    the sandbox exists on CNI_NETNS, and the interface inside has
             the addresses of prevResult
    GC       remove the cni-* sandboxes of this network that are not in
             ``cni.dev/valid-attachments``
    STATUS   pynetd answers (else code 50)
    VERSION  the versions below

Start-up time is a goal (a Go plugin answers in tens of milliseconds), so
this module imports only builtins and ``netstack.api.client`` (no json, no
argparse, never the controller or aiohttp); check with
``python -X importtime -m netstack.cni``.

Errors go to stdout as ``{"cniVersion", "code", "msg", "details"}`` with
exit status 1, never a traceback: codes 1-11 as the spec defines them, 50
for STATUS, 100 for an error pynetd reported, 999 for a bug here.

Configuration keys, besides the spec's (``cniVersion``, ``name``, ``type``,
``dns``, ``runtimeConfig``, ``prevResult``)::

    network    the pynet network to use (default: the config's ``name``)
    driver     bridge (default) or macvlan, used when the network is created
    subnet, gateway, ipRange     pynet IPAM (also accepted under ``ipam``)
    ipv6Subnet                   adds an IPv6 subnet
    master, mode                 macvlan parent and mode
    bridge, mtu, ipMasq, internal    bridge name, MTU, masquerade, internal
    options    more pynet driver options, verbatim
    pynetHost  pynetd's socket (default $PYNET_HOST, else unix:///run/pynet/pynet.sock)

``runtimeConfig`` capabilities honoured: ``ips``, ``mac``, ``aliases``.
"""

from __future__ import annotations

import os
import sys

from netstack import errors
from netstack.api.client import Client, DaemonUnreachable, dumps, loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
SANDBOX_PREFIX = "cni-"
LABEL_NETWORK = "cni.network"
LABEL_CONTAINER = "cni.containerID"
LABEL_IFNAME = "cni.ifname"
DEFAULT_TIMEOUT = 60.0

# Error codes (SPEC.md "Error"), and pynet's own from 100.
E_VERSION, E_FIELD, E_CONTAINER, E_ENV, E_IO, E_DECODE, E_CONFIG, E_AGAIN = 1, 2, 3, 4, 5, 6, 7, 11
E_NOT_AVAILABLE = 50
E_DAEMON = 100
E_INTERNAL = 999


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


class _Client(Client):
    """The API client with a deadline per socket operation, so that a hung
    pynetd is an error (code 11) rather than a hung runtime."""

    timeout = DEFAULT_TIMEOUT

    def _connect(self) -> Any:
        conn = super()._connect()
        conn.sock.settimeout(self.timeout)
        return conn


def _version_key(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in v.split("."))
    except ValueError:
        return (0,)


# ---------------------------------------------------------------- input


def read_config(text: str) -> dict[str, Any]:
    if not text.strip():
        raise CniError(E_DECODE, "no network configuration on stdin")
    try:
        conf = loads(text)
    except (ValueError, SystemError):
        # The C scanner reports a syntax error through json.decoder, which
        # the fast path does not import: let json name the error.
        import json

        try:
            conf = json.loads(text)
        except ValueError as exc:
            raise CniError(E_DECODE, "cannot decode the network configuration", str(exc)) from None
    if not isinstance(conf, dict):
        raise CniError(E_DECODE, "the network configuration must be a JSON object")
    return conf


def _env(name: str, *, required: bool = True) -> str:
    value = os.environ.get(name, "")
    if required and not value:
        raise CniError(E_ENV, f"{name} is not set")
    return value


def _str(conf: dict[str, Any], key: str, default: str = "") -> str:
    value = conf.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise CniError(E_CONFIG, f"field {key} must be a string")
    return value


def check_version(conf: dict[str, Any]) -> str:
    version = _str(conf, "cniVersion")
    if not version:
        raise CniError(E_CONFIG, "field cniVersion is required")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(E_VERSION, f"incompatible CNI version {version}",
                       f"pynet-cni supports {', '.join(SUPPORTED_VERSIONS)}")
    return version


def network_name(conf: dict[str, Any]) -> str:
    name = _str(conf, "network") or _str(conf, "name")
    if not name:
        raise CniError(E_CONFIG, "field name is required")
    return name


def network_body(conf: dict[str, Any], name: str) -> dict[str, Any]:
    """The pynetd network-create body for a config's network."""
    ipam = conf.get("ipam") or {}
    if not isinstance(ipam, dict):
        raise CniError(E_CONFIG, "field ipam must be an object")
    if ipam.get("type") not in (None, "", "pynet"):
        raise CniError(E_CONFIG, f"ipam type {ipam.get('type')!r} is not supported: pynet-cni allocates with pynet IPAM",
                       "leave ipam.type out or set it to \"pynet\"")
    driver = _str(conf, "driver", "bridge")
    if driver not in ("bridge", "macvlan"):
        raise CniError(E_CONFIG, f"unsupported driver {driver!r}: use bridge or macvlan")
    options = conf.get("options") or {}
    if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
        raise CniError(E_CONFIG, "field options must map option names to strings")
    options = dict(options)
    if driver == "bridge":
        for key, opt in (("bridge", "com.docker.network.bridge.name"), ("mtu", "com.docker.network.driver.mtu")):
            if conf.get(key):
                options[opt] = str(conf[key])
        if "ipMasq" in conf:
            options["com.docker.network.bridge.enable_ip_masquerade"] = "true" if conf["ipMasq"] else "false"
    else:
        for key, opt in (("master", "parent"), ("mode", "macvlan_mode")):
            if conf.get(key):
                options[opt] = str(conf[key])
    subnets = []
    subnet = _str(ipam, "subnet") or _str(conf, "subnet")
    if subnet:
        entry = {"Subnet": subnet}
        gateway = _str(ipam, "gateway") or _str(conf, "gateway")
        ip_range = _str(ipam, "ipRange") or _str(conf, "ipRange")
        if gateway:
            entry["Gateway"] = gateway
        if ip_range:
            entry["IPRange"] = ip_range
        subnets.append(entry)
    v6 = _str(ipam, "ipv6Subnet") or _str(conf, "ipv6Subnet")
    if v6:
        subnets.append({"Subnet": v6})
    return {
        "Name": name, "Driver": driver, "Options": options, "EnableIPv6": bool(v6),
        "Internal": bool(conf.get("internal")), "IPAM": {"Config": subnets},
        "Labels": {"cni.managed": "true"},
    }


def attachment(conf: dict[str, Any], network: str, ifname: str) -> dict[str, Any]:
    """The sandbox's network entry: the interface name asked for, plus the
    capability arguments a runtime passes in runtimeConfig."""
    rc = conf.get("runtimeConfig") or {}
    if not isinstance(rc, dict):
        raise CniError(E_CONFIG, "field runtimeConfig must be an object")
    entry: dict[str, Any] = {"Network": network, "IfName": ifname}
    for ip in rc.get("ips") or []:
        addr = str(ip).split("/")[0]
        entry["IPv6Address" if ":" in addr else "IPv4Address"] = addr
    if rc.get("mac"):
        entry["MacAddress"] = str(rc["mac"])
    aliases = rc.get("aliases") or []
    if aliases:
        entry["Aliases"] = [str(a) for a in aliases]
    return entry


def sandbox_name(container_id: str, ifname: str) -> str:
    return f"{SANDBOX_PREFIX}{container_id}-{ifname}"


# ------------------------------------------------------------- commands


def _ensure_network(client: Client, conf: dict[str, Any]) -> dict[str, Any]:
    name = network_name(conf)
    try:
        return client.network_inspect(name)  # type: ignore[no-any-return]
    except errors.NotFound:
        pass
    body = network_body(conf, name)
    try:
        client.network_create(body)
    except errors.Conflict:
        pass  # created meanwhile by a concurrent ADD of another container
    return client.network_inspect(name)  # type: ignore[no-any-return]


def cmd_add(client: Client, conf: dict[str, Any], version: str) -> dict[str, Any]:
    container, netns, ifname = _env("CNI_CONTAINERID"), _env("CNI_NETNS"), _env("CNI_IFNAME")
    net = _ensure_network(client, conf)
    name = sandbox_name(container, ifname)
    body = {
        "Name": name, "Key": netns, "Networks": [attachment(conf, net["Name"], ifname)],
        "Labels": {LABEL_NETWORK: network_name(conf), LABEL_CONTAINER: container, LABEL_IFNAME: ifname},
    }
    try:
        client.sandbox_create(body)
    except errors.Conflict as exc:
        raise CniError(E_DAEMON, f"container {container} already has interface {ifname}", exc.message) from None
    sb = client.sandbox_inspect(name)
    return build_result(conf, version, net, sb, netns, ifname)


def build_result(conf: dict[str, Any], version: str, net: dict[str, Any], sb: dict[str, Any],
                 netns: str, ifname: str) -> dict[str, Any]:
    ep = sb["Networks"][net["Name"]]
    interfaces: list[dict[str, Any]] = []
    if net["Driver"] == "bridge":
        # The host side, named as the bridge driver names it (deterministic
        # from the ids, so no state is needed to report it).
        bridge = net["Options"].get("com.docker.network.bridge.name") or f"br-{net['Id'][:12]}"
        interfaces += [{"name": bridge}, {"name": f"pnv{ep['EndpointID'][:12]}"}]
    interfaces.append({"name": ifname, "mac": ep["MacAddress"], "sandbox": netns})
    index = len(interfaces) - 1
    legacy = _version_key(version) < (1, 0, 0)
    ips, routes = [], []
    for family, addr, plen, gw, default in (
        ("4", ep["IPAddress"], ep["IPPrefixLen"], ep["Gateway"], "0.0.0.0/0"),
        ("6", ep["GlobalIPv6Address"], ep["GlobalIPv6PrefixLen"], ep["IPv6Gateway"], "::/0"),
    ):
        if not addr:
            continue
        ip: dict[str, Any] = {"address": f"{addr}/{plen}", "interface": index}
        if legacy:
            ip["version"] = family
        if gw:
            ip["gateway"] = gw
            if ep.get("IsGateway"):
                routes.append({"dst": default, "gw": gw})
        ips.append(ip)
    result: dict[str, Any] = {"cniVersion": version, "interfaces": interfaces, "ips": ips}
    if routes:
        result["routes"] = routes
    dns = conf.get("dns") or resolv_dns(sb.get("ResolvConfPath", ""))
    if dns:
        result["dns"] = dns
    return result


def resolv_dns(path: str) -> dict[str, Any]:
    """The DNS settings pynet wrote for the sandbox, in the result's form."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    out: dict[str, list[str]] = {}
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[0] in ("nameserver", "search", "options"):
            key = {"nameserver": "nameservers", "search": "search", "options": "options"}[words[0]]
            out.setdefault(key, []).extend(words[1:])
    return out


def cmd_del(client: Client, conf: dict[str, Any]) -> None:
    name = sandbox_name(_env("CNI_CONTAINERID"), _env("CNI_IFNAME"))
    try:
        client.sandbox_remove(name, force=True)
    except errors.NotFound:
        pass  # never added, or deleted already: DEL is idempotent


def cmd_check(client: Client, conf: dict[str, Any]) -> None:
    container, netns, ifname = _env("CNI_CONTAINERID"), _env("CNI_NETNS"), _env("CNI_IFNAME")
    prev = conf.get("prevResult")
    if not isinstance(prev, dict):
        raise CniError(E_CONFIG, "CHECK needs prevResult")
    try:
        sb = client.sandbox_inspect(sandbox_name(container, ifname))
    except errors.NotFound:
        raise CniError(E_CONTAINER, f"pynet has no attachment of container {container} on {ifname}") from None
    if sb["Key"] != netns:
        raise CniError(E_DAEMON, f"attachment of {container} is on namespace {sb['Key']}, not {netns}")
    network = network_name(conf)
    if network not in sb["Networks"]:
        raise CniError(E_DAEMON, f"attachment of {container} is not on network {network}")
    interfaces = prev.get("interfaces") or []
    wanted = sorted(
        ip["address"] for ip in prev.get("ips") or []
        if isinstance(ip.get("interface"), int) and ip["interface"] < len(interfaces)
        and interfaces[ip["interface"]].get("name") == ifname
    )
    have = sorted(kernel_addresses(netns, ifname))
    if wanted != have:
        raise CniError(E_DAEMON, f"{ifname} in {netns} has addresses {have}, prevResult says {wanted}")


def kernel_addresses(netns: str, ifname: str) -> list[str]:
    """Global addresses of `ifname` inside the namespace at `netns` (CHECK
    only, so a subprocess is fine)."""
    import subprocess

    out = subprocess.run(["nsenter", f"--net={netns}", "ip", "-j", "addr", "show", "dev", ifname],
                         capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise CniError(E_DAEMON, f"interface {ifname} is missing in {netns}", out.stderr.strip())
    return [f"{a['local']}/{a['prefixlen']}" for link in loads(out.stdout)
            for a in link.get("addr_info", []) if a.get("scope") == "global"]


def cmd_gc(client: Client, conf: dict[str, Any]) -> None:
    valid = conf.get("cni.dev/valid-attachments") or []
    if not isinstance(valid, list):
        raise CniError(E_CONFIG, "field cni.dev/valid-attachments must be a list")
    keep = {sandbox_name(str(a.get("containerID", "")), str(a.get("ifname", ""))) for a in valid if isinstance(a, dict)}
    network = network_name(conf)
    failures = []
    for sb in client.sandboxes({"label": [f"{LABEL_NETWORK}={network}"]}):
        if sb["Name"].startswith(SANDBOX_PREFIX) and sb["Name"] not in keep:
            try:
                client.sandbox_remove(sb["Name"], force=True)
            except errors.NotFound:
                pass
            except errors.PynetError as exc:
                failures.append(f"{sb['Name']}: {exc.message}")
    if failures:
        raise CniError(E_DAEMON, "GC could not remove every stale attachment", "; ".join(failures))


def cmd_status(client: Client) -> None:
    try:
        client.ping()
    except DaemonUnreachable as exc:
        raise CniError(E_NOT_AVAILABLE, "pynetd is not available", exc.message) from None


# ------------------------------------------------------------------ main


def run(command: str, conf: dict[str, Any]) -> dict[str, Any] | None:
    """One CNI operation; returns the JSON to print, if any."""
    if command == "VERSION":
        version = conf.get("cniVersion") if isinstance(conf.get("cniVersion"), str) else ""
        return {"cniVersion": version or SUPPORTED_VERSIONS[-1], "supportedVersions": list(SUPPORTED_VERSIONS)}
    if command not in ("ADD", "DEL", "CHECK", "GC", "STATUS"):
        raise CniError(E_ENV, f"unknown CNI_COMMAND {command!r}" if command else "CNI_COMMAND is not set")
    version = check_version(conf)
    host = _str(conf, "pynetHost") or os.environ.get("PYNET_HOST") or None
    client = _Client(host)
    try:
        if command == "ADD":
            return cmd_add(client, conf, version)
        if command == "DEL":
            cmd_del(client, conf)
        elif command == "CHECK":
            cmd_check(client, conf)
        elif command == "GC":
            cmd_gc(client, conf)
        else:
            cmd_status(client)
        return None
    finally:
        client.close()


def main() -> int:
    conf: dict[str, Any] = {}
    try:
        command = os.environ.get("CNI_COMMAND", "")
        text = sys.stdin.read() if not sys.stdin.isatty() else ""
        conf = read_config(text) if command != "VERSION" or text.strip() else {}
        out = run(command, conf)
        if out is not None:
            sys.stdout.write(dumps(out) + "\n")
        return 0
    except CniError as exc:
        return _fail(conf, exc.code, exc.msg, exc.details)
    except DaemonUnreachable as exc:
        return _fail(conf, E_AGAIN, "pynetd is not reachable", exc.message)
    except errors.InvalidParameter as exc:
        return _fail(conf, E_CONFIG, exc.message)
    except errors.PynetError as exc:
        return _fail(conf, E_DAEMON, exc.message)
    except OSError as exc:
        return _fail(conf, E_IO, str(exc))
    except Exception as exc:  # a bug: still an error JSON, never a traceback
        return _fail(conf, E_INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


def _fail(conf: dict[str, Any], code: int, msg: str, details: str = "") -> int:
    version = conf.get("cniVersion") if isinstance(conf.get("cniVersion"), str) else ""
    err: dict[str, Any] = {"cniVersion": version or SUPPORTED_VERSIONS[-1], "code": code, "msg": msg}
    if details:
        err["details"] = details
    sys.stdout.write(dumps(err) + "\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
