"""``pynet oci-hook``: an OCI runtime hook that attaches a container's network
namespace to pynet networks (createRuntime) and detaches it (poststop).

The runtime (runc, crun, ...) runs the hook with the container's state on
stdin: ``{"ociVersion", "id", "status", "pid", "bundle", "annotations"}``.
What to do comes from the container's annotations (the state's, else the
bundle's config.json):

    pynet.networks     net1,net2     networks to attach to (none: the hook does nothing)
    pynet.name         NAME          sandbox name (default: the container id)
    pynet.hostname     NAME          hostname for the sandbox's hosts file and DNS
    pynet.aliases      a,b           DNS aliases on every network
    pynet.ip           ADDR | net1=ADDR,net2=ADDR    static IPv4/IPv6 address(es)
    pynet.mac          MAC           MAC address (first network)
    pynet.ports        8080:80/tcp,...               published ports (-p specs)
    pynet.resolv_conf  write         copy the sandbox's resolv.conf into
                                     <rootfs>/etc/resolv.conf (the embedded DNS)
    pynet.host         unix:///PATH  pynetd's socket (else $PYNET_HOST, else the default)

The phase is the first argument (``createRuntime``, ``prestart``,
``poststop`` ...) or, without one, the state's ``status`` ("creating" or
"created" attach, "stopped" detaches).  The namespace is the process's
(``/proc/PID/ns/net``; pynetd bind-mounts it, so poststop works once the
process is gone) or, without a pid, the network namespace path in the
bundle's config.json.  Detach removes the sandbox by name; a sandbox already
gone is success.  Errors: one line on stderr, exit status 1 (the runtime
then fails the container), never a traceback.

Time: the runtime waits for both hooks (``runc run`` of ``true`` pays for
two interpreter starts, the attach and the detach), so this path imports
only builtins and the stdlib-only client, and the launcher (bin/pynet)
comes straight here without the CLI's parser.  Attached by pid, the
sandbox is created with ``AutoRemove``: pynetd starts the detach the
moment the container's process exits, and poststop waits for it to end.
"""

from __future__ import annotations

import os
import sys

from netstack import errors
from netstack.api.client import Client, loads
from netstack.cli.common import CliError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from netstack.cli.common import Context

ATTACH = ("createRuntime", "prestart", "createContainer", "creating", "created")
DETACH = ("poststop", "stopped")
PREFIX = "pynet."
TIMEOUT = 30.0

USAGE = """
Usage:  pynet oci-hook [PHASE]

Attach (createRuntime) or detach (poststop) an OCI container's network
namespace, from the container state on stdin and its pynet.* annotations.

Annotations:
  pynet.networks, pynet.name, pynet.hostname, pynet.aliases, pynet.ip,
  pynet.mac, pynet.ports, pynet.resolv_conf=write, pynet.host
"""


def _load(text: str, what: str) -> dict[str, Any]:
    try:
        value = loads(text)
    except (ValueError, SystemError):
        import json

        try:
            value = json.loads(text)
        except ValueError as exc:
            raise CliError(f"pynet oci-hook: cannot decode {what}: {exc}") from None
    if not isinstance(value, dict):
        raise CliError(f"pynet oci-hook: {what} is not a JSON object")
    return value


def _bundle_config(state: dict[str, Any]) -> dict[str, Any]:
    bundle = state.get("bundle")
    if not isinstance(bundle, str) or not bundle:
        return {}
    try:
        with open(os.path.join(bundle, "config.json")) as f:
            return _load(f.read(), "the bundle's config.json")
    except OSError:
        return {}


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def attachments(ann: dict[str, str]) -> list[dict[str, Any]]:
    """The sandbox's Networks entries from the annotations."""
    nets = _list(ann.get("pynet.networks", ""))
    ips: dict[str, list[str]] = {}
    for item in _list(ann.get("pynet.ip", "")):
        net, sep, addr = item.partition("=")
        if not sep:
            net, addr = (nets[0] if nets else ""), item
        if net not in nets:
            raise CliError(f"pynet oci-hook: pynet.ip names network {net!r}, which is not in pynet.networks")
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
    if isinstance(pid, int) and pid > 0 and os.path.exists(f"/proc/{pid}/ns/net"):
        # AutoRemove: pynetd starts the detach when the process exits, while
        # the runtime is still tearing the container down; poststop's
        # DELETE then only waits for it to finish.
        return {"Pid": pid, "AutoRemove": True}
    for ns in (config.get("linux") or {}).get("namespaces") or []:
        if isinstance(ns, dict) and ns.get("type") == "network" and ns.get("path"):
            return {"Key": ns["path"]}
    raise CliError("pynet oci-hook: the state has no live pid and config.json names no network namespace path")


def attach(client: Client, state: dict[str, Any], config: dict[str, Any], ann: dict[str, str], name: str) -> None:
    body: dict[str, Any] = {
        "Name": name, "Networks": attachments(ann), "Ports": _list(ann.get("pynet.ports", "")),
        "Labels": {"oci.id": str(state.get("id", "")), "oci.bundle": str(state.get("bundle", ""))},
        **_netns_of(state, config),
    }
    hostname = ann.get("pynet.hostname") or config.get("hostname")
    if isinstance(hostname, str) and hostname:
        body["Hostname"] = hostname
    client.sandbox_create(body)
    if ann.get("pynet.resolv_conf") == "write":
        try:
            _write_resolv_conf(client, state, config, name)
        except BaseException:
            client.sandbox_remove(name, force=True)
            raise


def _write_resolv_conf(client: Client, state: dict[str, Any], config: dict[str, Any], name: str) -> None:
    root = (config.get("root") or {}).get("path") or "rootfs"
    rootfs = os.path.join(str(state.get("bundle", "")), root)
    source = client.sandbox_inspect(name)["ResolvConfPath"]
    with open(source) as f:
        text = f.read()
    os.makedirs(os.path.join(rootfs, "etc"), exist_ok=True)
    with open(os.path.join(rootfs, "etc", "resolv.conf"), "w") as f:
        f.write(text)


def detach(client: Client, name: str) -> None:
    try:
        client.sandbox_remove(name, force=True)
    except errors.NotFound:
        pass  # never attached, or removed already


class _TimedClient(Client):
    """A hung pynetd fails the hook instead of hanging the runtime."""

    def _connect(self) -> Any:
        conn = super()._connect()
        conn.sock.settimeout(TIMEOUT)
        return conn


def run(ctx: Context, args: list[str]) -> int:
    if args and args[0] in ("-h", "--help", "help"):
        ctx.out(USAGE)
        return 0
    if len(args) > 1:
        raise CliError("pynet oci-hook: at most one argument (the hook phase)", 125)
    state = _load(sys.stdin.read(), "the container state on stdin")
    phase = args[0] if args else str(state.get("status", ""))
    if phase not in ATTACH + DETACH:
        raise CliError(f"pynet oci-hook: unknown phase {phase!r} (use createRuntime or poststop)", 125)
    config = _bundle_config(state)
    ann = state.get("annotations") or config.get("annotations") or {}
    if not isinstance(ann, dict):
        raise CliError("pynet oci-hook: annotations must be an object")
    ann = {k: str(v) for k, v in ann.items() if k.startswith(PREFIX)}
    if not _list(ann.get("pynet.networks", "")):
        return 0
    name = ann.get("pynet.name") or str(state.get("id") or "")
    if not name:
        raise CliError("pynet oci-hook: the container state has no id")
    client = _TimedClient(ann.get("pynet.host") or ctx.host)
    try:
        if phase in ATTACH:
            attach(client, state, config, ann, name)
        else:
            detach(client, name)
    finally:
        client.close()
    return 0


def main(argv: list[str]) -> int:
    """``pynet oci-hook ARGV...`` straight from the launcher: the same
    command as through ``netstack.cli.main`` (whose error reporting it
    shares), less the global parser's imports.  Runtimes pass no global
    flags; the daemon is ``pynet.host``, else ``$PYNET_HOST``."""
    from netstack.cli.common import Context

    ctx = Context(None)
    try:
        return run(ctx, argv)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from netstack.cli.main import _report

        return _report(exc)
    finally:
        ctx.close()
