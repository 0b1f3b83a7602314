"""``pynet``: the command line, shaped like ``docker network``.

Layering: main parses the global flags and dispatches to one module per
verb group (``network``, ``sandbox``), imported only when used; each command
parses its flags (``args``), calls the daemon through
``netstack.api.client`` and renders (``render``, ``template``).  Nothing
here imports the core: start-up time is a goal, so only builtins and our
own small modules load on the common paths.

Exit statuses, as docker's: 0 ok; 1 for an error from the daemon (printed
``Error response from daemon: ...``), an unreachable daemon (one line) or
bad input found here; 125 for a bad command line; a command run by
``sandbox exec`` passes its own through.
"""

from __future__ import annotations

import sys

from netstack.cli.args import BOOL, VALUE, Flag, HelpRequested, Spec, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from netstack.cli.common import Context

VERSION = "0.1.0"
GROUPS = {"network": "netstack.cli.network", "sandbox": "netstack.cli.sandbox", "system": "netstack.cli.system"}

ROOT = Spec(
    "pynet",
    "[OPTIONS] COMMAND",
    "A container networking stack (Docker's Container Network Model)\n\n"
    "Commands:\n"
    "  network     Manage networks\n"
    "  sandbox     Manage sandboxes (network namespaces)\n"
    "  system      Manage pynet (repair)\n"
    "  version     Show the pynet version information\n"
    "  oci-hook    OCI runtime hook: attach/detach a container (state on stdin)",
    [
        Flag("host", "H", VALUE, "Daemon socket to connect to (default $PYNET_HOST or unix:///run/pynet/pynet.sock)", "unix:///PATH"),
        Flag("version", "v", BOOL, "Print version information and quit"),
    ],
    (0, None),
    interspersed=False,
)
VERSION_SPEC = Spec(
    "pynet version",
    "[OPTIONS]",
    "Show the pynet version information",
    [Flag("format", "f", VALUE, "Format output using a custom template: 'json' or a Go template")],
    (0, 0),
)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    ctx = None
    try:
        opts, rest = ROOT.parse(argv)
        if opts["version"]:
            sys.stdout.write(f"pynet version {VERSION}\n")
            return 0
        if not rest:
            sys.stdout.write(ROOT.help_text())
            return 0
        from netstack.cli.common import Context

        ctx = Context(opts["host"])
        return _dispatch(ctx, rest)
    except HelpRequested as req:
        sys.stdout.write(req.text)
        return 0
    except UsageError as exc:
        hint = f"\nSee '{exc.command} --help'." if exc.command else ""
        sys.stderr.write(f"{exc.message}{hint}\n")
        return 125
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        return _report(exc)
    finally:
        if ctx is not None:
            ctx.close()


def _report(exc: Exception) -> int:
    """Print an error as one line, the way docker words it; return the status."""
    from netstack import errors
    from netstack.cli.common import CliError

    if isinstance(exc, CliError):
        sys.stderr.write(exc.message + "\n")
        return exc.code
    if isinstance(exc, errors.PynetError):
        from netstack.api.client import DaemonUnreachable

        if isinstance(exc, DaemonUnreachable):
            sys.stderr.write(exc.message + "\n")
        else:
            sys.stderr.write(f"Error response from daemon: {exc.message}\n")
        return exc.exit_code
    if isinstance(exc, OSError):
        sys.stderr.write(f"pynet: {exc.strerror or exc}\n")
        return 1
    # A bug: still one line, never a traceback (PYNET_DEBUG=1 shows it).
    import os

    if os.environ.get("PYNET_DEBUG"):
        raise exc
    sys.stderr.write(f"pynet: internal error: {type(exc).__name__}: {exc}\n")
    return 1


def _dispatch(ctx: Context, rest: list[str]) -> int:
    group = rest[0]
    if group == "version":
        opts, _ = VERSION_SPEC.parse(rest[1:])
        return version(ctx, opts["format"])
    if group == "oci-hook":
        from netstack.cli.oci_hook import run as oci_hook

        return oci_hook(ctx, rest[1:])
    if group not in GROUPS:
        raise UsageError(f"pynet: '{group}' is not a pynet command.", "pynet")
    module: Any = __import__(GROUPS[group], fromlist=["COMMANDS"])
    if len(rest) == 1 or rest[1] in ("-h", "--help", "help"):
        sys.stdout.write(_group_help(group, module))
        return 0
    entry = module.COMMANDS.get(rest[1])
    if entry is None:
        raise UsageError(f"pynet {group}: '{rest[1]}' is not a pynet {group} command.", f"pynet {group}")
    spec, run = entry
    opts, args = spec.parse(rest[2:])
    status: int = run(ctx, opts, args)
    return status


def _group_help(group: str, module: Any) -> str:
    seen = {}
    for verb, (spec, _) in module.COMMANDS.items():
        if spec.path.endswith(" " + verb):
            seen[verb] = spec.summary
    width = max(len(v) for v in seen) + 4
    lines = [f"\nUsage:  pynet {group} COMMAND", "", module.SUMMARY, "", "Commands:"]
    lines += [f"  {verb.ljust(width)}{summary}" for verb, summary in sorted(seen.items())]
    lines += ["", f"Run 'pynet {group} COMMAND --help' for more information on a command."]
    return "\n".join(lines) + "\n"


def _os_arch() -> str:
    import os

    uname = os.uname()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(uname.machine, uname.machine)
    return f"{uname.sysname.lower()}/{arch}"


def version(ctx: Context, fmt: str | None) -> int:
    """docker version's layout, short: the client, then the daemon's answer."""
    from netstack.api.client import API_VERSION

    osarch = _os_arch()
    py = "%d.%d.%d" % sys.version_info[:3]
    client = {"Version": VERSION, "ApiVersion": API_VERSION, "PythonVersion": py, "Os": osarch}
    server: dict[str, Any] | None = None
    error: Exception | None = None
    try:
        server = ctx.client().version()
    except Exception as exc:
        error = exc
    if fmt:
        from netstack.cli.render import compile_template

        ctx.out(compile_template(fmt)({"Client": client, "Server": server}) + "\n")
    else:
        ctx.out(
            "Client:\n"
            f" Version:           {VERSION}\n"
            f" API version:       {API_VERSION}\n"
            f" Python version:    {py}\n"
            f" OS/Arch:           {osarch}\n"
        )
        if server is not None:
            ctx.out(
                "\nServer:\n Engine:\n"
                f"  Version:          {server.get('Version', '')}\n"
                f"  API version:      {server.get('ApiVersion', '')} (minimum version {server.get('MinAPIVersion', '')})\n"
                f"  OS/Arch:          {server.get('Os', '')}/{server.get('Arch', '')}\n"
                f"  Kernel Version:   {server.get('KernelVersion', '')}\n"
            )
    if error is not None:
        return _report(error)
    return 0
