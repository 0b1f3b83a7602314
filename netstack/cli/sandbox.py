"""``pynet sandbox ...``: create, ls, inspect, rm, exec.

A sandbox is a container's network namespace.  ``exec`` runs a command in
it the way ``ip netns exec`` does: the CLI process itself enters the
namespace and a private mount namespace in which the sandbox's resolv.conf
and hosts cover /etc's, then execs the command so its exit status is ours.
"""

from __future__ import annotations

import os

from netstack.cli.args import BOOL, LIST, VALUE, Flag, Spec
from netstack.cli.common import CliError, Context, inspect_each, list_each, list_flags, not_found_message, remove_each

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LS_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Networks}}\t{{.Ports}}"
LS_HEADERS = {
    "ID": "SANDBOX ID",
    "Name": "NAME",
    "Hostname": "HOSTNAME",
    "Networks": "NETWORKS",
    "Ports": "PORTS",
    "Key": "KEY",
    "CreatedAt": "CREATED AT",
}


def _p(verb: str, usage: str, summary: str, flags: list[Flag], nargs: tuple[int, int | None], **kw: Any) -> Spec:
    return Spec(f"pynet sandbox {verb}", usage, summary, flags, nargs, **kw)


CREATE = _p(
    "create",
    "[OPTIONS]",
    "Create a sandbox (a network namespace) and attach it to networks",
    [
        Flag("name", "", VALUE, "Assign a name to the sandbox"),
        Flag("hostname", "", VALUE, "Sandbox host name"),
        Flag("network", "", LIST, "Connect the sandbox to a network", "network"),
        Flag("ip", "", VALUE, "IPv4 address on the first network (e.g., 172.30.100.104)"),
        Flag("ip6", "", VALUE, "IPv6 address on the first network (e.g., 2001:db8::33)"),
        Flag("alias", "", LIST, "Add a network-scoped alias on the first network", "strings"),
        Flag("publish", "p", LIST, "Publish a sandbox's port(s) to the host", "list"),
        Flag("netns", "", VALUE, "Use this existing network namespace (a bind-mounted netns path)", "path"),
        Flag("pid", "", VALUE, "Use the network namespace of this process", "int"),
    ],
    (0, 0),
)
LS = _p(
    "ls",
    "[OPTIONS]",
    "List sandboxes",
    list_flags("sandbox", "name=box"),
    (0, 0),
)
INSPECT = _p(
    "inspect",
    "[OPTIONS] SANDBOX [SANDBOX...]",
    "Display detailed information on one or more sandboxes",
    [Flag("format", "f", VALUE, "Format output using a custom template: 'json' or a Go template")],
    (1, None),
)
RM = _p(
    "rm",
    "[OPTIONS] SANDBOX [SANDBOX...]",
    "Remove one or more sandboxes",
    [Flag("force", "f", BOOL, "Remove the sandbox even if it is still attached to networks")],
    (1, None),
)
EXEC = _p(
    "exec",
    "SANDBOX [--] COMMAND [ARG...]",
    "Run a command in a sandbox's network namespace",
    [],
    (2, None),
    interspersed=False,
)


def create(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    nets = opts["network"]
    if (opts["ip"] or opts["ip6"] or opts["alias"]) and not nets:
        raise CliError("--ip, --ip6 and --alias apply to a network: give one with --network")
    body: dict[str, Any] = {
        "Name": opts["name"] or "",
        "Hostname": opts["hostname"] or "",
        "Networks": [{"Network": n} for n in nets],
        "Ports": opts["publish"],
    }
    if nets:
        first = body["Networks"][0]
        first.update(IPv4Address=opts["ip"] or "", IPv6Address=opts["ip6"] or "", Aliases=opts["alias"])
    if opts["netns"]:
        body["Key"] = opts["netns"]
    if opts["pid"] is not None:
        if not opts["pid"].isdigit():
            raise CREATE.error(f'invalid argument "{opts["pid"]}" for "--pid" flag: expected a process id')
        body["Pid"] = int(opts["pid"])
    resp = ctx.client().sandbox_create(body)
    for warning in resp.get("Warnings") or []:
        ctx.err(f"WARNING: {warning}\n")
    ctx.out(resp["Id"] + "\n")
    return 0


def ls(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    return list_each(ctx, opts, ctx.client().sandboxes, sandbox_row, LS_HEADERS, LS_TABLE)


def sandbox_row(box: dict[str, Any], trunc: bool) -> Any:
    from netstack.cli.render import Row, go_time, truncate_id

    ident = box.get("Id", "")
    fields = {
        "ID": truncate_id(ident) if trunc else ident,
        "Name": box.get("Name", ""),
        "Hostname": box.get("Hostname", ""),
        "Networks": ",".join(sorted(box.get("Networks") or {})),
        "Ports": display_ports(box.get("Ports") or {}),
        "Key": box.get("Key", ""),
        "CreatedAt": go_time(box.get("Created", "")),
    }
    return Row("*formatter.sandboxContext", fields)


def display_ports(ports: dict[str, Any]) -> str:
    """docker ps's PORTS column: ``0.0.0.0:8080->80/tcp, 53/udp``."""
    shown = []
    for cport, bindings in sorted(ports.items(), key=lambda kv: _port_key(kv[0])):
        if not bindings:
            shown.append(cport)
            continue
        for b in bindings:
            host_ip = b.get("HostIp", "")
            if ":" in host_ip:
                host_ip = f"[{host_ip}]"
            shown.append(f"{host_ip}:{b.get('HostPort', '')}->{cport}")
    return ", ".join(shown)


def _port_key(spec: str) -> tuple[str, int]:
    port, _, proto = spec.partition("/")
    first = port.split("-", 1)[0]
    return (proto, int(first) if first.isdigit() else 0)


def inspect(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    client = ctx.client()
    return inspect_each(ctx, args, client.sandbox_inspect, "sandbox", opts["format"])


def rm(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    client = ctx.client()
    return remove_each(ctx, args, lambda name: client.sandbox_remove(name, force=opts["force"]), "sandbox")


# --- exec ---------------------------------------------------------------------

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19


def exec_(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    name, command = args[0], args[1:]
    try:
        box = ctx.client().sandbox_inspect(name)
    except Exception as exc:
        if not ctx.is_daemon_error(exc):
            raise
        ctx.err(not_found_message(exc, "sandbox", name) + "\n")
        return 1
    key = box.get("Key") or ""
    if not key:
        raise CliError(f"sandbox {name} has no network namespace path (Key)")
    if os.geteuid() != 0:
        raise CliError("pynet sandbox exec must run as root: it enters the sandbox's network and mount namespaces")
    enter(key, {"/etc/resolv.conf": box.get("ResolvConfPath"), "/etc/hosts": box.get("HostsPath")})
    ctx.close()
    import sys

    sys.stdout.flush()
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        ctx.err(f"pynet: exec {command[0]}: executable file not found in $PATH\n")
        return 127
    except OSError as exc:
        ctx.err(f"pynet: exec {command[0]}: {exc.strerror}\n")
        return 126
    return 0  # not reached: execvp does not return


def enter(netns_path: str, binds: dict[str, str | None]) -> None:
    """Move this (single-threaded) process into the netns at `netns_path`, in
    a private mount namespace where each existing /etc target is covered by
    its source file, as ``ip netns exec`` does with /etc/netns/NAME."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

    def check(rc: int, what: str, einval: str = "") -> None:
        if rc != 0:
            err = ctypes.get_errno()
            hint = f" ({einval})" if einval and err == 22 else ""
            raise CliError(f"{what}: {os.strerror(err)}{hint}")

    try:
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CliError(f"cannot open network namespace {netns_path}: {exc.strerror}") from None
    try:
        check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        # Without rslave, the bind mounts below would propagate back to the host's /etc.
        check(libc.mount(None, b"/", None, MS_REC | MS_SLAVE, None), "making / a slave mount")
        for target, source in binds.items():
            if source and os.path.exists(source) and os.path.exists(target):
                check(libc.mount(source.encode(), target.encode(), None, MS_BIND, None), f"bind-mounting {source} on {target}")
        check(
            libc.setns(fd, CLONE_NEWNET),
            f"entering network namespace {netns_path}",
            "not a network namespace here: is pynetd running in another mount namespace?",
        )
    finally:
        os.close(fd)


COMMANDS = {
    "create": (CREATE, create),
    "ls": (LS, ls),
    "list": (LS, ls),
    "inspect": (INSPECT, inspect),
    "rm": (RM, rm),
    "remove": (RM, rm),
    "exec": (EXEC, exec_),
}
SUMMARY = "Manage sandboxes (network namespaces)"
