"""Firewall backends: the cost of one operation as the state grows.

    .venv/bin/python bench/bench_firewall.py [--quick]

For each backend (iptables: python-iptables on legacy x_tables; nftables:
libnftables sets and maps) in a fresh network namespace of its own, made
with ``ip netns add`` and deleted at the end, pass or fail:

* one add_ports of one TCP port (then its remove_ports, timed too) with
  0, 100, 500 and 1000 ports already published by another endpoint;
* add_network / remove_network of one more network.

Figures are medians (wall-clock ms, including entering the namespace as the
backend does with ``netns=``), printed as a markdown table.  Nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netstack.endpoint import PortBinding  # noqa: E402
from netstack.kernel.firewall import IptablesFirewall, NetworkRules, PortRules  # noqa: E402
from netstack.kernel.nftables import NftablesFirewall  # noqa: E402

SIZES = (0, 100, 500, 1000)
NET = NetworkRules("bench", "br-b", ("10.88.0.0/16",), ())
EXTRA = NetworkRules("extra", "br-x", ("10.89.0.0/24",), ())
ONE = PortRules("one", "br-b", "10.88.0.2", "", (PortBinding("tcp", 80, 30000),))


def _median_ms(fn: Callable[[], None], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _filler(n: int) -> PortRules:
    return PortRules("fill", "br-b", "10.88.1.2", "",
                     tuple(PortBinding("tcp", 10000 + i, 20000 + i) for i in range(n)))


def bench_backend(make: Callable[[str], Any], rounds: int, sizes: tuple[int, ...]) -> dict[str, float]:
    ns = f"pnbf-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        fw = make(f"/run/netns/{ns}")
        fw.setup()
        fw.add_network(NET)
        out: dict[str, float] = {}
        for n in sizes:
            if n:
                fw.add_ports(_filler(n))
            adds, removes = [], []
            for _ in range(rounds):
                adds.append(_median_ms(lambda: fw.add_ports(ONE), 1))
                removes.append(_median_ms(lambda: fw.remove_ports(ONE), 1))
            out[f"add_ports@{n}"] = statistics.median(adds)
            out[f"remove_ports@{n}"] = statistics.median(removes)
            if n:
                fw.remove_ports(_filler(n))
        adds, removes = [], []
        for _ in range(rounds):
            adds.append(_median_ms(lambda: fw.add_network(EXTRA), 1))
            removes.append(_median_ms(lambda: fw.remove_network(EXTRA), 1))
        out["add_network"] = statistics.median(adds)
        out["remove_network"] = statistics.median(removes)
        fw.teardown()
        return out
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def table(results: dict[str, dict[str, float]], sizes: tuple[int, ...]) -> str:
    names = list(results)
    rows = ["| operation | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    keys = [f"{op}@{n}" for n in sizes for op in ("add_ports", "remove_ports")] + ["add_network", "remove_network"]
    for k in keys:
        label = k.replace("@", " with ") + (" ports published" if "@" in k else "")
        rows.append(f"| {label} | " + " | ".join(f"{results[b][k]:.1f} ms" for b in names) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_firewall: needs root (it makes network namespaces)", file=sys.stderr)
        return 1
    rounds = 5 if args.quick else 20
    backends: dict[str, Callable[[str], Any]] = {
        "iptables": lambda ns: IptablesFirewall(netns=ns, ipv6=False),
        "nftables": lambda ns: NftablesFirewall(netns=ns, ipv6=False),
    }
    results = {name: bench_backend(make, rounds, SIZES) for name, make in backends.items()}
    print(f"IPv4 only, medians of {rounds} rounds, one namespace per backend\n")
    print(table(results, SIZES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
