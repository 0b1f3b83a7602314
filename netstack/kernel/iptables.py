"""Low-level python-iptables adapter: one table, one transaction, one commit.

This is the only module that imports ``iptc``.  It speaks the
``iptables-save`` argument syntax (``("-o", "br0", "-j", "DROP")``) in both
directions, so the firewall planner stays pure and what it plans can be
compared with what the kernel lists.

Two python-iptables traps are avoided on purpose:

* ``iptc.Table("nat")`` is a process-wide singleton whose libiptc handle is
  bound to the namespace of whichever thread first opened it.  A firewall
  that works in several namespaces (a host namespace, sandboxes) would then
  commit into the wrong one.  :class:`Transaction` therefore builds a fresh,
  uncached table object (and a fresh handle) every time, in the calling
  thread's namespace, and frees it afterwards.
* libxtables keeps global state (loaded extensions, option parsers) that is
  not thread safe; every use of iptc happens under :data:`LOCK`.

Autocommit is always off: a transaction either commits once or leaves the
kernel untouched.
"""

from __future__ import annotations

import ipaddress
import threading
from types import TracebackType
from typing import Any, Iterator

from netstack.errors import Internal, PynetError, Unavailable

#: serialises every use of python-iptables in the process (see module doc)
LOCK = threading.RLock()

Args = tuple[str, ...]

_ADDR_OPTS = {"-s": "src", "-d": "dst", "-i": "in_interface", "-o": "out_interface"}
_NO_PROTO = {None, "", "ip", "all", "0", "ipv6"}


_RULE_CLASSES: dict[int, Any] = {}


def _iptc() -> Any:
    try:
        import iptc  # noqa: PLC0415 - imported lazily: loading it opens libiptc
    except Exception as exc:  # ImportError, XTablesError, OSError from ctypes
        raise Unavailable(f"python-iptables (iptc) cannot be loaded: {exc}") from exc
    return iptc


def _rule_class(family: int) -> Any:
    """iptc.Rule(6) whose chain lookups ("is this target a chain?") ask the
    transaction's own handle.  Stock iptc asks its cached global tables,
    which belong to some other namespace or miss chains created earlier in
    the same, uncommitted transaction."""
    if family not in _RULE_CLASSES:
        iptc = _iptc()
        base = iptc.Rule6 if family == 6 else iptc.Rule
        _RULE_CLASSES[family] = type(f"Pynet{base.__name__}", (base,), {
            "tables": property(lambda self: [self.chain.table]),
        })
    return _RULE_CLASSES[family]


def translate(exc: BaseException, what: str) -> PynetError:
    """Map an iptc/xtables exception to a pynet error kind (caller raises
    it ``from exc``)."""
    msg = str(exc)
    low = msg.lower()
    if "table does not exist" in low or "do you need to insmod" in low or "protocol not available" in low:
        return Unavailable(f"iptables legacy tables are not available in this kernel ({what}): {msg}")
    if "permission denied" in low or "operation not permitted" in low:
        return Unavailable(f"no permission to change iptables ({what}): {msg}")
    if type(exc).__name__ == "XTablesError":
        return Unavailable(f"iptables extension missing ({what}): {msg}")
    return Internal(f"iptables {what} failed: {msg}")


class _ChainRef:
    """What iptc.Rule needs of a chain when decoding (``.table``), without
    touching iptc's process-wide Chain cache."""

    __slots__ = ("name", "table")

    def __init__(self, table: Any, name: str) -> None:
        self.table = table
        self.name = name


class Transaction:
    """One table of one family, opened in the calling thread's namespace.

    Use as a context manager; call :meth:`commit` to apply.  Leaving the
    block without committing discards every change.
    """

    def __init__(self, family: int, table: str) -> None:
        self.family = family
        self.table_name = table
        self._t: Any = None

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self) -> "Transaction":
        LOCK.acquire()
        try:
            iptc = _iptc()
            cls = iptc.Table6 if self.family == 6 else iptc.Table
            t = object.__new__(cls)  # bypass iptc's namespace-blind singleton cache
            t._init(self.table_name, False)
            self._t = t
        except PynetError:
            LOCK.release()
            raise
        except Exception as exc:
            LOCK.release()
            raise translate(exc, f"open {self._what()}") from exc
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self._t is not None and self._t._handle:
                self._t._iptc.iptc_free(self._t._handle)
                self._t._handle = None
        finally:
            self._t = None
            LOCK.release()

    def _what(self) -> str:
        return f"{'ip6tables' if self.family == 6 else 'iptables'} -t {self.table_name}"

    def commit(self) -> None:
        try:
            self._t.commit()
        except Exception as exc:
            raise translate(exc, f"commit {self._what()}") from exc

    # -- chains ------------------------------------------------------------
    def chains(self) -> list[str]:
        out: list[str] = []
        h = self._t._handle
        name = self._t._iptc.iptc_first_chain(h)
        while name:
            out.append(name.decode())
            name = self._t._iptc.iptc_next_chain(h)
        return out

    def has_chain(self, chain: str) -> bool:
        return bool(self._t.is_chain(chain))

    def is_builtin(self, chain: str) -> bool:
        return bool(self._t.builtin_chain(chain))

    def create_chain(self, chain: str) -> None:
        self._call(self._t.create_chain, chain, what=f"create chain {chain}")

    def flush_chain(self, chain: str) -> None:
        self._call(self._t.flush_entries, chain, what=f"flush chain {chain}")

    def delete_chain(self, chain: str) -> None:
        self._call(self._t.delete_chain, chain, what=f"delete chain {chain}")

    def policy(self, chain: str) -> str | None:
        pol, _ = self._t.get_policy(chain)
        return pol.name if pol is not None else None

    # -- rules -------------------------------------------------------------
    def append(self, chain: str, args: Args) -> None:
        rule = self._build(args)
        self._call(self._t.append_entry, chain, rule.rule, what=f"append to {chain}: {' '.join(args)}")

    def insert(self, chain: str, args: Args, position: int = 0) -> None:
        rule = self._build(args)
        self._call(self._t.insert_entry, chain, rule.rule, position,
                   what=f"insert into {chain}: {' '.join(args)}")

    def delete(self, chain: str, args: Args) -> int:
        """Delete every copy of the rule; return how many there were.  A
        missing chain or rule is not an error."""
        if not self.has_chain(chain):
            return 0
        rule = self._build(args)
        buf, mask = rule.rule, rule.mask
        n = 0
        while self._t._iptc.iptc_delete_entry(chain.encode(), _voidp(buf), mask, self._t._handle) == 1:
            n += 1
        return n

    def rules(self, chain: str) -> list[Args]:
        """The chain's rules, decoded to iptables-save arguments."""
        return [self._decode(r) for r in self._raw_rules(chain)]

    def targets(self, chain: str) -> list[str]:
        """Only the target (jump) name of each rule: cheaper than rules()."""
        return [r.target.name for r in self._raw_rules(chain)]

    # -- helpers -----------------------------------------------------------
    def _call(self, fn: Any, *a: Any, what: str) -> Any:
        try:
            return fn(*a)
        except Exception as exc:
            raise translate(exc, f"{what} ({self._what()})") from exc

    def _raw_rules(self, chain: str) -> Iterator[Any]:
        ref = _ChainRef(self._t, chain)
        entry = self._t.first_rule(chain)
        while entry:
            yield _rule_class(self.family)(entry, ref)
            entry = self._t.next_rule(entry)

    def _build(self, args: Args) -> Any:
        try:
            return _build_rule(_rule_class(self.family)(None, _ChainRef(self._t, "")), args)
        except PynetError:
            raise
        except Exception as exc:
            raise translate(exc, f"build rule {' '.join(args)!r}") from exc

    def _decode(self, r: Any) -> Args:
        return decode_rule(r, self.family)


def _voidp(buf: Any) -> Any:
    import ctypes  # noqa: PLC0415

    return ctypes.cast(buf, ctypes.c_void_p)


def _build_rule(rule: Any, args: Args) -> Any:
    """iptables-save arguments -> iptc.Rule.  Grammar: ``[!] -s|-d|-i|-o V``,
    ``-p P``, ``-m NAME (--opt V)*``, ``-j TARGET (--opt V)*``; every option
    takes exactly one value."""
    ext: Any = None
    neg = False
    i = 0
    while i < len(args):
        tok = args[i]
        if tok == "!":
            neg = True
            i += 1
            continue
        val = args[i + 1]
        if tok in _ADDR_OPTS:
            setattr(rule, _ADDR_OPTS[tok], ("!" if neg else "") + val)
        elif tok == "-p":
            rule.protocol = val
        elif tok == "-m":
            ext = rule.create_match(val)
        elif tok == "-j":
            ext = rule.create_target(val)
        elif tok.startswith("--") and ext is not None:
            ext.set_parameter(tok[2:], ("!" if neg else "") + val)
        else:
            raise ValueError(f"unsupported token {tok!r}")
        neg = False
        i += 2
    rule.final_check()
    return rule


def _prefix(net: str, family: int) -> str:
    addr, _, mask = net.partition("/")
    if not mask:
        return f"{addr}/{32 if family == 4 else 128}"
    if mask.isdigit():
        return f"{addr}/{mask}"
    bits = bin(int(ipaddress.ip_address(mask))).count("1")
    return f"{addr}/{bits}"


def decode_rule(r: Any, family: int) -> Args:
    """iptc.Rule -> the argument tuple iptables-save would print."""
    out: list[str] = []
    any_net = "0.0.0.0/0" if family == 4 else "::/0"
    for opt, attr in (("-s", "src"), ("-d", "dst")):
        v = getattr(r, attr)
        neg = bool(v) and v.startswith("!")
        v = v[1:] if neg else v
        if v and _prefix(v, family) != any_net:
            out += (["!"] if neg else []) + [opt, _prefix(v, family)]
    for opt, attr in (("-i", "in_interface"), ("-o", "out_interface")):
        v = getattr(r, attr)
        if v:
            out += (["!", opt, v[1:]] if v.startswith("!") else [opt, v])
    proto = r.protocol
    if proto not in _NO_PROTO:
        out += ["-p", proto]
    for m in r.matches:
        out += ["-m", m.name]
        out += _params(m)
    out += ["-j", r.target.name]
    if not r.target._is_standard_target():
        out += _params(r.target)
    return tuple(out)


def _params(ext: Any) -> list[str]:
    out: list[str] = []
    try:
        params = ext.get_all_parameters()
    except Exception:  # an extension without a save function
        return out
    for key, vals in params.items():
        vals = list(vals)
        if vals and vals[0] == "!":
            out.append("!")
            vals = vals[1:]
        out.append(f"--{key}")
        out.extend(vals)
    return out


class SaveRestoreTransaction:
    """The same interface over ``ip6tables-legacy-save``/``-restore``.

    Used for the IPv6 nat table: python-iptables cannot load the IPv6 NAT
    targets once libxt_NAT.so was loaded for IPv4 in the same process
    (libxtables registers them for the first family only), and it fails to
    parse ``[addr]:port``.  The whole table is read once, edited in memory
    and written back by one ``-restore`` call: still one atomic commit per
    table (``--counters`` keeps the counters)."""

    _BUILTIN = {"filter": ("INPUT", "FORWARD", "OUTPUT"),
                "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")}

    def __init__(self, family: int, table: str) -> None:
        self.family = family
        self.table_name = table
        self._tool = "ip6tables-legacy" if family == 6 else "iptables-legacy"
        self._policies: dict[str, str] = {}
        self._rules: dict[str, list[Args]] = {}

    def __enter__(self) -> "SaveRestoreTransaction":
        import shlex  # noqa: PLC0415

        text = self._exec([f"{self._tool}-save", "-t", self.table_name], None)
        for line in text.splitlines():
            if line.startswith(":"):
                name, pol = line[1:].split()[:2]
                self._rules[name] = []
                if pol != "-":
                    self._policies[name] = pol
            elif line.startswith("-A "):
                toks = shlex.split(line)
                self._rules[toks[1]].append(tuple(toks[2:]))
        for c in self._BUILTIN.get(self.table_name, ()):
            self._rules.setdefault(c, [])
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _exec(self, argv: list[str], stdin: str | None) -> str:
        import subprocess  # noqa: PLC0415

        try:
            res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
        except FileNotFoundError as exc:
            raise Unavailable(f"{argv[0]} is not installed") from exc
        if res.returncode != 0:
            err = res.stderr.strip()
            exc2 = RuntimeError(err)
            raise translate(exc2, " ".join(argv[:3])) from exc2
        return res.stdout

    def commit(self) -> None:
        out = [f"*{self.table_name}"]
        for c in self._rules:
            out.append(f":{c} {self._policies.get(c, '-')} [0:0]")
        for c, rules in self._rules.items():
            out += [f"-A {c} {' '.join(a)}" for a in rules]
        out.append("COMMIT")
        self._exec([f"{self._tool}-restore", "-T", self.table_name], "\n".join(out) + "\n")

    def chains(self) -> list[str]:
        return list(self._rules)

    def has_chain(self, chain: str) -> bool:
        return chain in self._rules

    def is_builtin(self, chain: str) -> bool:
        return chain in self._policies

    def create_chain(self, chain: str) -> None:
        self._rules.setdefault(chain, [])

    def flush_chain(self, chain: str) -> None:
        self._rules[chain] = []

    def delete_chain(self, chain: str) -> None:
        self._rules.pop(chain, None)

    def policy(self, chain: str) -> str | None:
        return self._policies.get(chain)

    def append(self, chain: str, args: Args) -> None:
        self._rules[chain].append(tuple(args))

    def insert(self, chain: str, args: Args, position: int = 0) -> None:
        self._rules[chain].insert(position, tuple(args))

    def delete(self, chain: str, args: Args) -> int:
        rules = self._rules.get(chain)
        if rules is None:
            return 0
        keep = [a for a in rules if a != tuple(args)]
        n = len(rules) - len(keep)
        self._rules[chain] = keep
        return n

    def rules(self, chain: str) -> list[Args]:
        return list(self._rules.get(chain, []))

    def targets(self, chain: str) -> list[str]:
        return [a[a.index("-j") + 1] if "-j" in a else "" for a in self._rules.get(chain, [])]


def open_table(family: int, table: str) -> "Transaction | SaveRestoreTransaction":
    """The transaction type for one (family, table)."""
    if family == 6 and table == "nat":
        return SaveRestoreTransaction(family, table)
    return Transaction(family, table)
