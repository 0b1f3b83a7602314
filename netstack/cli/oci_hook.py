"""``pynet oci-hook``: an OCI runtime hook (runc, crun, ...) that attaches a
container's network namespace to pynet networks (createRuntime) and
detaches it (poststop).

It forwards the container state the runtime gives it on stdin, unchanged,
to pynetd's ``POST /oci/hooks/{hook}``, which does the work
(`netstack.oci`: the annotations, the namespace, AutoRemove).  The same
endpoint serves the fast forms of the hook, a perl one-liner or curl as the
hook's process (``pynet oci-hook --print-hooks`` prints them for
config.json): a Python process per hook costs an interpreter start, twice
per container.

The hook is the first argument (``createRuntime``, ``prestart``,
``createContainer``, ``poststop``) or, without one, follows the state's
``status`` ("creating"/"created" attach, "stopped" detaches).  pynetd's
socket: the ``pynet.host`` annotation, else ``$PYNET_HOST``, else the
default.  Errors: one line on stderr, exit status 1 (125 for a bad
command line); the runtime then fails the container.
"""

from __future__ import annotations

import sys

from netstack.api.client import API_VERSION, Client, default_host, loads
from netstack.cli.common import CliError
from netstack.oci import HOOKS, STATUS_HOOK

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from netstack.cli.common import Context

TIMEOUT = 30.0

USAGE = """
Usage:  pynet oci-hook [HOOK]
        pynet oci-hook --print-hooks [--socket PATH] [--form curl|perl] [--program PATH]

Attach (createRuntime) or detach (poststop) an OCI container's network
namespace: the container state on stdin goes to pynetd (POST
/oci/hooks/HOOK), which reads the bundle's pynet.* annotations.

--print-hooks prints the "hooks" of config.json in a fast form: a perl
one-liner (the default, where perl is installed) or curl posts the state
to pynetd's socket, no Python process per hook.

Annotations:
  pynet.networks, pynet.name, pynet.hostname, pynet.aliases, pynet.ip,
  pynet.mac, pynet.ports, pynet.resolv_conf=write, pynet.host
"""

CURL_MIN = (7, 76)   # --fail-with-body


class _TimedClient(Client):
    """A hung pynetd fails the hook instead of hanging the runtime."""

    def _connect(self) -> Any:
        conn = super()._connect()
        conn.sock.settimeout(TIMEOUT)
        return conn

    def post_raw(self, path: str, payload: bytes) -> Any:
        """POST `payload` as it is (the runtime's state, byte for byte)."""
        head = (f"POST /v{API_VERSION}{path} HTTP/1.1\r\nHost: pynet\r\nUser-Agent: pynet-oci-hook\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
        return self._decode(self._send(head.encode("latin-1"), payload, "POST"))


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        value = loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CliError(f"pynet oci-hook: cannot decode the container state on stdin: {exc}") from None
    if not isinstance(value, dict):
        raise CliError("pynet oci-hook: the container state on stdin is not a JSON object")
    return value


def _host(state: dict[str, Any], default: str) -> str:
    """The pynet.host annotation (the state's, else config.json's), else `default`."""
    ann = state.get("annotations")
    if not ann and isinstance(state.get("bundle"), str):
        try:
            with open(state["bundle"].rstrip("/") + "/config.json", "rb") as f:
                ann = loads(f.read().decode("utf-8")).get("annotations")
        except (OSError, ValueError, UnicodeDecodeError, AttributeError):
            ann = None
    host = ann.get("pynet.host") if isinstance(ann, dict) else None
    return host if isinstance(host, str) and host else default


def run(ctx: Context, args: list[str]) -> int:
    if args and args[0] in ("-h", "--help", "help"):
        ctx.out(USAGE)
        return 0
    if args and args[0] == "--print-hooks":
        return print_hooks(ctx, args[1:])
    if len(args) > 1:
        raise CliError("pynet oci-hook: at most one argument (the hook phase)", 125)
    stdin = getattr(sys.stdin, "buffer", sys.stdin)
    raw = stdin.read()
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    state = _decode(raw)
    phase = args[0] if args else str(state.get("status", ""))
    hook = phase if phase in HOOKS else STATUS_HOOK.get(phase)
    if hook is None:
        raise CliError(f"pynet oci-hook: unknown phase {phase!r} (use createRuntime or poststop)", 125)
    client = _TimedClient(_host(state, ctx.host))
    try:
        client.post_raw(f"/oci/hooks/{hook}", raw)
    finally:
        client.close()
    return 0


def print_hooks(ctx: Context, args: list[str]) -> int:
    """The fast form's "hooks" for config.json, as a JSON object."""
    import json
    import os
    import shutil
    import subprocess

    from netstack.oci import hooks_json

    # perl by default: its start is ~3 ms against curl's ~12 (bench/bench_oci.py); curl where there is no perl
    opts = {"--socket": "", "--form": "perl" if shutil.which("perl") else "curl", "--program": ""}
    rest = list(args)
    while rest:
        flag, eq, value = rest.pop(0).partition("=")
        if flag not in opts:
            raise CliError(f"pynet oci-hook: unknown flag {flag!r} (--print-hooks [--socket PATH] "
                           "[--form curl|perl] [--program PATH])", 125)
        if not eq:
            if not rest:
                raise CliError(f"pynet oci-hook: {flag} needs a value", 125)
            value = rest.pop(0)
        opts[flag] = value
    form = opts["--form"]
    if form not in ("curl", "perl"):
        raise CliError(f"pynet oci-hook: --form is curl or perl, not {form!r}", 125)
    socket = opts["--socket"] or ctx.host or default_host()
    if socket.startswith("unix://"):
        socket = socket[len("unix://"):]
    elif "://" in socket:
        raise CliError(f"pynet oci-hook: the hook reaches pynetd over a UNIX socket, not {socket}", 125)
    socket = os.path.abspath(socket)
    program = opts["--program"] or shutil.which(form) or ""
    if not program or not os.access(program, os.X_OK):
        raise CliError(f"pynet oci-hook: {form} is not installed (the hook runs it)")
    program = os.path.realpath(program)   # /usr/bin/curl rather than /bin/curl (usrmerge)
    if form == "curl":
        try:
            out = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=10).stdout
            version = tuple(int(x) for x in out.split()[1].split(".")[:2])
        except (OSError, subprocess.SubprocessError, IndexError, ValueError):
            raise CliError(f"pynet oci-hook: cannot tell {program}'s version") from None
        if version < CURL_MIN:
            raise CliError(f"pynet oci-hook: {program} is curl {'.'.join(map(str, version))}; the hook needs"
                           " 7.76 or newer (--fail-with-body): use --form perl, or `pynet oci-hook` as the hook")
    ctx.out(json.dumps({"hooks": hooks_json(socket, form, program)}, indent=2) + "\n")
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
