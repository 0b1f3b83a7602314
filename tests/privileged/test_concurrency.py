"""50 clients in parallel (threads, each with its own Client and
connection) connecting and disconnecting on one network and across
networks: no deadlock (everything finishes before a timeout), no lost
update (what was acknowledged is what the daemon shows), no address held
twice, and every invariant holds afterwards.  Latency is reported by
bench/chaos.py --load, not asserted here."""

from __future__ import annotations

import pytest

from netstack import invariants
from netstack.testing.hosts import Daemon
from tests.chaos.load import check_load, run_load

pytestmark = pytest.mark.privileged


@pytest.mark.parametrize("layout", ["one-network", "across-networks"])
def test_fifty_clients_connect_and_disconnect_in_parallel(host, layout):
    nets = ["shared"] if layout == "one-network" else ["a", "b", "c"]
    d = Daemon(host, extra_args=["--dns-upstream", "127.0.0.1:9"])
    try:
        d.start()
        c = d.client()
        for i, n in enumerate(nets):
            c.network_create({"Name": n, "IPAM": {"Config": [{"Subnet": f"10.92.{i}.0/24"}]}})
        res = run_load(d, clients=50, networks=nets, rounds=3 if layout == "one-network" else 2, timeout=300)
        print(f"{layout}: {len(res.latencies)} calls in {res.wall:.1f}s, p50 {res.pct(50) * 1000:.0f} ms,"
              f" p99 {res.pct(99) * 1000:.0f} ms")
        assert res.hung == 0, "deadlock: clients still waiting at the timeout"
        assert res.errors == []
        assert check_load(d, res, nets) == []
        assert invariants.check(d.data_root, d.exec_root, host.path) == []
    except BaseException:
        print(d.log()[-5000:])
        raise
    finally:
        d.close()
