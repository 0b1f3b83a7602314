"""pynet benchmarks against Docker, netavark and the CNI plugins, side by side.

    bench/run [--quick|--full] [--only FIGURE,...] [--peers docker,netavark,cni]

Everything runs inside network namespaces made for the run (``pnbh-<tag>-*``)
and data roots under a temporary directory; all of it is stopped and removed
at the end, also on failure or Ctrl-C.  Results go to bench/results/*.json
and docs/benchmarks.md (the latter unless --no-docs).

Figures: netcreate, attach, scale (+memory), ports, dns, dataplane.
Never run from the test suite; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import shlex
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

from _util import BenchError, Cleanup, fmt, run  # noqa: E402
from figures import ALIASES, FIGURES, Ctx, Result  # noqa: E402
from stacks import AARDVARK, ALL_PEERS, NETAVARK, REPO, make_stacks  # noqa: E402

RESULTS_DIR = os.path.join(BENCH_DIR, "results")
DOC = os.path.join(REPO, "docs", "benchmarks.md")


def machine() -> dict:
    def first(cmd: list[str]) -> str:
        try:
            cp = run(cmd, check=False, timeout=20)
            return ((cp.stdout or cp.stderr).strip().splitlines() or ["?"])[0]
        except Exception as exc:  # noqa: BLE001
            return f"? ({exc})"

    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for ln in f:
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_gb = int(f.readline().split()[1]) / 1024 / 1024
    distro = "?"
    if os.path.exists("/etc/os-release"):
        for ln in open("/etc/os-release"):
            if ln.startswith("PRETTY_NAME="):
                distro = ln.split("=", 1)[1].strip().strip('"')
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_gb, 1), "kernel": platform.release(),
        "distro": distro, "python": platform.python_version(),
        "versions": {
            "dockerd": first(["dockerd", "--version"]),
            "docker CLI": first(["docker", "--version"]),
            "containerd": first(["containerd", "--version"]),
            "runc": first(["runc", "--version"]),
            "netavark": first([NETAVARK, "--version"]) if NETAVARK else "missing",
            "aardvark-dns": first([AARDVARK, "--version"]) if AARDVARK else "missing",
            "CNI plugins": first(["dpkg-query", "-W", "-f", "${Version}", "containernetworking-plugins"]),
            "iptables": first(["iptables", "--version"]),
            "iperf3": first(["iperf3", "--version"]),
            "dnsperf": first(["dpkg-query", "-W", "-f", "dnsperf ${Version}", "dnsperf"]),
            "pynet": first(["git", "-C", REPO, "log", "-1", "--format=%h %s"]),
        },
    }


# --------------------------------------------------------------------------
# report


def _cell(v: object) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, dict):
        d = v.get("digits", 1)
        if "median" in v:
            return fmt(v, d)
        if "value" in v:
            return f"{v['value']:.{d}f}"
    return str(v)


def _num(v: object) -> float | None:
    if isinstance(v, dict):
        x = v.get("median", v.get("value"))
        return float(x) if isinstance(x, (int, float)) else None
    return None


def _ratio_pairs(res: dict) -> list[tuple[str, str]]:
    """(pynet column, peer column) pairs: same suffix (-api/-cli) if possible."""
    cols = res["columns"]
    pyn = [c for c in cols if c.startswith("pynet")]
    pairs = []
    if not pyn:
        return pairs
    for c in cols:
        if c.startswith("pynet"):
            continue
        suffix = c[c.index("-"):] if "-" in c and not c.startswith("kernel") else ""
        match = [p for p in pyn if p == "pynet" + suffix] or [pyn[0]]
        pairs.append((match[0], c))
    return pairs


def render_table(res: dict) -> list[str]:
    cols, labels = res["columns"], res["labels"]
    pairs = _ratio_pairs(res)
    unit = f" ({res['unit']})" if res["unit"] else ""
    lines = [f"### {res['title']}{unit}", ""]
    if res.get("command"):
        lines += [f"Command: {res['command']}.", ""]
    if res.get("note"):
        lines += [res["note"], ""]
    head = ["what"] + [labels[c] for c in cols] + [f"{labels[p]} / {labels[c]}" for p, c in pairs]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in res["rows"]:
        cells = r["cells"]
        row = [r["label"]]
        for c in cols:
            row.append("failed" if c in res["errors"] and c not in cells else _cell(cells.get(c)))
        for p, c in pairs:
            a, b = _num(cells.get(p)), _num(cells.get(c))
            row.append(f"{a / b:.2f}" if a is not None and b is not None and a > 0 and b > 0 else "–")
        lines.append("| " + " | ".join(row) + " |")
    if not res["rows"]:
        lines.append("| (no samples) |" + " |" * (len(head) - 1))
    if res["errors"]:
        lines.append("")
        for c, msg in res["errors"].items():
            lines.append(f"- **{labels.get(c, c)}** failed: {msg}")
    lines += ["", f"_{res['seconds']:.0f} s for this figure._", ""]
    return lines


def write_doc(data: dict, path: str) -> None:
    m = data["machine"]
    out = ["# Benchmarks: pynet against Docker, netavark and the CNI plugins", "",
           "<!-- Generated by bench/run.py; edit the harness, not this file. -->", "",
           "All stacks are measured in the same run, on the same machine, alternately (round-robin inside "
           "every figure), each in a network namespace of its own. Cells are **median (min–max)** over the "
           "samples; ratio columns divide pynet's median by the peer's (for latency and memory below 1 is "
           "better for pynet, for throughput and queries per second above 1 is). Latency of a CLI is the "
           "whole command, process start included. Method as in shared/PEERS.md.", "",
           "Run it: `bench/run --quick` (a few minutes, for developers) or `bench/run --full` (the published "
           "table); `--only netcreate,attach,scale,memory,ports,dns,dataplane` and `--peers docker,netavark,cni` "
           "narrow it. It needs root, installs missing Debian packages (docker.io, netavark, aardvark-dns, "
           "containernetworking-plugins, dnsperf, iperf3, runc, busybox-static), starts dockerd and pynetd in "
           "namespaces and data roots of its own, and removes everything at the end. Raw results: "
           "bench/results/*.json (not in git). Single runs on this shared 2-vCPU machine vary by 10–70 %; "
           "compare columns of one run, not numbers across runs.", "",
           "## Machine", "",
           f"- CPU: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GiB RAM",
           f"- Kernel {m['kernel']}, {m['distro']}, Python {m['python']}"]
    for k, v in m["versions"].items():
        out.append(f"- {k}: {v}")
    out += ["", "## Run", "",
            f"- Command: `{data['command']}` ({data['mode']} mode)",
            f"- Started {data['started']}, took {data['seconds']:.0f} s",
            f"- Stacks: " + ", ".join(f"{k} ({v})" for k, v in data["stack_versions"].items())]
    for k, v in data["failed_stacks"].items():
        out.append(f"- **{k} not available**: {v}")
    out += ["", "## Figures", ""]
    for res in data["results"]:
        out += render_table(res)
    out += ["## Not measured yet", ""]
    nm = list(data.get("not_measured") or [])
    if data["mode"] == "quick":
        nm.append("the full-size figures: this is a quick run (100 attaches, 50 published ports, 100 "
                  "sandboxes for memory, one 5 s iperf3 run per path, 2 s DNS steps); `bench/run --full` "
                  "gives 500/500/500, 3×10 s and 5 s steps")
    nm = nm or ["(nothing)"]
    out += [f"- {x}" for x in nm]
    out.append("")
    with open(path, "w") as f:
        f.write("\n".join(out))


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="a few seconds per figure (default)")
    g.add_argument("--full", action="store_true", help="the published table")
    ap.add_argument("--only", default="", help="comma-separated figures: " + ",".join(list(FIGURES) + list(ALIASES)))
    ap.add_argument("--peers", default=",".join(ALL_PEERS), help="comma-separated: docker,netavark,cni,kernel (the last: the same kernel work done by hand, scale figure only)")
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    ap.add_argument("--doc", default=DOC, help=argparse.SUPPRESS)
    ap.add_argument("--render", metavar="JSON", help="only rewrite docs/benchmarks.md from a results JSON")
    args = ap.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            write_doc(json.load(f), args.doc)
        print(f"report: {args.doc}")
        return 0
    if os.geteuid() != 0:
        print("bench/run needs root (it makes network namespaces)", file=sys.stderr)
        return 2
    quick = not args.full
    figs = [ALIASES.get(f, f) for f in args.only.split(",") if f] or list(FIGURES)
    for f in figs:
        if f not in FIGURES:
            ap.error(f"unknown figure {f!r}")
    figs = list(dict.fromkeys(figs))
    peers = [p for p in args.peers.split(",") if p]
    for p in peers:
        if p not in ALL_PEERS:
            ap.error(f"unknown peer {p!r}")

    tag = secrets.token_hex(2)
    cleanup = Cleanup()
    workdir = tempfile.mkdtemp(prefix=f"pnbh-{tag}-", dir="/var/tmp")
    cleanup.push(f"remove {workdir}", lambda: __import__("shutil").rmtree(workdir, ignore_errors=True))
    cleanup.push("remove socket dir", lambda: __import__("shutil").rmtree(f"/run/pnbh-{tag}", ignore_errors=True))
    started = dt.datetime.now(dt.timezone.utc)
    t_start = time.monotonic()
    command = "bench/run " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print(f"pnbh run {tag}: {'quick' if quick else 'full'}, figures {','.join(figs)}, peers {','.join(peers)}",
          flush=True)
    data: dict = {"tag": tag, "mode": "quick" if quick else "full", "command": command.strip(),
                  "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"), "machine": machine(),
                  "failed_stacks": {}, "stack_versions": {}, "results": []}
    try:
        stacks = make_stacks(tag, workdir, cleanup, peers)
        ctx = Ctx(quick=quick, tag=tag, workdir=workdir, stacks={}, failed_stacks={}, cleanup=cleanup)
        for key, st in stacks.items():
            t0 = time.monotonic()
            try:
                st.start()
                ctx.stacks[key] = st
                data["stack_versions"][key] = st.version()
                ctx.idle_rss[key] = st.daemon_rss()
                print(f"  started {key} in {time.monotonic() - t0:.1f}s", flush=True)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001
                ctx.failed_stacks[key] = str(exc)[:300]
                print(f"  {key} not available: {exc}", flush=True)
        data["failed_stacks"] = ctx.failed_stacks
        for f in figs:
            t0 = time.monotonic()
            print(f"figure {f} ...", flush=True)
            try:
                results = FIGURES[f](ctx)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001  a figure must not stop the run
                import traceback
                traceback.print_exc()
                results = [Result(key=f, title=f, unit="", columns=[], labels={}, errors={"all": str(exc)})]
            for r in results:
                r.seconds = time.monotonic() - t0
                data["results"].append(r.to_json())
            print(f"figure {f}: {time.monotonic() - t0:.0f}s", flush=True)
        not_measured = []
        if "pynet" in ctx.failed_stacks:
            not_measured.append(f"every pynet column: {ctx.failed_stacks['pynet']}")
        for r in data["results"]:
            if r["key"] == "dns" and "pynet" in r["errors"]:
                not_measured.append(f"pynet DNS: {r['errors']['pynet']}")
        if "dns" in figs and not os.path.exists(os.path.join(BENCH_DIR, "bench_dns.py")):
            not_measured.append("DNS lossless-rate search: bench/bench_dns.py not written yet; the DNS "
                                "table shows the harness's fallback (unthrottled qps and p50/p99 at 1000 qps)")
        data["not_measured"] = not_measured
    finally:
        t0 = time.monotonic()
        cleanup.run()
        print(f"cleanup: {time.monotonic() - t0:.1f}s", flush=True)
    data["seconds"] = time.monotonic() - t_start
    os.makedirs(RESULTS_DIR, exist_ok=True)
    jpath = os.path.join(RESULTS_DIR, f"{started.strftime('%Y%m%dT%H%M%S')}-{data['mode']}.json")
    with open(jpath, "w") as f:
        json.dump(data, f, indent=1, default=str)
    print(f"results: {jpath}")
    if not args.no_docs:
        write_doc(data, args.doc)
        print(f"report: {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
