"""What every command shares: the context (client, streams, prompt), the
CLI-side error, and docker's inspect loop and per-object error wording."""

from __future__ import annotations

import sys

from netstack import errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, TextIO

    from netstack.api.client import Client


class CliError(Exception):
    """Bad input the CLI itself detected: printed as is, exit status 1."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Context:
    def __init__(
        self,
        host: str | None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        stdin: TextIO | None = None,
    ) -> None:
        self.host = host
        self._stdout, self._stderr, self._stdin = stdout, stderr, stdin
        self._client: Client | None = None

    def client(self) -> Client:
        if self._client is None:
            from netstack.api.client import Client

            self._client = Client(self.host)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def out(self, text: str) -> None:
        (self._stdout or sys.stdout).write(text)

    def err(self, text: str) -> None:
        (self._stderr or sys.stderr).write(text)

    def confirm(self, prompt: str) -> bool:
        self.out(prompt)
        (self._stdout or sys.stdout).flush()
        answer = (self._stdin or sys.stdin).readline()
        return answer.strip().lower() in ("y", "yes")

    @staticmethod
    def is_daemon_error(exc: BaseException) -> bool:
        """An error the daemon answered with (not one about reaching it)."""
        from netstack.api.client import DaemonUnreachable

        return isinstance(exc, errors.PynetError) and not isinstance(exc, DaemonUnreachable)


def not_found_message(exc: BaseException, kind: str, name: str) -> str:
    """docker's wording: its client turns a 404 on one named object into
    ``Error: No such network: NAME``; other answers keep the daemon's message."""
    if isinstance(exc, errors.NotFound):
        return f"Error: No such {kind}: {name}"
    return f"Error response from daemon: {getattr(exc, 'message', exc)}"


def inspect_each(
    ctx: Context, names: list[str], fetch: Callable[[str], Any], kind: str, fmt: str | None
) -> int:
    """docker's inspect: print what was found (a 4-space-indented JSON array,
    one compact object per line for ``json``, or one template line each),
    then one error line per name that failed; exit 1 if any did."""
    found, failed = [], []
    for name in names:
        try:
            found.append(fetch(name))
        except errors.PynetError as exc:
            if not ctx.is_daemon_error(exc):
                raise
            failed.append(not_found_message(exc, kind, name))
    from netstack.cli.render import compile_template, dumps_go

    if not fmt:
        ctx.out(dumps_go(found, indent="    ") + "\n")
    elif fmt == "json":
        ctx.out("".join(dumps_go(item) + "\n" for item in found))
    else:
        render = compile_template(fmt)
        ctx.out("".join(render(item) + "\n" for item in found))
    for line in failed:
        ctx.err(line + "\n")
    return 1 if failed else 0


def list_flags(noun: str, filter_example: str) -> list[Any]:
    """The flags every ``ls`` takes, worded as docker words them."""
    from netstack.cli.args import BOOL, KV, VALUE, Flag

    return [
        Flag("quiet", "q", BOOL, f"Only display {noun} IDs"),
        Flag("no-trunc", "", BOOL, "Do not truncate the output"),
        Flag("filter", "f", KV, f"Provide filter values (e.g. '{filter_example}')", "filter"),
        Flag("format", "", VALUE, "Format output using a custom template: 'table', 'json' or a Go template"),
    ]


def filters_of(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def list_each(ctx: Context, opts: dict[str, Any], fetch: Callable[[dict[str, list[str]] | None], Any],
              row: Callable[[Any, bool], Any], headers: dict[str, str], table: str) -> int:
    """docker's ls: fetch with the --filter values, sort by name, render
    rows (IDs only with -q, whole IDs with --no-trunc)."""
    from netstack.cli.render import format_rows, natural_key

    items = fetch(filters_of(opts["filter"]) or None) or []
    items.sort(key=lambda item: natural_key(item.get("Name", "")))
    fmt = opts["format"] or ""
    if opts["quiet"] and fmt in ("", "table"):
        fmt = "{{.ID}}"
    ctx.out(format_rows(fmt, [row(item, not opts["no_trunc"]) for item in items], headers, table))
    return 0


def remove_each(ctx: Context, names: list[str], remove: Callable[[str], Any], kind: str) -> int:
    """docker's rm: echo each name removed, one error line per name that
    could not be; exit 1 if any failed."""
    status = 0
    for name in names:
        try:
            remove(name)
        except Exception as exc:
            if not ctx.is_daemon_error(exc):
                raise
            ctx.err(not_found_message(exc, kind, name) + "\n")
            status = 1
            continue
        ctx.out(name + "\n")
    return status
