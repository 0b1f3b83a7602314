"""Concurrent clients against one pynetd: N threads, each with its own
Client (its own connection), connecting and disconnecting sandboxes on one
network and across networks.  Used by tests/privileged/test_concurrency.py
(correctness) and bench/chaos.py --load (latency figures)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from netstack.api.client import Client
from netstack.testing.hosts import Daemon


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)   # seconds, every acknowledged call
    errors: list[str] = field(default_factory=list)
    connected: dict[str, set[str]] = field(default_factory=dict)  # sandbox -> networks, as acknowledged
    hung: int = 0
    wall: float = 0.0

    def pct(self, p: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else 0.0


def run_load(d: Daemon, *, clients: int = 50, networks: list[str], rounds: int = 4,
             timeout: float = 240) -> LoadResult:
    """Sandbox i belongs to client i; every round the client connects it to
    each network (one network: `networks` of length 1) and disconnects it
    again, except on the last round, which stays connected."""
    res = LoadResult()
    lock = threading.Lock()
    setup = Client(d.url)
    for i in range(clients):
        setup.sandbox_create({"Name": f"c{i}"})
    setup.close()
    start = threading.Barrier(clients)

    def worker(i: int) -> None:
        name = f"c{i}"
        mine: set[str] = set()
        c = Client(d.url)
        try:
            start.wait(30)
            for r in range(rounds):
                for net in networks:
                    for verb in ("connect", "disconnect"):
                        if verb == "disconnect" and r == rounds - 1:
                            continue
                        t = time.perf_counter()
                        if verb == "connect":
                            c.network_connect(net, {"Container": name})
                            mine.add(net)
                        else:
                            c.network_disconnect(net, {"Container": name})
                            mine.discard(net)
                        dt = time.perf_counter() - t
                        with lock:
                            res.latencies.append(dt)
        except Exception as exc:
            with lock:
                res.errors.append(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            c.close()
            with lock:
                res.connected[name] = mine

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    deadline = t0 + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    res.hung = sum(t.is_alive() for t in threads)
    res.wall = time.monotonic() - t0
    return res


def check_load(d: Daemon, res: LoadResult, networks: list[str]) -> list[str]:
    """What the daemon shows after the load agrees with what was
    acknowledged, and no address is held twice."""
    out = []
    c = Client(d.url)
    try:
        sbs = {s["Name"]: s for s in c.sandboxes()}
        for name, mine in res.connected.items():
            got = set(sbs[name]["Networks"]) if name in sbs else None
            if got != mine:
                out.append(f"sandbox {name}: on {sorted(got or [])}, acknowledged {sorted(mine)} (lost update)")
        for net in networks:
            ips = [s["Networks"][net]["IPAddress"] for s in sbs.values() if net in s["Networks"]]
            if len(ips) != len(set(ips)):
                out.append(f"duplicate addresses on {net}: {sorted(ips)}")
            inspected = c.network_inspect(net)["Containers"]
            if len(inspected) != len(ips):
                out.append(f"network {net} lists {len(inspected)} endpoints, sandboxes show {len(ips)}")
    finally:
        c.close()
    return out
