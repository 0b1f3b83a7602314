"""Output the way the docker CLI prints it: tables, ``--format``, JSON.

``format_rows`` follows docker's formatter: ``table`` (the default) and
``table TEMPLATE`` go through a Go-tabwriter clone with a header row,
``json`` is ``{{json .}}`` one object per line, anything else is a template
run once per row.  A format made only of ``{{.Field}}`` cells separated by
tabs (every default format, ``-q``) skips the template engine, which keeps
``pynet network ls`` from importing it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable


class Row:
    """One listed object as docker's formatting context sees it: string fields
    (``.ID``, ``.Name`` ...), ``.Label "k"``, and ``{{json .}}`` of them all."""

    def __init__(self, type_name: str, fields: dict[str, str], labels: dict[str, str] | None = None):
        self.type_name = type_name
        self.fields = fields
        self.labels = labels or {}

    def _tmpl_field(self, name: str, args: list[Any]) -> Any:
        if name == "Label":
            if len(args) != 1:
                raise KeyError(name)
            return self.labels.get(str(args[0]), "")
        if args or name not in self.fields:
            raise KeyError(name)
        return self.fields[name]

    def _tmpl_json(self) -> Any:
        return dict(sorted(self.fields.items()))


class Header:
    """The context the header row of a ``table`` format is rendered with."""

    def __init__(self, names: dict[str, str]):
        self.names = names

    def _tmpl_field(self, name: str, args: list[Any]) -> Any:
        if name == "Label":
            return "LABEL"
        return self.names.get(name, "")

    def _tmpl_json(self) -> Any:
        return self.names


def format_rows(fmt: str, rows: list[Row], headers: dict[str, str], default_table: str) -> str:
    """Render rows with a docker ``--format`` value; return the text to print."""
    if fmt in ("", "table"):
        fmt = default_table
    elif fmt == "json":
        fmt = "{{json .}}"
    table = fmt.startswith("table")
    if table:
        fmt = fmt[len("table") :]
    fmt = fmt.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    simple = _simple_fields(fmt)
    if simple is not None and all(name in headers for name in simple):
        render: Callable[[Any], str] = lambda ctx: "\t".join(  # noqa: E731
            str(ctx._tmpl_field(name, [])) for name in simple
        )
    else:
        render = compile_template(fmt)
    out = []
    if table:
        out.append(render(Header(headers)) + "\n")
    for row in rows:
        out.append(render(row) + "\n")
    text = "".join(out)
    return tabwrite(text) if table else text


def compile_template(fmt: str) -> Callable[[Any], str]:
    """Parse a Go template; the returned function renders one object.  Template
    errors, at parse or run time, become a one-line CliError."""
    from netstack.cli import template
    from netstack.cli.common import CliError

    try:
        tmpl = template.parse(fmt)
    except template.TemplateError as exc:
        raise CliError(f"template parsing error: {exc}") from None

    def render(data: Any) -> str:
        try:
            return tmpl.execute(data)
        except template.TemplateError as exc:
            raise CliError(str(exc)) from None

    return render


def _simple_fields(fmt: str) -> list[str] | None:
    names = []
    for part in fmt.split("\t"):
        if not (part.startswith("{{.") and part.endswith("}}")):
            return None
        name = part[3:-2]
        if not name.isalnum():
            return None
        names.append(name)
    return names


def tabwrite(text: str, minwidth: int = 10, padding: int = 3) -> str:
    """Align tab-terminated cells as Go's text/tabwriter does with docker's
    settings (minwidth 10, padding 3, spaces): a column's width is fixed per
    block of consecutive lines that have a cell in it; the text after a
    line's last tab is not aligned."""
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    widths: list[int] = []

    def write(line0: int, line1: int) -> None:
        for i in range(line0, line1):
            cells = lines[i]
            for j, cell in enumerate(cells):
                out.append(cell.ljust(widths[j]) if j < len(widths) else cell)
            if i + 1 < len(lines):
                out.append("\n")

    def block(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write(line0, this)
            line0 = this
            width = minwidth
            while this < line1 and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            block(line0, this)
            widths.pop()
            line0 = this
            this += 1
        write(line0, line1)

    block(0, len(lines))
    return "".join(out)


def natural_key(text: str) -> list[tuple[int, int, int]]:
    """Sort key of docker's ``sortorder.NaturalLess``: digit runs compare by value."""
    key = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isdigit():
            j = i
            while j < n and text[j].isdigit():
                j += 1
            key.append((48, int(text[i:j]), j - i))
            i = j
        else:
            key.append((ord(text[i]), 0, 0))
            i += 1
    return key


def truncate_id(ident: str) -> str:
    """docker's ``stringid.TruncateID``: drop an ``algo:`` prefix, keep 12."""
    return ident.partition(":")[2][:12] if ":" in ident else ident[:12]


def go_time(rfc3339: str) -> str:
    """RFC 3339 (the API's ``Created``) as Go's ``time.Time.String()`` prints it,
    which is what docker shows for ``.CreatedAt``."""
    if "T" not in rfc3339:
        return rfc3339
    date, _, rest = rfc3339.partition("T")
    if rest.endswith("Z"):
        clock, zone = rest[:-1], "+0000 UTC"
    elif len(rest) > 6 and rest[-6] in "+-" and rest[-3] == ":":
        offset = rest[-6:].replace(":", "")
        clock, zone = rest[:-6], f"{offset} {offset}"
    else:
        clock, zone = rest, ""
    secs, dot, frac = clock.partition(".")
    frac = frac.rstrip("0")
    clock = f"{secs}.{frac}" if dot and frac else secs
    return f"{date} {clock} {zone}".rstrip()


def dumps_go(value: Any, indent: str | None = None) -> str:
    """JSON as Go's encoding/json writes it (``<``, ``>``, ``&`` escaped, UTF-8 kept)."""
    import json

    text = json.dumps(value, ensure_ascii=False, indent=indent, separators=None if indent else (",", ":"))
    if indent is None:
        for raw, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            text = text.replace(raw, esc)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
