"""Throughput and memory of netstack.ipam.DefaultIpam on huge pools.

    python bench/bench_ipam.py [--quick]

Cases, each run in a fresh child interpreter so that RSS figures are not
polluted by the previous case:

  v4-/8      1,000,000 addresses in 10.0.0.0/8 (quick: 100,000)
  v6-/64     1,000,000 addresses in fd00::/64
  v4-dense   a pool just big enough, filled up, then churned: every release
             punches one hole and the next allocation must find it after a
             long run of taken addresses (the serial cursor has wrapped)

Per case: allocate N (serial), release N, then random release+allocate
pairs ("churn") with N held; ops/s counts each allocate or release as one
op.  Memory: tracemalloc peak while allocating N (a separate pass, since
tracing slows Python down) and the RSS growth of holding N.  Prints a
markdown table and writes bench/results/ipam.json.  Never run by pytest.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import platform
import random
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

# Run from a checkout: import the working tree's netstack first.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netstack.errors import Unavailable  # noqa: E402
from netstack.ipam import DefaultIpam  # noqa: E402
from netstack.ipamapi import PoolRequest  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "ipam.json"
CASES = ("v4-/8", "v6-/64", "v4-dense")


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pool_for(case: str, n: int) -> PoolRequest:
    if case == "v4-/8":
        return PoolRequest(pool=ipaddress.ip_network("10.0.0.0/8"))
    if case == "v6-/64":
        return PoolRequest(pool=ipaddress.ip_network("fd00:0:0:1::/64"), v6=True)
    prefix = 32 - math.ceil(math.log2(n + 2))  # smallest pool holding n
    return PoolRequest(pool=ipaddress.ip_network((int(ipaddress.IPv4Address("10.0.0.0")), prefix)))


def run_case(case: str, n: int, seed: int = 1) -> dict[str, Any]:
    ipam = DefaultIpam()
    pool = ipam.request_pool(pool_for(case, n))
    pid = pool.pool_id
    request, release = ipam.request_address, ipam.release_address
    rss0 = rss_bytes()

    t0 = time.perf_counter()
    held = [request(pid) for _ in range(n)]
    t_alloc = time.perf_counter() - t0
    rss_held = rss_bytes() - rss0
    if case == "v4-dense":  # fill what is left: the pool is then full
        while True:
            try:
                held.append(request(pid))
            except Unavailable:
                break

    rnd = random.Random(seed)
    pairs = max(1, n // 5)
    victims = [rnd.randrange(len(held)) for _ in range(pairs)]
    t0 = time.perf_counter()
    for i in victims:
        release(pid, held[i])
        held[i] = request(pid)
    t_churn = time.perf_counter() - t0

    t0 = time.perf_counter()
    for address in held:
        release(pid, address)
    t_release = time.perf_counter() - t0
    held.clear()
    ipam.release_pool(pid)

    ipam = DefaultIpam()
    pid = ipam.request_pool(pool_for(case, n)).pool_id
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    kept = [ipam.request_address(pid) for _ in range(n)]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    held_objects = sys.getsizeof(kept) + sum(sys.getsizeof(a) for a in kept)
    peak_ipam = peak - base - held_objects  # the caller's list is not the allocator's

    return {
        "case": case,
        "pool": str(pool.network),
        "n": n,
        "allocate_ops_s": n / t_alloc,
        "release_ops_s": n / t_release,
        "churn_ops_s": 2 * pairs / t_churn,
        "tracemalloc_peak_bytes": peak - base,
        "tracemalloc_peak_ipam_bytes": peak_ipam,
        "ipam_bytes_per_address": peak_ipam / n,
        "rss_delta_bytes": rss_held,
    }


def in_child(case: str, n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", case, "--n", str(n)],
        check=True, capture_output=True, text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def table(rows: list[dict[str, Any]]) -> str:
    mib = 1 << 20
    lines = [
        "| case | pool | N | allocate ops/s | release ops/s | churn ops/s "
        "| tracemalloc peak (MiB) | ipam B/addr | RSS delta (MiB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['pool']} | {r['n']:,} | {r['allocate_ops_s']:,.0f} "
            f"| {r['release_ops_s']:,.0f} | {r['churn_ops_s']:,.0f} "
            f"| {r['tracemalloc_peak_bytes'] / mib:.1f} | {r['ipam_bytes_per_address']:.0f} "
            f"| {r['rss_delta_bytes'] / mib:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 addresses, not 1,000,000")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.n)))
        return
    n = 100_000 if args.quick else 1_000_000
    rows = [in_child(case, n) for case in CASES]
    print(table(rows))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "ipam",
        "quick": args.quick,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": rows,
    }, indent=2) + "\n")
    print(f"\nwritten {RESULTS}")


if __name__ == "__main__":
    main()
