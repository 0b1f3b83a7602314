"""A small command-line flag parser with docker's (cobra/pflag's) behaviour.

Why not argparse: it imports ``re`` and ``gettext``, which alone cost more
start-up time than ``docker network ls`` takes to run; and docker's flag
rules and messages ("unknown flag: --foo", flags after positionals, ``-d
bridge``/``-dbridge``/``--driver=bridge``, repeated list flags, ``--``) are
simpler to state directly than to bend argparse into.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

BOOL, VALUE, LIST, KV = "bool", "value", "list", "kv"


class UsageError(Exception):
    """A bad command line: printed with a hint, exit status 125."""

    def __init__(self, message: str, command: str) -> None:
        super().__init__(message)
        self.message = message
        self.command = command


class HelpRequested(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class Flag:
    __slots__ = ("long", "short", "kind", "metavar", "help", "default")

    def __init__(
        self,
        long: str,
        short: str = "",
        kind: str = BOOL,
        help: str = "",
        metavar: str = "string",
        default: Any = None,
    ) -> None:
        self.long, self.short, self.kind = long, short, kind
        self.help, self.metavar, self.default = help, metavar, default

    @property
    def dest(self) -> str:
        return self.long.replace("-", "_")

    @property
    def display(self) -> str:
        return f"-{self.short}, --{self.long}" if self.short else f"--{self.long}"


class Spec:
    """One command: its path ("pynet network create"), usage and flags."""

    def __init__(
        self,
        path: str,
        usage: str,
        summary: str,
        flags: list[Flag] = (),  # type: ignore[assignment]
        nargs: tuple[int, int | None] = (0, 0),
        interspersed: bool = True,
    ) -> None:
        self.path, self.usage, self.summary = path, usage, summary
        self.flags = list(flags)
        self.nargs = nargs
        self.interspersed = interspersed

    def error(self, message: str) -> UsageError:
        return UsageError(message, self.path)

    def help_text(self) -> str:
        lines = [f"\nUsage:  {self.path} {self.usage}".rstrip(), "", self.summary]
        if self.flags:
            rows = []
            for f in sorted(self.flags, key=lambda f: f.long):
                left = f"  -{f.short}, --{f.long}" if f.short else f"      --{f.long}"
                if f.kind != BOOL:
                    left += f" {f.metavar}"
                text = f.help
                if f.default not in (None, ""):
                    text += f' (default "{f.default}")'
                rows.append((left, text))
            width = max(len(left) for left, _ in rows) + 3
            lines += ["", "Options:"] + [left.ljust(width) + text for left, text in rows]
        return "\n".join(lines) + "\n"

    def parse(self, argv: list[str]) -> tuple[dict[str, Any], list[str]]:
        """Return (options by dest, positional arguments) or raise UsageError."""
        by_long = {f.long: f for f in self.flags}
        by_short = {f.short: f for f in self.flags if f.short}
        opts: dict[str, Any] = {}
        for f in self.flags:
            opts[f.dest] = [] if f.kind in (LIST, KV) else (False if f.kind == BOOL else f.default)
        pos: list[str] = []
        i = 0
        while i < len(argv):
            arg = argv[i]
            i += 1
            if arg == "--":
                pos += argv[i:]
                break
            if arg.startswith("--"):
                name, eq, value = arg[2:].partition("=")
                if name == "help":
                    raise HelpRequested(self.help_text())
                flag = by_long.get(name)
                if flag is None:
                    raise self.error(f"unknown flag: --{name}")
                if flag.kind == BOOL:
                    self._set(opts, flag, value if eq else "true")
                    continue
                if not eq:
                    if i >= len(argv):
                        raise self.error(f"flag needs an argument: --{name}")
                    value = argv[i]
                    i += 1
                self._set(opts, flag, value)
            elif arg.startswith("-") and arg != "-":
                i = self._shorts(arg, argv, i, by_short, opts)
            else:
                pos.append(arg)
                if not self.interspersed:
                    rest = argv[i:]
                    pos += rest[1:] if rest[:1] == ["--"] else rest
                    break
        self._check_nargs(pos)
        return opts, pos

    def _shorts(
        self, arg: str, argv: list[str], i: int, by_short: dict[str, Flag], opts: dict[str, Any]
    ) -> int:
        j = 1
        while j < len(arg):
            c = arg[j]
            if c == "h" and "h" not in by_short:
                raise HelpRequested(self.help_text())
            flag = by_short.get(c)
            if flag is None:
                raise self.error(f"unknown shorthand flag: '{c}' in {arg}")
            rest = arg[j + 1 :]
            if flag.kind == BOOL:
                if rest.startswith("="):
                    self._set(opts, flag, rest[1:])
                    return i
                self._set(opts, flag, "true")
                j += 1
                continue
            if rest:
                self._set(opts, flag, rest[1:] if rest.startswith("=") else rest)
                return i
            if i >= len(argv):
                raise self.error(f"flag needs an argument: '{c}' in -{c}")
            self._set(opts, flag, argv[i])
            return i + 1
        return i

    def _set(self, opts: dict[str, Any], flag: Flag, value: str) -> None:
        if flag.kind == BOOL:
            low = value.lower()
            if low in ("1", "t", "true"):
                opts[flag.dest] = True
            elif low in ("0", "f", "false"):
                opts[flag.dest] = False
            else:
                raise self.error(f'invalid argument "{value}" for "{flag.display}" flag: expected true or false')
        elif flag.kind == LIST:
            opts[flag.dest].append(value)
        elif flag.kind == KV:
            key, eq, val = value.partition("=")
            if not eq or not key:
                raise self.error(
                    f'invalid argument "{value}" for "{flag.display}" flag: expected {flag.metavar}'
                )
            opts[flag.dest].append((key, val))
        else:
            opts[flag.dest] = value

    def _check_nargs(self, pos: list[str]) -> None:
        lo, hi = self.nargs
        n = len(pos)
        if lo <= n and (hi is None or n <= hi):
            return
        plural = lambda k: "argument" if k == 1 else "arguments"  # noqa: E731
        if hi == 0:
            msg = f'"{self.path}" accepts no arguments.'
        elif lo == hi:
            msg = f'"{self.path}" requires exactly {lo} {plural(lo)}.'
        elif hi is None:
            msg = f'"{self.path}" requires at least {lo} {plural(lo)}.'
        else:
            msg = f'"{self.path}" requires at least {lo} and at most {hi} {plural(hi)}.'
        raise UsageError(
            f"{msg}\nSee '{self.path} --help'.\n\nUsage:  {self.path} {self.usage}\n\n{self.summary}",
            "",
        )
