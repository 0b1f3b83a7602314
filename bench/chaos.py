"""Reliability figures: the crash harness in full, API latency under 50
concurrent clients, and a long DNS fuzz run against a running pynetd.

    python bench/chaos.py [--kills N] [--seed S] [--load] [--dns-packets N] [--skip-chaos]

- chaos: tests/chaos/harness.py for N rounds (one SIGKILL each: a crash
  point or a killer thread at a random moment), every invariant and every
  acknowledged operation checked after each restart;
- --load: 50 clients, each with its own connection, connecting and
  disconnecting on one network and across three; p50/p90/p99/max latency
  of the acknowledged calls;
- --dns-packets N: N mutated/random packets at 127.0.0.11 inside a
  sandbox of a running pynetd, then the resolver must still answer right.

Runs everything in namespaces it makes and removes.  Prints a markdown
summary and writes bench/results/chaos.json.  Never run by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netstack import invariants  # noqa: E402
from netstack.testing.hosts import Daemon, NetnsHost  # noqa: E402
from tests.chaos.harness import Chaos  # noqa: E402
from tests.chaos.load import check_load, run_load  # noqa: E402


def chaos(kills: int, seed: int) -> dict:
    host = NetnsHost("pnb")
    lines: list[str] = []
    ch = Chaos(host, seed=seed, log=lines.append)
    t0 = time.monotonic()
    try:
        st = ch.run(kills)
    finally:
        ch.close()
        host.close()
    out = {"rounds": st.rounds, "operations": st.ops, "acknowledged": st.acked, "refused": st.refused,
           "kills": st.kills, "crash_point_kills": st.crashpoint_kills, "checks": st.checks,
           "macvlan_networks": st.macvlan_networks,
           "violations": st.violations, "seconds": round(time.monotonic() - t0, 1)}
    if st.violations:
        with open("bench/results/chaos-violations.log", "w") as f:
            f.write("\n".join(lines))
    return out


def load() -> dict:
    out = {}
    for layout, nets in (("one network", ["shared"]), ("three networks", ["a", "b", "c"])):
        host = NetnsHost("pnb")
        d = Daemon(host, extra_args=["--dns-upstream", "127.0.0.1:9"])
        try:
            d.start()
            c = d.client()
            for i, n in enumerate(nets):
                c.network_create({"Name": n, "IPAM": {"Config": [{"Subnet": f"10.92.{i}.0/24"}]}})
            res = run_load(d, clients=50, networks=nets, rounds=4 if len(nets) == 1 else 2, timeout=600)
            problems = check_load(d, res, nets) + invariants.check(d.data_root, d.exec_root, host.path)
            out[layout] = {
                "calls": len(res.latencies), "seconds": round(res.wall, 1), "hung": res.hung,
                "errors": len(res.errors), "problems": problems,
                **{f"p{p}_ms": round(res.pct(p) * 1000, 1) for p in (50, 90, 99)},
                "max_ms": round(max(res.latencies, default=0) * 1000, 1),
                "calls_per_s": round(len(res.latencies) / res.wall, 1) if res.wall else 0,
            }
        finally:
            d.close()
            host.close()
    return out


def dns_fuzz(packets: int) -> dict:
    from dnslib import DNSRecord

    from netstack.kernel.netns import run_in_netns

    host = NetnsHost("pnb")
    d = Daemon(host, extra_args=["--dns-upstream", "127.0.0.1:9"])
    try:
        d.start()
        c = d.client()
        c.network_create({"Name": "fz", "IPAM": {"Config": [{"Subnet": "10.50.0.0/24"}]}})
        c.sandbox_create({"Name": "fzs", "Networks": [{"Network": "fz", "Aliases": ["web"]}]})
        key = c.sandbox_inspect("fzs")["Key"]
        ip = c.sandbox_inspect("fzs")["Networks"]["fz"]["IPAddress"]
        rng = random.Random(11)
        seeds = [DNSRecord.question(q, t).pack() for q in ("fzs", "web.fz", "nosuch", "a" * 63)
                 for t in ("A", "AAAA", "PTR", "ANY", "TXT")]
        sock = run_in_netns(key, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        sock.setblocking(False)
        t0, answers = time.monotonic(), 0
        for i in range(packets):
            p = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 6)):
                r = rng.random()
                if r < 0.5 and p:
                    p[rng.randrange(len(p))] = rng.randrange(256)
                elif r < 0.75:
                    p = p[: rng.randrange(len(p) + 1)]
                else:
                    p += rng.randbytes(rng.randint(1, 40))
            if i % 50 == 0:
                p = bytearray(rng.randbytes(rng.randint(0, 600)))
            try:
                sock.sendto(bytes(p), ("127.0.0.11", 53))
            except BlockingIOError:
                time.sleep(0.001)
            try:
                while True:
                    sock.recv(4096)
                    answers += 1
            except BlockingIOError:
                pass
            if i % 2000 == 0:
                time.sleep(0.002)  # let the listener drain: a fuzz run, not a flood
        sock.close()
        seconds = time.monotonic() - t0
        # The listener may still be working through the queued flood: give
        # it a few seconds, then it must answer right.
        drain = time.monotonic()
        while time.monotonic() - drain < 15 and invariants._query(key, "fzs", timeout=1) is None:
            pass
        drained = round(time.monotonic() - drain, 1)
        answers_after = {n: sorted(invariants._query(key, n) or []) for n in ("fzs", "web", "web.fz", "nosuch")}
        correct = answers_after == {"fzs": [ip], "web": [ip], "web.fz": [ip], "nosuch": []}
        problems = invariants.check(d.data_root, d.exec_root, host.path)
        alive = d.proc is not None and d.proc.poll() is None
        return {"packets": packets, "answers": answers, "seconds": round(seconds, 1), "daemon_alive": alive,
                "resolver_correct_after": correct, "answers_after": answers_after, "drain_seconds": drained,
                "problems": problems}
    finally:
        d.close()
        host.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-chaos", action="store_true")
    ap.add_argument("--load", action="store_true")
    ap.add_argument("--dns-packets", type=int, default=0)
    ap.add_argument("--out", default="bench/results/chaos.json")
    a = ap.parse_args()
    os.makedirs("bench/results", exist_ok=True)
    results: dict = {}
    if os.path.exists(a.out):
        with open(a.out) as f:
            results = json.load(f)
    if not a.skip_chaos:
        results["chaos"] = chaos(a.kills, a.seed)
        print(f"chaos: {json.dumps({k: v for k, v in results['chaos'].items() if k != 'violations'})},"
              f" violations {len(results['chaos']['violations'])}", flush=True)
    if a.load:
        results["load"] = load()
        print(f"load: {json.dumps(results['load'])}", flush=True)
    if a.dns_packets:
        results["dns_fuzz"] = dns_fuzz(a.dns_packets)
        print(f"dns fuzz: {json.dumps(results['dns_fuzz'])}", flush=True)
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
