"""Benchmark the embedded resolver with dnsperf: highest lossless rate for a
local name, p50/p99 latency, and server CPU per query.

    python bench/bench_dns.py [--quick]          # pynet's resolver
    measure(("127.0.0.1", port), "web", 5, pid=..., tid=...)  # any resolver

``measure`` is the reusable core: the benchmark harness points it at Docker's
and aardvark's resolvers in the same run.  CPU is read from
/proc/PID[/task/TID]/stat (utime+stime) when a pid is given.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int | None, tid: int | None) -> float | None:
    if pid is None:
        return None
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _dnsperf(server: tuple[str, int], datafile: str, seconds: float, rate: int | None,
             verbose: bool = False) -> dict[str, object]:
    cmd = ["dnsperf", "-s", server[0], "-p", str(server[1]), "-d", datafile,
           "-l", str(seconds), "-t", "1", "-q", "500", "-b", "4096"]
    if rate:
        cmd += ["-Q", str(rate)]
    if verbose:
        cmd.append("-v")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout

    def num(label: str) -> float:
        m = re.search(rf"{label}:\s+([\d.]+)", out)
        return float(m.group(1)) if m else 0.0

    result: dict[str, object] = {"sent": int(num("Queries sent")),
                                 "completed": int(num("Queries completed")),
                                 "lost": int(num("Queries lost")), "qps": num("Queries per second"),
                                 "avg_latency_ms": num(r"Average Latency \(s\)") * 1000}
    if verbose:
        lat = sorted(float(m) for m in re.findall(r"^> \S+ .* ([\d.]+)$", out, re.M))
        if lat:
            result["p50_ms"] = lat[len(lat) // 2] * 1000
            result["p99_ms"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
            result["mean_ms"] = statistics.fmean(lat) * 1000
    return result


def measure(server_addr: tuple[str, int], name: str, seconds: float, *, pid: int | None = None,
            tid: int | None = None, start_rate: int = 10000, step: float = 1.15,
            max_rate: int = 400000) -> dict[str, object]:
    """Step the offered rate (-Q) up until dnsperf loses a query; report the
    highest lossless rate, latency percentiles there and at 1,000 q/s, and
    server CPU µs/query at that rate (when pid is given)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(f"{name} A\n")
        datafile = f.name
    try:
        best: dict[str, object] | None = None
        rate = start_rate
        while rate <= max_rate:
            run = _dnsperf(server_addr, datafile, seconds, rate)
            lossless = run["lost"] == 0 and float(run["qps"]) >= 0.97 * rate  # type: ignore[arg-type]
            if not lossless:
                break
            best = {"offered": rate, **run}
            rate = int(rate * step)
        if best is None:
            return {"error": f"lost queries already at {start_rate} q/s"}
        top = int(best["offered"])  # type: ignore[call-overload]
        cpu0 = _cpu_seconds(pid, tid)
        at_top = _dnsperf(server_addr, datafile, seconds, top, verbose=True)
        cpu1 = _cpu_seconds(pid, tid)
        low = _dnsperf(server_addr, datafile, min(seconds, 3), 1000, verbose=True)
        result: dict[str, object] = {
            "name": name, "lossless_qps": best["qps"], "offered_qps": top,
            "p50_ms": at_top.get("p50_ms"), "p99_ms": at_top.get("p99_ms"),
            "lost_in_latency_run": at_top["lost"],
            "p50_ms_at_1000qps": low.get("p50_ms"), "p99_ms_at_1000qps": low.get("p99_ms"),
        }
        if cpu0 is not None and cpu1 is not None and at_top["completed"]:
            result["cpu_us_per_query"] = (cpu1 - cpu0) / int(at_top["completed"]) * 1e6  # type: ignore[call-overload]
        return result
    finally:
        os.unlink(datafile)


_SERVE = """
import socket, sys
from netstack.dns.records import RecordTable
from netstack.dns.server import DnsServer
t = RecordTable()
t.add_endpoint("n1", "bench", "e1", ["web"], "10.0.0.2", None)
t.set_sandbox_networks("s1", ["n1"])
srv = DnsServer(t, upstreams=[])
srv.start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen()
srv.add_sandbox("s1", u, l)
print(u.getsockname()[1], srv._thread.native_id, flush=True)
sys.stdin.read()
print(dict(srv.stats()), flush=True)
srv.stop()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s steps instead of 5 s")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dns.json"))
    args = parser.parse_args()
    seconds = 1 if args.quick else 5
    proc = subprocess.Popen([sys.executable, "-c", _SERVE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        port, tid = map(int, proc.stdout.readline().split())
        time.sleep(0.2)
        result = measure(("127.0.0.1", port), "web", seconds, pid=proc.pid, tid=tid)
        proc.stdin.close()
        result["server_stats"] = proc.stdout.readline().strip()
    finally:
        proc.wait(timeout=10)
    result.update(resolver="pynet", quick=args.quick, cpus=os.cpu_count(), loadavg=os.getloadavg(),
                  reference={"docker_qps": 45000, "aardvark_qps": 47500, "dnsmasq_qps": 95000,
                             "docker_p99_ms": 5.8, "aardvark_p99_ms": 3.8,
                             "docker_cpu_us": 22, "aardvark_cpu_us": 18, "dnsmasq_cpu_us": 9})
    result["ratio_vs_docker_qps"] = round(float(result.get("lossless_qps") or 0) / 45000, 2)  # type: ignore[arg-type]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
