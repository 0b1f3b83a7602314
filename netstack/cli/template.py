"""The subset of Go's text/template that ``--format`` values use in practice.

Supported: text and ``{{pipeline}}`` actions with ``{{-``/``-}}`` trimming;
fields (``.Name``, ``.IPAM.Driver``, ``$v.Name``), ``.`` and ``$``,
variables (``{{$x := .Name}}``), string/raw/number/bool literals,
parenthesised pipelines, ``|`` pipes, method-style calls (``.Label "k"``);
``if``/``else if``/``else``/``end``, ``range`` (with ``$k, $v :=`` or
``$v :=``, and ``else``), ``with``; functions from Go (``index len not and or
eq ne lt le gt ge print printf println``) and from docker (``json join split
lower upper title pad truncate``).

Values print as Go's ``fmt`` prints decoded JSON: ``true``, ``map[k:v]``,
``[a b]``, a missing map key as ``<no value>``.  Objects that are not plain
JSON (the rows of ``ls``) expose ``_tmpl_field(name, args)`` and
``_tmpl_json()``.  Errors raise ``TemplateError`` with Go's wording where
it matters ("can't evaluate field X", "function "f" not defined").
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable


class TemplateError(Exception):
    pass


_MISSING = object()


# --- lexing -------------------------------------------------------------------


def _split(src: str) -> list[tuple[str, str]]:
    """Split into ("text", s) and ("action", s) pieces, applying trim markers."""
    pieces: list[tuple[str, str]] = []
    i = 0
    while True:
        start = src.find("{{", i)
        if start < 0:
            pieces.append(("text", src[i:]))
            return pieces
        text = src[i:start]
        body_start = start + 2
        if src.startswith("- ", body_start) or src.startswith("-\t", body_start):
            text = text.rstrip(" \t\r\n")
            body_start += 1
        pieces.append(("text", text))
        end = _find_close(src, body_start)
        body = src[body_start:end]
        i = end + 2
        if body.endswith(" -") or body.endswith("\t-"):
            body = body[:-1]
            j = i
            while j < len(src) and src[j] in " \t\r\n":
                j += 1
            i = j
        pieces.append(("action", body.strip()))


def _find_close(src: str, i: int) -> int:
    quote = ""
    while i < len(src):
        c = src[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"`'":
            quote = c
        elif src.startswith("}}", i):
            return i
        i += 1
    raise TemplateError("template: :1: unclosed action")


def _tokens(action: str) -> list[tuple[str, Any]]:
    toks: list[tuple[str, Any]] = []
    i, n = 0, len(action)
    while i < n:
        c = action[i]
        if c in " \t\r\n":
            i += 1
        elif c in "()|,":
            toks.append((c, c))
            i += 1
        elif action.startswith(":=", i):
            toks.append((":=", ":="))
            i += 2
        elif c == "=":
            toks.append((":=", "="))
            i += 1
        elif c == '"':
            j, s = _string(action, i)
            toks.append(("str", s))
            i = j
        elif c == "`":
            j = action.find("`", i + 1)
            if j < 0:
                raise TemplateError("template: :1: unterminated raw quoted string")
            toks.append(("str", action[i + 1 : j]))
            i = j + 1
        elif c in ".$":
            j = i + 1
            while j < n and (action[j].isalnum() or action[j] in "_."):
                j += 1
            word = action[i:j]
            if c == "$":
                var, _, path = word.partition(".")
                toks.append(("var", (var, [p for p in path.split(".") if p])))
            else:
                toks.append(("field", [p for p in word.split(".") if p]))
            i = j
        elif c.isdigit() or (c in "+-" and i + 1 < n and action[i + 1].isdigit()):
            j = i + 1
            while j < n and (action[j].isalnum() or action[j] in "._"):
                j += 1
            toks.append(("num", _number(action[i:j])))
            i = j
        elif c.isalpha() or c == "_":
            j = i
            while j < n and (action[j].isalnum() or action[j] == "_"):
                j += 1
            word = action[i:j]
            if word in ("true", "false"):
                toks.append(("lit", word == "true"))
            elif word == "nil":
                toks.append(("lit", None))
            else:
                toks.append(("ident", word))
            i = j
        else:
            raise TemplateError(f"template: :1: unexpected {c!r} in command")
    return toks


def _string(s: str, i: int) -> tuple[int, str]:
    out = []
    j = i + 1
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'", "0": "\0"}
    while j < len(s):
        c = s[j]
        if c == '"':
            return j + 1, "".join(out)
        if c == "\\" and j + 1 < len(s):
            out.append(escapes.get(s[j + 1], s[j + 1]))
            j += 2
            continue
        out.append(c)
        j += 1
    raise TemplateError("template: :1: unterminated quoted string")


def _number(word: str) -> int | float:
    try:
        return int(word, 0)
    except ValueError:
        try:
            return float(word)
        except ValueError:
            raise TemplateError(f"template: :1: bad number syntax: {word!r}") from None


# --- parsing ------------------------------------------------------------------
# Nodes are tuples: ("text", s) | ("pipe", pipeline) | ("if"|"with", pipeline,
# body, else_body) | ("range", pipeline, body, else_body).  A pipeline is
# (decl_vars, [command, ...]); a command is a list of operands.


class Template:
    def __init__(self, nodes: list[Any]) -> None:
        self.nodes = nodes

    def execute(self, data: Any) -> str:
        out: list[str] = []
        _run(self.nodes, data, [{"$": data}], out)
        return "".join(out)


def parse(src: str) -> Template:
    pieces = _split(src)
    nodes, stop = _parse_list(pieces, 0, ())
    if stop < len(pieces):
        raise TemplateError(f"template: :1: unexpected {{{{{pieces[stop][1]}}}}}")
    return Template(nodes)


def _parse_list(pieces: list[tuple[str, str]], i: int, stops: tuple[str, ...]) -> tuple[list[Any], int]:
    nodes: list[Any] = []
    while i < len(pieces):
        kind, body = pieces[i]
        if kind == "text":
            if body:
                nodes.append(("text", body))
            i += 1
            continue
        word = body.split(None, 1)[0] if body else ""
        if word in ("end", "else"):
            if word not in stops:
                raise TemplateError(f"template: :1: unexpected {{{{{word}}}}}")
            return nodes, i
        if word.startswith("/*"):
            i += 1
            continue
        if word in ("if", "range", "with"):
            node, i = _parse_block(pieces, i, word, body[len(word) :])
            nodes.append(node)
            continue
        nodes.append(("pipe", _pipeline(_tokens(body))))
        i += 1
    if stops:
        raise TemplateError("template: :1: unexpected EOF")
    return nodes, i


def _parse_block(pieces: list[tuple[str, str]], i: int, word: str, rest: str) -> tuple[Any, int]:
    pipe = _pipeline(_tokens(rest))
    body, i = _parse_list(pieces, i + 1, ("end", "else"))
    else_body: list[Any] = []
    stop = pieces[i][1]
    if stop.startswith("else"):
        tail = stop[len("else") :].strip()
        if tail.startswith("if") and word == "if":
            node, i = _parse_block(pieces, i, "if", tail[2:])
            return (word, pipe, body, [node]), i
        else_body, i = _parse_list(pieces, i + 1, ("end",))
    return (word, pipe, body, else_body), i + 1


def _pipeline(toks: list[tuple[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    decl: list[str] = []
    for k in range(len(toks)):
        if toks[k][0] == ":=":
            names = [t for t in toks[:k] if t[0] != ","]
            if not all(t[0] == "var" and not t[1][1] for t in names):
                raise TemplateError("template: :1: bad variable declaration")
            decl = [t[1][0] for t in names]
            toks = toks[k + 1 :]
            break
    cmds, pos = _commands(toks, 0)
    if pos != len(toks):
        raise TemplateError(f"template: :1: unexpected {toks[pos][1]!r} in command")
    if not cmds or not all(cmds):
        raise TemplateError("template: :1: missing value for command")
    return decl, cmds


def _commands(toks: list[tuple[str, Any]], pos: int) -> tuple[list[list[Any]], int]:
    cmds: list[list[Any]] = [[]]
    while pos < len(toks):
        kind, val = toks[pos]
        if kind == ")":
            break
        if kind == "|":
            cmds.append([])
            pos += 1
        elif kind == "(":
            sub, pos = _commands(toks, pos + 1)
            if pos >= len(toks) or toks[pos][0] != ")":
                raise TemplateError("template: :1: unclosed left paren")
            pos += 1
            path: list[str] = []
            if pos < len(toks) and toks[pos][0] == "field":
                path = toks[pos][1]
                pos += 1
            cmds[-1].append(("sub", (sub, path)))
        else:
            cmds[-1].append((kind, val))
            pos += 1
    return cmds, pos


# --- execution ----------------------------------------------------------------


def _run(nodes: list[Any], dot: Any, scopes: list[dict[str, Any]], out: list[str]) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "pipe":
            decl, cmds = node[1]
            value = _pipe(cmds, dot, scopes)
            if decl:
                scopes[-1][decl[0]] = value
            else:
                out.append(text(value))
        elif kind in ("if", "with"):
            decl, cmds = node[1]
            value = _pipe(cmds, dot, scopes)
            scopes.append({decl[0]: value} if decl else {})
            if _truth(value):
                _run(node[2], value if kind == "with" else dot, scopes, out)
            else:
                _run(node[3], dot, scopes, out)
            scopes.pop()
        else:
            _range(node, dot, scopes, out)


def _range(node: Any, dot: Any, scopes: list[dict[str, Any]], out: list[str]) -> None:
    decl, cmds = node[1]
    value = _pipe(cmds, dot, scopes)
    if isinstance(value, dict):
        items = [(k, value[k]) for k in sorted(value)]
    elif isinstance(value, (list, tuple)):
        items = list(enumerate(value))
    elif value is None:
        items = []
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [(k, k) for k in range(value)]
    else:
        raise TemplateError(f"range can't iterate over {text(value)}")
    if not items:
        _run(node[3], dot, scopes, out)
        return
    for key, elem in items:
        scope: dict[str, Any] = {}
        if len(decl) == 1:
            scope[decl[0]] = elem
        elif len(decl) >= 2:
            scope[decl[0]], scope[decl[1]] = key, elem
        scopes.append(scope)
        _run(node[2], elem, scopes, out)
        scopes.pop()


def _pipe(cmds: list[list[Any]], dot: Any, scopes: list[dict[str, Any]]) -> Any:
    value: Any = _MISSING
    for cmd in cmds:
        value = _command(cmd, dot, scopes, value)
    return value


def _command(cmd: list[Any], dot: Any, scopes: list[dict[str, Any]], piped: Any) -> Any:
    kind, val = cmd[0]
    if kind == "ident":
        fn = FUNCS.get(val)
        if fn is None:
            raise TemplateError(f'template: :1: function "{val}" not defined')
        args = [_operand(op, dot, scopes) for op in cmd[1:]]
        if piped is not _MISSING:
            args.append(piped)
        try:
            return fn(*args)
        except TypeError as exc:
            raise TemplateError(f"error calling {val}: {exc}") from None
    args = [_operand(op, dot, scopes) for op in cmd[1:]]
    if piped is not _MISSING:
        args.append(piped)
    if kind == "field" and args:
        return _path(dot, val, args)
    if kind == "var" and args:
        return _path(_var(val[0], scopes), val[1], args)
    if args:
        raise TemplateError(f"template: :1: can't give argument to non-function {_describe(cmd[0])}")
    return _operand(cmd[0], dot, scopes)


def _operand(op: Any, dot: Any, scopes: list[dict[str, Any]]) -> Any:
    kind, val = op
    if kind == "field":
        return _path(dot, val, [])
    if kind == "var":
        return _path(_var(val[0], scopes), val[1], [])
    if kind in ("str", "num", "lit"):
        return val
    if kind == "sub":
        sub, path = val
        return _path(_pipe(sub, dot, scopes), path, [])
    if kind == "ident":
        fn = FUNCS.get(val)
        if fn is None:
            raise TemplateError(f'template: :1: function "{val}" not defined')
        return fn()
    raise TemplateError(f"template: :1: unexpected {val!r}")


def _describe(op: Any) -> str:
    kind, val = op
    if kind == "field":
        return "." + ".".join(val)
    return str(val)


def _var(name: str, scopes: list[dict[str, Any]]) -> Any:
    for scope in reversed(scopes):
        if name in scope:
            return scope[name]
    raise TemplateError(f'template: :1: undefined variable "{name}"')


def _path(value: Any, names: list[str], args: list[Any]) -> Any:
    """Follow .A.B.C; the last name gets args (a method call)."""
    for k, name in enumerate(names):
        last_args = args if k == len(names) - 1 else []
        value = _field(value, name, last_args)
    return value


def _field(value: Any, name: str, args: list[Any]) -> Any:
    getter = getattr(value, "_tmpl_field", None)
    if getter is not None:
        try:
            return getter(name, args)
        except KeyError:
            kind = getattr(value, "type_name", type(value).__name__)
            raise TemplateError(
                f'template: :1: executing "" at <.{name}>: can\'t evaluate field {name} in type {kind}'
            ) from None
    if args:
        raise TemplateError(f"template: :1: {name} is not a method but has arguments")
    if isinstance(value, dict):
        return value.get(name)
    if value is None:
        return None
    raise TemplateError(
        f"template: :1: executing \"\" at <.{name}>: can't evaluate field {name} in type {_gotype(value)}"
    )


def _gotype(value: Any) -> str:
    return {bool: "bool", str: "string", int: "int", float: "float64", list: "[]interface {}"}.get(
        type(value), type(value).__name__
    )


def _truth(value: Any) -> bool:
    return bool(value) and value is not _MISSING


def text(value: Any) -> str:
    """Print a value as Go's fmt %v prints decoded JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return "<no value>"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value).replace("e+0", "e+").replace("e-0", "e-")
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{text(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(text(v) for v in value) + "]"
    if hasattr(value, "_tmpl_json"):
        return text(value._tmpl_json())
    return str(value)


# --- functions ----------------------------------------------------------------


def _json(value: Any) -> str:
    from netstack.cli.render import dumps_go

    if hasattr(value, "_tmpl_json"):
        value = value._tmpl_json()
    return dumps_go(value)


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            value = value.get(key, "")
        elif isinstance(value, (list, tuple, str)):
            if not isinstance(key, int) or not 0 <= key < len(value):
                raise TemplateError(f"error calling index: index out of range: {text(key)}")
            value = value[key]
        elif value is None:
            return None
        else:
            raise TemplateError(f"error calling index: can't index item of type {_gotype(value)}")
    return value


def _join(items: Any, sep: str) -> str:
    if isinstance(items, dict):
        items = [items[k] for k in sorted(items)]
    if items is None:
        return ""
    return sep.join(text(v) for v in items)


def _sprint(*args: Any) -> str:
    out = []
    for k, arg in enumerate(args):
        if k and not isinstance(arg, str) and not isinstance(args[k - 1], str):
            out.append(" ")
        out.append(text(arg))
    return "".join(out)


def _printf(fmt: str, *args: Any) -> str:
    out, k, i = [], 0, 0
    while i < len(fmt):
        c = fmt[i]
        if c == "%" and i + 1 < len(fmt):
            verb = fmt[i + 1]
            i += 2
            if verb == "%":
                out.append("%")
                continue
            arg = args[k] if k < len(args) else None
            k += 1
            out.append(_json(arg) if verb == "q" else text(arg))
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _and(*args: Any) -> Any:
    for arg in args:
        if not _truth(arg):
            return arg
    return args[-1]


def _or(*args: Any) -> Any:
    for arg in args:
        if _truth(arg):
            return arg
    return args[-1]


def _cmp(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(a: Any, b: Any) -> bool:
        try:
            return op(a, b)
        except TypeError:
            raise TemplateError(f"incompatible types for comparison: {text(a)}, {text(b)}") from None

    return compare


FUNCS: dict[str, Callable[..., Any]] = {
    "json": _json,
    "index": _index,
    "len": lambda v: len(v) if v is not None else 0,
    "not": lambda v: not _truth(v),
    "and": _and,
    "or": _or,
    "eq": lambda a, *bs: any(a == b for b in bs),
    "ne": lambda a, b: a != b,
    "lt": _cmp(lambda a, b: a < b),
    "le": _cmp(lambda a, b: a <= b),
    "gt": _cmp(lambda a, b: a > b),
    "ge": _cmp(lambda a, b: a >= b),
    "print": _sprint,
    "printf": _printf,
    "println": lambda *a: " ".join(text(v) for v in a) + "\n",
    "join": _join,
    "split": lambda s, sep: text(s).split(sep),
    "lower": lambda s: text(s).lower(),
    "upper": lambda s: text(s).upper(),
    "title": lambda s: " ".join(w[:1].upper() + w[1:] for w in text(s).split(" ")),
    "pad": lambda s, left, right: " " * left + text(s) + " " * right,
    "truncate": lambda s, n: text(s)[:n],
}
