"""OCI runtime hooks (runc, crun, ...): what a container's state and its
bundle's annotations ask of pynet.

The runtime runs a hook with the container's state on stdin:
``{"ociVersion", "id", "status", "pid", "bundle", "annotations"}``.  What to
do comes from the container's annotations (the state's, else the bundle's
config.json):

    pynet.networks     net1,net2     networks to attach to (none: the hook does nothing)
    pynet.name         NAME          sandbox name (default: the container id)
    pynet.hostname     NAME          hostname for the sandbox's hosts file and DNS
                                     (default: config.json's hostname)
    pynet.aliases      a,b           DNS aliases on every network
    pynet.ip           ADDR | net1=ADDR,net2=ADDR    static IPv4/IPv6 address(es)
    pynet.mac          MAC           MAC address (first network)
    pynet.ports        8080:80/tcp,...               published ports (-p specs)
    pynet.resolv_conf  write         copy the sandbox's resolv.conf into
                                     <rootfs>/etc/resolv.conf (the embedded DNS)
    pynet.host         unix:///PATH  pynetd's socket (read by `pynet oci-hook` only)

A createRuntime (also prestart, createContainer) hook attaches: a sandbox on
the process's namespace (``/proc/PID/ns/net``, which pynetd bind-mounts, so
poststop works once the process is gone) with ``AutoRemove``, or, without a
live pid, on the network namespace path in config.json.  A poststop hook
removes the sandbox by name; a sandbox already gone is success.

`plan` turns a state into what to do; pynetd carries it out
(``POST /oci/hooks/{phase}``, `netstack.api.server`), whether the state came
from ``pynet oci-hook`` or straight from curl.  The bundle's files are read
by pynetd: it must see the runtime's filesystem and pids (run it in the
host's mount and pid namespaces, as a runtime's network plugin is).

This module imports only builtins, `os` and `netstack.errors`: `pynet
oci-hook` takes its phase names from here at start-up.
"""

from __future__ import annotations

import os

from netstack.errors import InvalidParameter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ATTACH_HOOKS = ("createRuntime", "prestart", "createContainer")
DETACH_HOOKS = ("poststop",)
HOOKS = ATTACH_HOOKS + DETACH_HOOKS
# without a phase, the state's status says which (as `pynet oci-hook` does)
STATUS_HOOK = {"creating": "createRuntime", "created": "createRuntime", "stopped": "poststop"}
PREFIX = "pynet."
MAX_CONFIG = 16 * 1024 * 1024


class Attach:
    __slots__ = ("name", "body", "resolv_conf")

    def __init__(self, name: str, body: dict[str, Any], resolv_conf: str | None) -> None:
        self.name = name
        self.body = body                # a POST /sandboxes/create body
        self.resolv_conf = resolv_conf  # where to copy the sandbox's resolv.conf, or None

    def __repr__(self) -> str:
        return f"Attach({self.name!r}, {self.body!r}, {self.resolv_conf!r})"


class Detach:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Detach({self.name!r})"


def _loads(text: str | bytes, what: str) -> dict[str, Any]:
    import json

    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidParameter(f"OCI hook: cannot decode {what}: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidParameter(f"OCI hook: {what} is not a JSON object")
    return value


def decode_state(raw: str | bytes) -> dict[str, Any]:
    """The container state a runtime gives its hooks (on stdin)."""
    if not raw or not raw.strip():
        raise InvalidParameter("OCI hook: no container state (the runtime gives it on the hook's stdin)")
    return _loads(raw, "the container state")


def bundle_config(state: dict[str, Any]) -> dict[str, Any]:
    """The bundle's config.json ({} without a bundle or file)."""
    bundle = state.get("bundle")
    if not isinstance(bundle, str) or not bundle:
        return {}
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            raw = f.read(MAX_CONFIG + 1)
    except (OSError, ValueError):
        return {}
    if len(raw) > MAX_CONFIG:
        raise InvalidParameter("OCI hook: the bundle's config.json is larger than 16 MiB")
    return _loads(raw, "the bundle's config.json")


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def annotations(state: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    """The pynet.* annotations: the state's, else config.json's."""
    ann = state.get("annotations") or config.get("annotations") or {}
    if not isinstance(ann, dict):
        raise InvalidParameter("OCI hook: annotations must be an object")
    return {k: str(v) for k, v in ann.items() if isinstance(k, str) and k.startswith(PREFIX)}


def attachments(ann: dict[str, str]) -> list[dict[str, Any]]:
    """The sandbox's Networks entries from the annotations."""
    nets = _list(ann.get("pynet.networks", ""))
    ips: dict[str, list[str]] = {}
    for item in _list(ann.get("pynet.ip", "")):
        net, sep, addr = item.partition("=")
        if not sep:
            net, addr = (nets[0] if nets else ""), item
        if net not in nets:
            raise InvalidParameter(f"OCI hook: pynet.ip names network {net!r}, which is not in pynet.networks")
        ips.setdefault(net, []).append(addr)
    aliases = _list(ann.get("pynet.aliases", ""))
    out = []
    for i, net in enumerate(nets):
        entry: dict[str, Any] = {"Network": net}
        for addr in ips.get(net, []):
            entry["IPv6Address" if ":" in addr else "IPv4Address"] = addr
        if aliases:
            entry["Aliases"] = aliases
        if i == 0 and ann.get("pynet.mac"):
            entry["MacAddress"] = ann["pynet.mac"]
        out.append(entry)
    return out


def _netns_of(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    pid = state.get("pid")
    if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 and os.path.exists(f"/proc/{pid}/ns/net"):
        # AutoRemove: pynetd starts the detach when the process exits, while
        # the runtime is still tearing the container down; poststop's
        # DELETE then only waits for it to finish.
        return {"Pid": pid, "AutoRemove": True}
    linux = config.get("linux")
    namespaces = linux.get("namespaces") if isinstance(linux, dict) else None
    for ns in namespaces if isinstance(namespaces, list) else ():
        if isinstance(ns, dict) and ns.get("type") == "network" and isinstance(ns.get("path"), str) and ns["path"]:
            return {"Key": ns["path"]}
    raise InvalidParameter("OCI hook: the state has no live pid and config.json names no network namespace path")


def plan(phase: str, state: dict[str, Any], config: dict[str, Any] | None = None) -> Attach | Detach | None:
    """What hook `phase` of the container in `state` asks of pynet (None:
    nothing, the container names no pynet network).  `config` is the
    bundle's config.json (read from the state's bundle when not given).
    Bad input raises InvalidParameter with a one-line message."""
    if phase not in HOOKS:
        raise InvalidParameter(f"OCI hook: unknown hook {phase!r} (use {', '.join(HOOKS)})")
    if config is None:
        config = bundle_config(state)
    ann = annotations(state, config)
    if not _list(ann.get("pynet.networks", "")):
        return None
    cid = state.get("id")
    name = ann.get("pynet.name") or (cid if isinstance(cid, str) else "")
    if not name:
        raise InvalidParameter("OCI hook: the container state has no id")
    if phase in DETACH_HOOKS:
        return Detach(name)
    body: dict[str, Any] = {
        "Name": name, "Networks": attachments(ann), "Ports": _list(ann.get("pynet.ports", "")),
        "Labels": {"oci.id": str(cid or ""), "oci.bundle": str(state.get("bundle") or "")},
        **_netns_of(state, config),
    }
    hostname = ann.get("pynet.hostname") or config.get("hostname")
    if isinstance(hostname, str) and hostname:
        body["Hostname"] = hostname
    resolv_conf = None
    if ann.get("pynet.resolv_conf") == "write":
        bundle = state.get("bundle")
        if not isinstance(bundle, str) or not bundle:
            raise InvalidParameter("OCI hook: pynet.resolv_conf=write needs the state's bundle")
        root = config.get("root")
        path = root.get("path") if isinstance(root, dict) else None
        rootfs = os.path.join(bundle, path if isinstance(path, str) and path else "rootfs")
        resolv_conf = os.path.join(rootfs, "etc", "resolv.conf")
    elif ann.get("pynet.resolv_conf"):
        raise InvalidParameter(f"OCI hook: pynet.resolv_conf must be 'write', not {ann['pynet.resolv_conf']!r}")
    return Attach(name, body, resolv_conf)


def write_resolv_conf(source: str, target: str) -> None:
    """Copy the sandbox's resolv.conf to `target` (<rootfs>/etc/resolv.conf).

    The rootfs is the container's, written by root in the host's mount
    namespace: no symlink in it is followed (a link at etc/resolv.conf, as
    many images have, is replaced by the file; a link at etc is refused)."""
    with open(source, "rb") as f:
        data = f.read()
    etc = os.path.dirname(target)
    if os.path.islink(etc):
        raise OSError(f"{etc} is a symbolic link")
    os.makedirs(etc, exist_ok=True)
    if os.path.islink(target):
        os.unlink(target)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with open(fd, "wb") as f:
        f.write(data)


# The perl form: builtins only (no `use`: loading Socket alone costs more
# than curl's whole start), ~3 ms per start against curl's ~12 ms.  One HTTP
# request over the UNIX socket; a refusal prints pynetd's message on stderr
# (runc shows it) and exits 1.  AF_UNIX and SOCK_STREAM are filled in from
# the machine that prints the hooks (SOCK_STREAM differs on MIPS).
PERL_HOOK = " ".join(line.strip() for line in r"""
    my ($p, $h) = @ARGV; $SIG{PIPE} = "IGNORE"; binmode STDIN; local $/; my $b = <STDIN>; $b = "" unless defined $b;
    sub fail { print STDERR "pynet: $_[0]\n"; exit 1 }
    my $s; socket($s, AF_UNIX, SOCK_STREAM, 0) && connect($s, pack("SZ*", AF_UNIX, $p))
      or fail("cannot connect to pynetd at $p: $!");
    my $q = "POST /oci/hooks/$h HTTP/1.1\r\nHost: pynet\r\nConnection: close\r\n"
      . "Content-Length: " . length($b) . "\r\n\r\n" . $b;
    while (length $q) { my $n = syswrite($s, $q); defined $n or fail("pynetd at $p: $!"); substr($q, 0, $n) = "" }
    my ($r, $c) = (""); while (1) { my $n = sysread($s, $c, 65536); defined $n or fail("pynetd at $p: $!");
      last unless $n; $r .= $c }
    $r =~ m{^HTTP/[0-9.]+ ([0-9]+)} or fail("no HTTP answer from pynetd at $p");
    exit 0 if $1 < 300;
    my $m = $r =~ /"message": *"((?:[^"\\]|\\.)*)"/ ? $1 : "pynetd answered " . substr($r, 9, 3);
    $m =~ s/\\(["\\\/])/$1/g; fail($m);
""".splitlines() if line.strip())


def hooks_json(socket: str, form: str = "curl", program: str = "", timeout: int = 30) -> dict[str, Any]:
    """config.json's "hooks" in a fast form, whose process posts the state
    to pynetd's socket (`pynet oci-hook --print-hooks`):

    curl: ``curl -sS --fail-with-body`` (curl 7.76+); a refusal exits 22
    with pynetd's {"message": ...} on stdout, which runc shows in its error.
    perl: `PERL_HOOK` (perl-base, essential on Debian)."""
    def entry(hook: str) -> dict[str, Any]:
        if form == "curl":
            return {"path": program or "/usr/bin/curl",
                    "args": ["curl", "-sS", "--fail-with-body", "--unix-socket", socket, "--data-binary", "@-",
                             f"http://pynet/oci/hooks/{hook}"], "timeout": timeout}
        if form == "perl":
            import socket as _socket

            script = PERL_HOOK.replace("AF_UNIX", str(int(_socket.AF_UNIX))).replace(
                "SOCK_STREAM", str(int(_socket.SOCK_STREAM)))
            return {"path": program or "/usr/bin/perl", "args": ["perl", "-e", script, socket, hook],
                    "timeout": timeout}
        raise ValueError(f"unknown hook form {form!r} (curl or perl)")

    return {"createRuntime": [entry("createRuntime")], "poststop": [entry("poststop")]}
