"""The figures of issue 3.  Each takes a Ctx and returns one or more Result
tables; stacks are run alternately (round-robin) inside every figure, and a
stack that fails is marked "failed: reason" in its column while the others
go on.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import re
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from _util import (BenchError, fmt, iptables_lines, netns_add, netns_del, netns_path, ping, popen, run,
                   stop_pid, proc_starttime, summary, timed)
from stacks import Net, Sandbox, Stack, sandbox_netns

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Ctx:
    quick: bool
    tag: str
    workdir: str
    stacks: dict[str, Stack]          # started ones only
    failed_stacks: dict[str, str]     # key -> reason (start failed)
    cleanup: Any
    idle_rss: dict = field(default_factory=dict)

    def n(self, quick: int, full: int) -> int:
        return quick if self.quick else full


@dataclass
class Result:
    key: str
    title: str
    unit: str
    columns: list[str]
    labels: dict[str, str]
    command: str = ""
    note: str = ""
    higher_is_better: bool = False
    rows: list[dict] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def row(self, label: str) -> dict:
        for r in self.rows:
            if r["label"] == label:
                return r
        r = {"label": label, "cells": {}}
        self.rows.append(r)
        return r

    def put(self, label: str, col: str, value: Any) -> None:
        self.row(label)["cells"][col] = value

    def fail(self, col: str, exc: BaseException | str) -> None:
        msg = str(exc) if not isinstance(exc, str) else exc
        if isinstance(exc, BaseException) and not isinstance(exc, BenchError):
            msg = f"{type(exc).__name__}: {exc}"
        self.errors.setdefault(col, msg.strip().replace("\n", " ")[:300])
        if isinstance(exc, BaseException) and not isinstance(exc, BenchError):
            traceback.print_exception(exc)

    def ok(self, col: str) -> bool:
        return col not in self.errors

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _result(ctx: Ctx, key: str, title: str, unit: str, cols: Sequence[tuple[str, str, str]], **kw: Any) -> Result:
    """cols: (column key, stack key, label).  Stacks that did not start are
    failed up front with their start error."""
    res = Result(key=key, title=title, unit=unit, columns=[c for c, _, _ in cols],
                 labels={c: l for c, _, l in cols}, **kw)
    for c, s, _ in cols:
        if s and s not in ctx.stacks:
            res.fail(c, ctx.failed_stacks.get(s, "not requested"))
    return res


def _guard(res: Result, col: str, fn: Callable[[], Any]) -> Any:
    if not res.ok(col):
        return None
    try:
        return fn()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        res.fail(col, exc)
        return None


def _stack_cols(ctx: Ctx, keys: Sequence[str], suffix: str = "") -> list[tuple[str, str, str]]:
    from stacks import make_stacks  # noqa: F401  (labels only)
    labels = {"pynet": "pynet", "docker": "Docker", "netavark": "netavark",
              "cni": "CNI bridge", "cnifw": "CNI bridge+firewall", "kernel": "by hand (kernel)"}
    out = []
    for k in keys:
        if k in ctx.stacks or k in ctx.failed_stacks:
            out.append((k + suffix, k, labels.get(k, k) + (f" {suffix.strip('-')}" if suffix else "")))
    return out


def _growth(samples: list[float], k: int = 20) -> float:
    """Median of the last k over median of the first k."""
    return statistics.median(samples[-k:]) / statistics.median(samples[:k])


def _first_last(res: Result, col: str, samples: list[float], what: str, k: int = 20) -> None:
    if not samples:
        return
    first, last = samples[:k], samples[-k:]
    res.put(f"{what}: first {len(first)}", col, summary(first))
    res.put(f"{what}: last {len(last)}", col, summary(last))
    res.put(f"{what}: last/first (medians)", col, {"value": _growth(samples, k), "digits": 2})


def _sanity(res: Result, col: str, ok: int, total: int) -> None:
    res.put("sanity checks passed", col, f"{ok}/{total}")


def _cleanup_sbs(stack: Stack, sbs: list[Sandbox]) -> list[float]:
    times = []
    for sb in sbs:
        try:
            ms, _ = timed(lambda: stack.remove_sandbox(sb))
            times.append(ms)
        except BaseException as exc:  # keep removing
            print(f"  remove {sb.name} on {stack.name}: {exc}", flush=True)
    return times


# ==========================================================================
# 1. network create / rm


def fig_netcreate(ctx: Ctx) -> list[Result]:
    n = ctx.n(10, 30)
    cols = []
    for k in ("pynet", "docker"):
        for mode in ("api", "cli"):
            if k in ctx.stacks or k in ctx.failed_stacks:
                cols.append((f"{k}-{mode}", k, f"{'pynet' if k == 'pynet' else 'Docker'} {mode.upper()}"))
    res = _result(ctx, "netcreate", "Network create / remove (bridge, default IPAM pool)", "ms", cols,
                  command="API: POST /networks/create {Name, Driver: bridge} then DELETE /networks/{id} "
                          "(one keep-alive connection); CLI: `docker|pynet -H unix://S network create -d bridge "
                          "NAME` then `... network rm NAME`, process start included; CLI floor: "
                          "`... network ls`", note=f"n={n} per cell, variants interleaved round by round.")
    samples: dict[tuple[str, str], list[float]] = {}
    for i in range(n):
        for col, sk, _ in cols:
            if not res.ok(col):
                continue
            stack, cli = ctx.stacks[sk], col.endswith("-cli")

            def one() -> None:
                name = f"pnbh-nc-{col}-{i}"
                ms_c, net = timed(lambda: stack.create_network(name, cli=cli))
                ms_r, _ = timed(lambda: stack.remove_network(net, cli=cli))
                samples.setdefault(("create", col), []).append(ms_c)
                samples.setdefault(("rm", col), []).append(ms_r)
                if cli:
                    ms_f, _ = timed(lambda: run(stack.cli() + ["network", "ls"]))
                    samples.setdefault(("CLI floor: network ls", col), []).append(ms_f)
            _guard(res, col, one)
    for (row, col), xs in samples.items():
        res.put(row, col, summary(xs))
    return [res]


# ==========================================================================
# 2. attach / detach


def fig_attach(ctx: Ctx) -> list[Result]:
    n = ctx.n(10, 30)
    cols = []
    for k in ("pynet", "docker"):
        if k in ctx.stacks or k in ctx.failed_stacks:
            cols += [(f"{k}-api", k, f"{'pynet' if k == 'pynet' else 'Docker'} API"),
                     (f"{k}-cli", k, f"{'pynet' if k == 'pynet' else 'Docker'} CLI")]
    cols += _stack_cols(ctx, ("netavark", "cni", "cnifw"))
    res = _result(ctx, "attach", "Attach / detach one sandbox to a bridge network that already has one member",
                  "ms", cols,
                  command="Docker: POST /networks/{id}/connect|disconnect {Container} of a running container "
                          "(API) or `docker network connect|disconnect NET C` (CLI); pynet: POST "
                          "/networks/{id}/connect|disconnect {Container: SANDBOX} for a sandbox made by POST "
                          "/sandboxes/create, or `pynet network connect|disconnect`; netavark setup|teardown "
                          "of a fresh netns; CNI bridge (+firewall) ADD/DEL of a fresh netns (`ip netns add` "
                          "not timed)",
                  note=f"n={n}; a keeper sandbox stays on the network so the bridge exists; after every "
                       "attach the new sandbox pings the keeper (untimed).")
    state: dict[str, dict] = {}
    for col, sk, _ in cols:
        def setup(col=col, sk=sk) -> None:
            st = ctx.stacks[sk]
            net = st.create_network(f"pnbh-att-{col}", st.next_subnet())
            keeper = st.run_on_network(net, f"pnbh-att-keep-{col}")
            kip = st.ip_of(net, keeper)
            sb = st.new_sandbox(f"pnbh-att-c-{col}") if st.has_network_api else None
            state[col] = {"net": net, "keeper": keeper, "kip": kip, "sb": sb, "ok": 0, "tot": 0,
                          "att": [], "det": []}
        _guard(res, col, setup)
    for i in range(n):
        for col, sk, _ in cols:
            if not res.ok(col):
                continue
            st, s = ctx.stacks[sk], state[col]
            cli = col.endswith("-cli")

            def one(st=st, s=s, cli=cli, col=col) -> None:
                sb = s["sb"] or st.new_sandbox(f"pnbh-att-{col}-{i}")
                ms_a, _ = timed(lambda: st.attach(s["net"], sb, cli=cli))
                ns = sandbox_netns(st, sb)
                if ns and s["kip"]:
                    s["tot"] += 1
                    s["ok"] += ping(ns, s["kip"])
                ms_d, _ = timed(lambda: st.detach(s["net"], sb, cli=cli))
                if not s["sb"]:
                    st.remove_sandbox(sb)
                s["att"].append(ms_a)
                s["det"].append(ms_d)
            _guard(res, col, one)
    for col, sk, _ in cols:
        s = state.get(col)
        if not s:
            continue
        res.put("attach", col, summary(s["att"]))
        res.put("detach", col, summary(s["det"]))
        _sanity(res, col, s["ok"], s["tot"])
        st = ctx.stacks[sk]
        for sb in (s["sb"], s["keeper"]):
            if sb:
                _guard(res, col, lambda: st.remove_sandbox(sb))
        try:
            st.remove_network(s["net"])
        except BaseException as exc:
            print(f"  {col}: remove network: {exc}", flush=True)
    return [res]


# ==========================================================================
# 3. scale: N attaches to one network, and daemon memory at N


def fig_scale(ctx: Ctx) -> list[Result]:
    n = ctx.n(100, 500)
    cols = _stack_cols(ctx, ("pynet", "docker", "netavark", "cni", "cnifw", "kernel"))
    res = _result(ctx, "scale", f"Per-attach cost over {n} attaches to one bridge network", "ms", cols,
                  command="each stack's attach as in the attach figure (Docker and pynet through the API); "
                          "the sandbox (container with --network none / pynet sandbox / fresh netns) is made "
                          "before each attach, untimed",
                  note=f"one stack at a time, its {n} attaches interleaved with the by-hand floor's (the "
                       "floor's column: beside pynet), everything removed before the next stack; iptables "
                       "lines are iptables-nft-save + iptables-legacy-save in the stack's host namespace; the "
                       "sanity check pings the last sandbox from the first.")
    mem = _result(ctx, "memory", f"Daemon resident memory, idle and with {n} sandboxes attached", "MB",
                  _stack_cols(ctx, ("pynet", "docker")),
                  command="VmRSS from /proc: pynetd (+children); dockerd, containerd (and the "
                          "containerd-shim-runc-v2 processes, shown apart; not networking, but what a Docker "
                          "sandbox costs)",
                  note="idle = right after the daemon started and answered; one sample each.")
    # One stack at a time, each interleaved with the by-hand floor: another
    # stack's 500 containers (Docker's: 500 shim processes) loading the
    # machine would show as growth in whichever stack is measured.
    floor = next((c for c in cols if c[1] == "kernel"), None)
    for col, sk, label in (c for c in cols if c is not floor):
        phase = [(col, sk, label)] + ([floor] if floor and res.ok(floor[0]) else [])
        state = _scale_attaches(ctx, res, n, phase)
        if col in state:
            _scale_report(ctx, res, mem, col, sk, state[col])
        fs = state.get(floor[0]) if floor else None
        if fs and fs["att"]:
            res.put("by-hand floor in the same phase: last/first", col, {"value": _growth(fs["att"]), "digits": 2})
            if col == "pynet":  # the floor's own column: measured beside pynet
                _scale_report(ctx, res, mem, floor[0], floor[1], fs, checks=False)
        for c, csk, _ in phase:
            if c in state:
                _scale_remove(ctx, res, c, csk, state[c], record=c == col)
    for col in mem.columns:
        if col in res.errors and mem.ok(col):
            mem.fail(col, res.errors[col])
    return [res, mem]


def _scale_attaches(ctx: Ctx, res: Result, n: int, cols: list[tuple[str, str, str]]) -> dict[str, dict]:
    """n attaches interleaved across `cols`; each column's network,
    sandboxes and attach times."""
    state: dict[str, dict] = {}
    for col, sk, _ in cols:
        def setup(col=col, sk=sk) -> None:
            st = ctx.stacks[sk]
            net = st.create_network(f"pnbh-scale-{col}", "10.80.0.0/16" if not st.has_network_api else
                                    st.next_subnet())
            state[col] = {"net": net, "sbs": [], "att": [], "lines0": st.iptables_lines()}
        _guard(res, col, setup)
    t0 = time.monotonic()
    for i in range(n):
        for col, sk, _ in cols:
            if not res.ok(col):
                continue
            st, s = ctx.stacks[sk], state[col]

            def one(st=st, s=s, col=col) -> None:
                sb = st.new_sandbox(f"pnbh-sc-{col}-{i}")
                s["sbs"].append(sb)
                ms, _ = timed(lambda: st.attach(s["net"], sb))
                s["att"].append(ms)
            _guard(res, col, one)
    print(f"  scale ({', '.join(c for c, _, _ in cols)}): {n} rounds in {time.monotonic() - t0:.0f}s", flush=True)
    return state


def _scale_report(ctx: Ctx, res: Result, mem: Result, col: str, sk: str, s: dict, *, checks: bool = True) -> None:
    """First/last attach cost and the total; with `checks`, also iptables
    lines, a ping across the network and the daemon's memory."""
    st = ctx.stacks[sk]
    _first_last(res, col, s["att"], "attach")
    if s["att"]:
        res.put(f"total for {len(s['att'])} attaches (s)", col, {"value": sum(s["att"]) / 1000, "digits": 1})
    if not checks:
        return

    def check() -> None:
        res.put("iptables lines before → after", col, f"{s['lines0']} → {st.iptables_lines()}")
        if len(s["sbs"]) >= 2:
            a, b = s["sbs"][0], s["sbs"][-1]
            ns, ip = sandbox_netns(st, a), st.ip_of(s["net"], b)
            _sanity(res, col, int(bool(ns and ip and ping(ns, ip))), 1)
        rss = st.daemon_rss()
        if col in mem.columns and rss:
            idle = ctx.idle_rss.get(sk, {})
            for k, v in rss.items():
                if k.endswith("count"):
                    mem.put(f"{k} at {len(s['sbs'])}", col, {"value": v, "digits": 0})
                else:
                    mem.put(f"{k}: idle", col, {"value": idle.get(k, 0.0), "digits": 1})
                    mem.put(f"{k}: at {len(s['sbs'])} sandboxes", col, {"value": v, "digits": 1})
    _guard(res, col, check)


def _scale_remove(ctx: Ctx, res: Result, col: str, sk: str, s: dict, *, record: bool) -> None:
    st = ctx.stacks[sk]
    rm = _cleanup_sbs(st, s["sbs"])
    if rm and record:
        res.put("remove sandbox (all)", col, summary(rm))
    try:
        st.remove_network(s["net"])
    except BaseException as exc:
        print(f"  {col}: remove network: {exc}", flush=True)


# ==========================================================================
# 4. published ports


def fig_ports(ctx: Ctx) -> list[Result]:
    n = ctx.n(50, 500)
    cols = _stack_cols(ctx, ("pynet", "docker", "netavark", "cnifw"))
    res = _result(ctx, "ports", f"{n} sandboxes with one published port each", "ms", cols,
                  command="one call that makes a sandbox on the network with `-p HOSTPORT:80/tcp`: pynet POST "
                          "/sandboxes/create {Name, Networks:[{Network}], Ports:[\"HP:80/tcp\"]}; Docker POST "
                          "/containers/create (PortBindings) + start (container start included); netavark setup "
                          "with port_mappings; CNI bridge+firewall+portmap ADD (netavark/CNI include `ip netns "
                          "add`). Control: the same without the port, after the published ones (quick mode: 20 of them).",
                  note="extra processes and their memory are counted in the stack's host namespace (Docker's "
                       "docker-proxy); the sanity check fetches a few bytes through the last published port "
                       "from the stack's 127.0.0.1.")
    state: dict[str, dict] = {}
    for col, sk, _ in cols:
        def setup(col=col, sk=sk) -> None:
            st = ctx.stacks[sk]
            net = st.create_network(f"pnbh-pp-{col}", st.next_subnet())
            state[col] = {"net": net, "sbs": [], "pub": [], "ctl": [], "lines": [st.iptables_lines()],
                          "procs0": st.extra_processes(), "rss0": st.daemon_rss().get("daemon")}
        _guard(res, col, setup)
    base_port = 20000
    n_ctl = ctx.n(20, n)
    for phase in ("pub", "ctl"):
        for i in range(n if phase == "pub" else n_ctl):
            for col, sk, _ in cols:
                if not res.ok(col):
                    continue
                st, s = ctx.stacks[sk], state[col]

                def one(st=st, s=s, col=col) -> None:
                    ports = [f"{base_port + i}:80/tcp"] if phase == "pub" else []
                    ms, sb = timed(lambda: st.run_on_network(s["net"], f"pnbh-{phase}-{col}-{i}", ports))
                    s["sbs"].append(sb)
                    s[phase].append(ms)
                _guard(res, col, one)
        for col, sk, _ in cols:
            if res.ok(col):
                s, st = state[col], ctx.stacks[sk]
                _guard(res, col, lambda: s["lines"].append(st.iptables_lines()))
                if phase == "pub":
                    def measure(st=st, s=s) -> None:
                        s["procs1"] = st.extra_processes()
                        s["rss1"] = st.daemon_rss().get("daemon")
                        hp = base_port + n - 1
                        last = s["sbs"][-1]
                        ns = sandbox_netns(st, last)
                        s["sanity"] = bool(ns) and tcp_roundtrip(ns, 80, st.host_ns, "127.0.0.1", hp)
                    _guard(res, col, measure)
    for col, sk, _ in cols:
        s = state.get(col)
        if not s:
            continue
        st = ctx.stacks[sk]
        _first_last(res, col, s["pub"], "publish")
        if s["ctl"]:
            res.put("control (no port): all", col, summary(s["ctl"]))
            res.put("extra time per publish (median difference)", col,
                    {"value": summary(s["pub"])["median"] - summary(s["ctl"])["median"], "digits": 1})
        ln = s["lines"]
        if len(ln) == 3:
            res.put(f"iptables lines: before → {n} published → +{n_ctl} unpublished", col, f"{ln[0]} → {ln[1]} → {ln[2]}")
            res.put("iptables lines per published port (net of a plain sandbox)", col,
                    {"value": (ln[1] - ln[0]) / n - (ln[2] - ln[1]) / n_ctl, "digits": 1})
        if "procs1" in s:
            (c0, m0), (c1, m1) = s["procs0"], s["procs1"]
            res.put("extra processes at N published (count / MB)", col, f"{c1 - c0} / {m1 - m0:.0f} MB")
            if s.get("rss0") is not None and s.get("rss1") is not None:
                res.put("daemon RSS before → at N published (MB)", col, f"{s['rss0']:.1f} → {s['rss1']:.1f}")
            _sanity(res, col, int(bool(s.get("sanity"))), 1)
        _cleanup_sbs(st, s["sbs"])
        try:
            st.remove_network(s["net"])
        except BaseException as exc:
            print(f"  {col}: remove network: {exc}", flush=True)
    return [res]


_SERVER = ("import socket,sys;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
           "s.bind(('0.0.0.0',int(sys.argv[1])));s.listen(4);s.settimeout(15);print('up',flush=True);"
           "c,_=s.accept();c.sendall(b'pnbh-ok');c.close()")
_CLIENT = ("import socket,sys,time\nfor _ in range(30):\n try:\n  c=socket.create_connection((sys.argv[1],"
           "int(sys.argv[2])),3);d=c.recv(16);print(d.decode());break\n except OSError:time.sleep(0.1)")


def tcp_roundtrip(server_ns: str, sport: int, client_ns: str, ip: str, port: int) -> bool:
    """A server in server_ns sends 'pnbh-ok'; the client must receive it."""
    srv = popen([sys.executable, "-c", _SERVER, str(sport)], server_ns, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL)
    try:
        srv.stdout.readline()
        cp = run([sys.executable, "-c", _CLIENT, ip, str(port)], netns=client_ns, check=False, timeout=20)
        return "pnbh-ok" in cp.stdout
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()


# ==========================================================================
# 5. DNS


_PROBE = """
import socket,struct,sys
name=sys.argv[3]
q=struct.pack('>HHHHHH',0x5eed,0x0100,1,0,0,0)+b''.join(bytes([len(p)])+p.encode() for p in name.split('.'))+b'\\0'+struct.pack('>HH',1,1)
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(2)
s.sendto(q,(sys.argv[1],int(sys.argv[2])))
d=s.recv(512);print('ancount',struct.unpack('>H',d[6:8])[0],'rcode',d[3]&15)
"""


def dns_probe(ns: str, ip: str, port: int, name: str) -> str | None:
    """None if the server answers `name` with at least one record, else why not."""
    cp = run([sys.executable, "-c", _PROBE, ip, str(port), name], netns=ns, check=False, timeout=10)
    m = re.search(r"ancount (\d+) rcode (\d+)", cp.stdout)
    if not m:
        return f"no answer from {ip}:{port} ({(cp.stderr.strip().splitlines() or ['?'])[-1][:120]})"
    if int(m.group(1)) == 0:
        return f"{ip}:{port} answers rcode {m.group(2)} with no record for {name}"
    return None


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def dnsperf_run(ns: str, ip: str, port: int, qfile: str, seconds: int, qps: int | None = None,
                verbose: bool = False, server_pid: int | None = None) -> dict:
    cmd = ["dnsperf", "-s", ip, "-p", str(port), "-d", qfile, "-l", str(seconds)]
    if qps:
        cmd += ["-Q", str(qps)]
    if verbose:
        cmd += ["-v"]
    t0 = _cpu_ticks(server_pid) if server_pid else None
    cp = run(cmd, netns=ns, timeout=seconds + 30)
    out: dict[str, Any] = {}
    m = re.search(r"Queries per second:\s+([\d.]+)", cp.stdout)
    out["qps"] = float(m.group(1)) if m else None
    m = re.search(r"Queries lost:\s+(\d+) \(([\d.]+)%\)", cp.stdout)
    out["loss_pct"] = float(m.group(2)) if m else None
    m = re.search(r"Queries completed:\s+(\d+)", cp.stdout)
    done = int(m.group(1)) if m else 0
    if t0 is not None and done:
        ticks = _cpu_ticks(server_pid) - t0
        out["cpu_us_per_query"] = ticks / os.sysconf("SC_CLK_TCK") * 1e6 / done
    if verbose:
        lat = sorted(float(x) for x in re.findall(r"^> \S+ .*? ([\d.]+)\s*$", cp.stdout, re.M))
        if lat:
            out["p50_ms"] = lat[len(lat) // 2] * 1000
            out["p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    return out


def _bench_dns_measure() -> Callable | None:
    path = os.path.join(BENCH_DIR, "bench_dns.py")
    if not os.path.exists(path):
        return None
    spec = importlib.util.spec_from_file_location("bench_dns", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, "measure", None)


def _call_measure(measure: Callable, cand: dict, netns: str) -> dict | None:
    """Call bench_dns.measure with the arguments it names, from a short-lived
    thread inside `netns` (its dnsperf child inherits that namespace), or
    return None if it needs an argument we cannot give."""
    import threading
    from _util import CLONE_NEWNET, _libc
    sig = inspect.signature(measure)
    kw = {}
    for p in sig.parameters.values():
        if p.name in cand:
            kw[p.name] = cand[p.name]
        elif p.default is inspect.Parameter.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            return None
    box: dict = {}

    def work() -> None:
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise BenchError(f"setns {netns} failed")
            box["r"] = measure(**kw)
        except BaseException as exc:  # handed back to the caller
            box["e"] = exc
        finally:
            os.close(fd)

    t = threading.Thread(target=work, name="pnbh-dns")
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    r = box["r"]
    if isinstance(r, dict) and r.get("error"):
        raise BenchError(f"bench_dns: {r['error']}")
    return r if isinstance(r, dict) else {"result": r}


_DNS_LABELS = {"lossless_qps": "qps, highest lossless rate", "offered_qps": "qps offered at that rate",
               "p50_ms": "p50 ms at that rate", "p99_ms": "p99 ms at that rate",
               "p50_ms_at_1000qps": "p50 ms @1000 qps", "p99_ms_at_1000qps": "p99 ms @1000 qps",
               "cpu_us_per_query": "server CPU µs/query", "lost_in_latency_run": "lost in latency run"}


def fig_dns(ctx: Ctx) -> list[Result]:
    measure = _bench_dns_measure()
    if measure:
        rounds, secs = ctx.n(1, 2), ctx.n(2, 5)
    else:
        rounds, secs = ctx.n(2, 3), ctx.n(3, 10)
    cols = [c for c in _stack_cols(ctx, ("pynet", "docker", "netavark"))]
    cols = [(c, s, "aardvark-dns (netavark)" if s == "netavark" else
             ("Docker embedded resolver" if s == "docker" else "pynet 127.0.0.11")) for c, s, _ in cols]
    res = _result(ctx, "dns", "DNS: A query for a sandbox name (UDP)", "", cols,
                  command=(f"bench/bench_dns.py measure((IP, 53), 'pnbh-dns-target', {secs}, pid=SERVER, "
                           "start_rate=2000): dnsperf -Q stepped up ×1.15 until a query is lost, then -v at the "
                           "highest lossless rate and at 1000 qps" if measure else
                           f"`dnsperf -s IP -d q.txt -l {secs}` unthrottled, then `-Q 1000 -v` (p50/p99 from "
                           "the per-query lines)") + " run in the client sandbox's netns; Docker: 127.0.0.11 in a "
                          "container on a user-defined network; aardvark-dns: the gateway IP of a netavark "
                          "network with dns_enabled; pynet: 127.0.0.11 in a pynet sandbox",
                  note=f"{rounds} interleaved round(s), {secs} s per dnsperf step; q.txt = one line `pnbh-dns-target A`; "
                       "server CPU from /proc (dockerd, aardvark-dns, pynetd).",
                  higher_is_better=False)
    state: dict[str, dict] = {}
    qfile = os.path.join(ctx.workdir, "dns-q.txt")
    with open(qfile, "w") as f:
        f.write("pnbh-dns-target A\n")
    for col, sk, _ in cols:
        def setup(col=col, sk=sk) -> None:
            st = ctx.stacks[sk]
            net = st.create_network(f"pnbh-dns-{col}", st.next_subnet(), dns=True)
            st_ = {"net": net, "sbs": []}
            state[col] = st_
            st_["sbs"].append(st.run_on_network(net, "pnbh-dns-target"))
            client = st.run_on_network(net, "pnbh-dns-client")
            st_["sbs"].append(client)
            ns, ip, port = st.dns_server(net, client)
            why = None
            for _ in range(20):  # resolvers may come up a moment after the attach
                why = dns_probe(ns, ip, port, "pnbh-dns-target")
                if not why:
                    break
                time.sleep(0.25)
            if why:
                raise BenchError(("not yet available: " if sk == "pynet" else "") + why)
            st_.update(ns=ns, ip=ip, port=port, runs=[])
        _guard(res, col, setup)

    def server_pid(sk: str) -> int | None:
        st = ctx.stacks[sk]
        if sk == "netavark":
            return st.aardvark_pid()
        return st.proc.pid if getattr(st, "proc", None) else None

    for r in range(rounds):
        for col, sk, _ in cols:
            if not res.ok(col):
                continue
            s = state[col]

            def one(s=s, sk=sk) -> None:
                pid = server_pid(sk)
                if measure:
                    out = _call_measure(measure, {
                        "server_addr": (s["ip"], s["port"]), "name": "pnbh-dns-target", "seconds": secs,
                        "pid": pid, "start_rate": 2000}, s["ns"])
                    if out is not None:
                        s["runs"].append({_DNS_LABELS.get(k, k): v for k, v in out.items()})
                        return
                u = dnsperf_run(s["ns"], s["ip"], s["port"], qfile, secs, server_pid=pid)
                v = dnsperf_run(s["ns"], s["ip"], s["port"], qfile, secs, qps=1000, verbose=True)
                s["runs"].append({"qps unthrottled": u.get("qps"), "loss % unthrottled": u.get("loss_pct"),
                                  "server CPU µs/query": u.get("cpu_us_per_query"),
                                  "p50 ms @1000 qps": v.get("p50_ms"), "p99 ms @1000 qps": v.get("p99_ms")})
            _guard(res, col, one)
    for col, sk, _ in cols:
        s = state.get(col)
        if not s:
            continue
        keys: list[str] = []
        for run_ in s.get("runs", []):
            keys += [k for k, v in run_.items() if isinstance(v, (int, float)) and k not in keys]
        for k in keys:
            sm = summary(r_[k] for r_ in s["runs"] if isinstance(r_.get(k), (int, float)))
            if sm:
                sm["digits"] = 0 if k.startswith("qps") or k.startswith("lost") else 3
                sm["higher_is_better"] = k.startswith("qps")
                res.put(k, col, sm)
        st = ctx.stacks[sk]
        if sk == "netavark" and st.aardvark_pid():
            from _util import rss_mb
            res.put("server RSS MB", col, {"value": rss_mb(st.aardvark_pid()), "digits": 1})
        _cleanup_sbs(st, s["sbs"])
        try:
            st.remove_network(s["net"])
        except BaseException as exc:
            print(f"  {col}: remove network: {exc}", flush=True)
    return [res]


# ==========================================================================
# 6. dataplane


def _iperf(server_ns: str, client_ns: str, ip: str, port: int, secs: int, sport: int | None = None) -> float:
    """Gbit/s of one TCP stream from client_ns to ip:port; the server listens
    on `sport` (defaults to port) in server_ns."""
    sport = sport or port
    srv = popen(["iperf3", "-s", "-1", "-p", str(sport)], server_ns, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
    try:
        last = None
        for _ in range(40):
            cp = run(["iperf3", "-c", ip, "-p", str(port), "-t", str(secs), "-J"], netns=client_ns,
                     check=False, timeout=secs + 30)
            try:
                j = json.loads(cp.stdout)
            except ValueError:
                j = {"error": cp.stderr.strip()[-160:]}
            if "error" not in j:
                return j["end"]["sum_received"]["bits_per_second"] / 1e9
            last = j["error"]
            if "refused" not in str(last) and "unable to connect" not in str(last):
                break
            time.sleep(0.1)
        raise BenchError(f"iperf3 to {ip}:{port}: {last}")
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()


def _kernel_paths(ctx: Ctx) -> dict[str, tuple[str, str, str]]:
    """Hand-made veth pair and veth+bridge (in a third 'switch' netns)."""
    t = ctx.tag
    names = [f"pnbh-{t}-k{x}" for x in ("va", "vb", "ba", "bb", "bs")]
    for nm in names:
        netns_add(nm)
        ctx.cleanup.push(f"netns {nm}", lambda nm=nm: netns_del(nm))
    va, vb, ba, bb, bs = names
    run(["ip", "-n", va, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", vb])
    for nm, ip in ((va, "10.250.0.1/24"), (vb, "10.250.0.2/24")):
        run(["ip", "-n", nm, "addr", "add", ip, "dev", "eth0"])
        run(["ip", "-n", nm, "link", "set", "eth0", "up"])
    run(["ip", "-n", bs, "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", bs, "link", "set", "br0", "up"])
    for i, (nm, ip) in enumerate(((ba, "10.251.0.1/24"), (bb, "10.251.0.2/24"))):
        run(["ip", "-n", nm, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}", "netns", bs])
        run(["ip", "-n", bs, "link", "set", f"p{i}", "master", "br0", "up"])
        run(["ip", "-n", nm, "addr", "add", ip, "dev", "eth0"])
        run(["ip", "-n", nm, "link", "set", "eth0", "up"])
    return {"kernel-veth": (netns_path(vb), netns_path(va), "10.250.0.2"),
            "kernel-bridge": (netns_path(bb), netns_path(ba), "10.251.0.2")}


def fig_dataplane(ctx: Ctx) -> list[Result]:
    # Single iperf3 runs here swing by ±20 %: many short interleaved rounds
    # and medians say more than a few long ones.
    rounds, secs = ctx.n(1, 9), 5
    kcols = [("kernel-veth", "", "hand-made veth pair"), ("kernel-bridge", "", "hand-made veth+bridge")]
    scols = _stack_cols(ctx, ("pynet", "docker", "netavark", "cnifw"))
    res = _result(ctx, "dataplane", "TCP throughput, one iperf3 stream", "Gbit/s", kcols + scols,
                  higher_is_better=True,
                  command=f"`iperf3 -c IP -p PORT -t {secs} -J` against `iperf3 -s -1` in the target netns",
                  note=f"{rounds} interleaved round(s) of {secs} s per path; 'host → published port' runs the "
                       "client in the stack's host namespace against 127.0.0.1:HOSTPORT (Docker: through "
                       "docker-proxy); the hand-made bridge lives in a third netns.")
    paths: dict[tuple[str, str], tuple[str, str, str, int, int]] = {}  # (row, col) -> server ns, client ns, ip, port, sport
    try:
        for col, (sns, cns, ip) in _kernel_paths(ctx).items():
            paths[("sandbox → sandbox", col)] = (sns, cns, ip, 5201, 5201)
    except BaseException as exc:
        for c, _, _ in kcols:
            res.fail(c, exc)
    state: dict[str, dict] = {}
    for col, sk, _ in scols:
        def setup(col=col, sk=sk) -> None:
            st = ctx.stacks[sk]
            net = st.create_network(f"pnbh-dp-{col}", st.next_subnet())
            s = state[col] = {"net": net, "sbs": []}
            a = st.run_on_network(net, "pnbh-dp-a")
            s["sbs"].append(a)
            b = st.run_on_network(net, "pnbh-dp-b", ["25201:5201/tcp"])
            s["sbs"].append(b)
            na, nb, ipb = sandbox_netns(st, a), sandbox_netns(st, b), st.ip_of(net, b)
            if not (na and nb and ipb):
                raise BenchError("cannot find the sandboxes' namespaces or addresses")
            paths[("sandbox → sandbox", col)] = (nb, na, ipb, 5201, 5201)
            paths[("host → sandbox IP", col)] = (nb, st.host_ns, ipb, 5201, 5201)
            paths[("host 127.0.0.1 → published port", col)] = (nb, st.host_ns, "127.0.0.1", 25201, 5201)
        _guard(res, col, setup)
    samples: dict[tuple[str, str], list[float]] = {}
    errors: dict[tuple[str, str], str] = {}
    for r in range(rounds):
        for (row, col), (sns, cns, ip, port, sport) in paths.items():
            if not res.ok(col) or (row, col) in errors:
                continue
            try:
                samples.setdefault((row, col), []).append(_iperf(sns, cns, ip, port, secs, sport))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                errors[(row, col)] = f"failed: {exc}"[:200]
    for (row, col), xs in samples.items():
        sm = summary(xs)
        if sm:
            sm["digits"] = 2
            res.put(row, col, sm)
    for (row, col), msg in errors.items():
        res.put(row, col, msg)
    for col, sk, _ in scols:
        s = state.get(col)
        if s:
            _cleanup_sbs(ctx.stacks[sk], s["sbs"])
            try:
                ctx.stacks[sk].remove_network(s["net"])
            except BaseException as exc:
                print(f"  {col}: remove network: {exc}", flush=True)
    return [res]


FIGURES: dict[str, Callable[[Ctx], list[Result]]] = {
    "netcreate": fig_netcreate,
    "attach": fig_attach,
    "scale": fig_scale,      # also gives "memory"
    "ports": fig_ports,
    "dns": fig_dns,
    "dataplane": fig_dataplane,
}
ALIASES = {"memory": "scale"}
