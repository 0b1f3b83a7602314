"""NftablesFirewall against real traffic, inside namespaces this module makes
(the topology of test_firewall.py)::

    ext 198.18.0.2 --veth-- host 198.18.0.1
                            host br-t 10.77.0.1/24 -- c1 10.77.0.2, c2 10.77.0.3
                            host br-u 10.78.0.1/24 -- c3 10.78.0.2

The backend runs in the "host" namespace (``NftablesFirewall(netns=...)``);
ip_forward, route_localnet and hairpin are set inside that namespace only,
and every ``nft`` command runs there through ``ip netns exec``.
"""

from __future__ import annotations

import shutil
from typing import Iterator

import pytest

from netstack.endpoint import PortBinding
from netstack.errors import Conflict
from netstack.kernel import nft
from netstack.kernel.firewall import NetworkRules, PortRules
from netstack.kernel.nftables import NftablesFirewall, plan_network_elements, plan_port_elements
from tests.conftest import need

pytestmark = pytest.mark.privileged
# The traffic helpers are the iptables backend's test's: both backends are
# held to the same packets.
from tests.privileged.test_firewall import Topo as FirewallTopo, nsx, run, talk  # noqa: E402


class Topo(FirewallTopo):
    def __init__(self) -> None:
        super().__init__("ACCEPT", prefix="pynet-nftest")

    def ruleset(self, ns: str | None = None) -> str:
        return nsx(ns or self.host, "nft", "list", "ruleset").stdout


@pytest.fixture(scope="module")
def topo() -> Iterator[Topo]:
    need(shutil.which("ip") is not None and shutil.which("nft") is not None, "needs iproute2 and nft")
    need(nft.available(), "needs libnftables")
    t = Topo()
    try:
        t.build()
        yield t
    finally:
        t.destroy()


NET_T = NetworkRules("nt", "br-t", ("10.77.0.0/24",), ())
NET_U = NetworkRules("nu", "br-u", ("10.78.0.0/24",), ())
PORTS_C1 = PortRules("e1", "br-t", "10.77.0.2/24", "", (
    PortBinding("tcp", 80, 8080), PortBinding("udp", 53, 5353), PortBinding("tcp", 80, 9080, host_ip="127.0.0.1"),
    PortBinding("tcp", 80, 8000, container_port_end=81, host_port_end=8001)))


@pytest.fixture
def fw(topo: Topo) -> Iterator[NftablesFirewall]:
    f = NftablesFirewall(netns=f"/run/netns/{topo.host}")
    f.setup()
    try:
        yield f
    finally:
        f.teardown()
        assert "pynet" not in topo.ruleset()


def test_connectivity_isolation_masquerade_and_ports(topo: Topo, fw: NftablesFirewall) -> None:
    fw.add_network(NET_T)
    fw.add_network(NET_U)
    fw.add_ports(PORTS_C1)
    assert talk(topo.c2, "tcp", "10.77.0.2", 80) == "from 10.77.0.3"          # same network
    assert talk(topo.c3, "tcp", "10.77.0.3", 80).startswith("FAIL")          # cross network
    assert talk(topo.c3, "tcp", "10.77.0.2", 80) == "from 10.77.0.1"         # published container port
    assert talk(topo.c1, "tcp", "10.78.0.2", 80).startswith("FAIL")
    assert talk(topo.c1, "tcp", "198.18.0.2", 80) == "from 198.18.0.1"       # masquerade outward
    assert talk(topo.ext, "tcp", "10.77.0.3", 80).startswith("FAIL")         # no direct routed access
    assert talk(topo.ext, "tcp", "198.18.0.1", 8080) == "from 198.18.0.2"    # published tcp
    assert talk(topo.ext, "udp", "198.18.0.1", 5353) == "from 198.18.0.2"    # published udp
    assert talk(topo.ext, "tcp", "198.18.0.1", 8001) == "from 198.18.0.2"    # shifted range 8000-8001:80-81
    assert talk(topo.host, "tcp", "127.0.0.1", 8080).startswith("from 10.77.0.1")   # host via loopback
    assert talk(topo.host, "tcp", "127.0.0.1", 9080).startswith("from 10.77.0.1")   # 127.0.0.1-bound
    assert talk(topo.ext, "tcp", "198.18.0.1", 9080).startswith("FAIL")      # ...not from outside
    assert talk(topo.host, "tcp", "198.18.0.1", 8080).startswith("from 10.77.0.1")  # host via own address
    assert talk(topo.c1, "tcp", "198.18.0.1", 8080) == "from 10.77.0.1"      # hairpin to itself
    assert talk(topo.c2, "tcp", "10.77.0.1", 8080) == "from 10.77.0.1"       # neighbour via gateway
    planned = {e.listing() for n in (NET_T, NET_U) for e in plan_network_elements(n, 4)}
    planned |= {e.listing() for e in plan_port_elements(PORTS_C1, 4)}
    assert {r for r in fw.list_rules() if "@" in r.split(":")[0]} == planned

    fw.remove_ports(PORTS_C1)
    fw.remove_ports(PORTS_C1)  # already gone: fine
    assert talk(topo.ext, "tcp", "198.18.0.1", 8080).startswith("FAIL")
    fw.remove_network(NET_T)
    fw.remove_network(NET_U)
    fw.remove_network(NET_U)
    assert [r for r in fw.list_rules() if "@" in r.split(":")[0]] == []


def test_internal_network_blocked_outward(topo: Topo, fw: NftablesFirewall) -> None:
    internal = NetworkRules("nt", "br-t", ("10.77.0.0/24",), (), internal=True)
    fw.add_network(internal)
    assert talk(topo.c2, "tcp", "10.77.0.2", 80) == "from 10.77.0.3"
    assert talk(topo.c1, "tcp", "198.18.0.2", 80).startswith("FAIL")
    assert talk(topo.ext, "tcp", "10.77.0.2", 80).startswith("FAIL")
    fw.remove_network(internal)


def test_icc_false_blocks_same_network(topo: Topo, fw: NftablesFirewall) -> None:
    if nsx(topo.host, "sh", "-c", "test -e /proc/sys/net/bridge/bridge-nf-call-iptables", check=False).returncode:
        pytest.skip("kernel feature missing: br_netfilter (net.bridge.bridge-nf-call-iptables) in a netns")
    prev = nsx(topo.host, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables").stdout.strip()
    nsx(topo.host, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1")  # test namespace only
    try:
        noicc = NetworkRules("nt", "br-t", ("10.77.0.0/24",), (), icc=False)
        fw.add_network(noicc)
        assert talk(topo.c2, "tcp", "10.77.0.2", 80).startswith("FAIL")
        assert talk(topo.c1, "tcp", "198.18.0.2", 80) == "from 198.18.0.1"
        fw.remove_network(noicc)
    finally:
        nsx(topo.host, "sysctl", "-qw", f"net.bridge.bridge-nf-call-iptables={prev}")


def test_sync_rebuilds_keeps_user_chain_and_is_idempotent(topo: Topo, fw: NftablesFirewall) -> None:
    h = topo.host
    fw.add_network(NET_U)
    nsx(h, "nft", "add chain ip pynet old-orphan")
    nsx(h, "nft", "add set ip pynet old-set { type ipv4_addr ; }")
    nsx(h, "nft", "add rule ip pynet user ip saddr 10.99.0.0/16 drop")
    nsx(h, "nft", "add table ip other; add chain ip other fw_other { type filter hook forward priority 10 ; }")
    nsx(h, "nft", "add rule ip other fw_other ip saddr 10.98.0.0/16 counter")
    try:
        fw.sync([NET_T], [PORTS_C1])
        rs = topo.ruleset()
        assert "old-orphan" not in rs and "old-set" not in rs and '"br-u"' not in rs
        assert "ip saddr 10.99.0.0/16 drop" in rs  # user chain never edited
        assert "ip saddr 10.98.0.0/16 counter" in rs  # other tables untouched
        assert talk(topo.ext, "tcp", "198.18.0.1", 8080) == "from 198.18.0.2"
        first = fw.list_rules()
        fw.sync([NET_T], [PORTS_C1])  # idempotent
        assert fw.list_rules() == first
        assert topo.ruleset().count("8080") == 1
    finally:
        nsx(h, "nft", "delete table ip other")
    assert "pynet" in topo.ruleset()  # (the fixture's teardown removes it)


def test_coexists_with_iptables_legacy(topo: Topo, fw: NftablesFirewall) -> None:
    need(shutil.which("iptables-legacy-save") is not None, "needs iptables-legacy")
    h = topo.host
    nsx(h, "iptables-legacy", "-A", "FORWARD", "-s", "10.97.0.0/16", "-j", "DROP")
    try:
        fw.add_network(NET_T)
        fw.add_ports(PORTS_C1)
        assert talk(topo.ext, "tcp", "198.18.0.1", 8080) == "from 198.18.0.2"
        fw.teardown()
        assert "-A FORWARD -s 10.97.0.0/16 -j DROP" in nsx(h, "iptables-legacy-save").stdout
    finally:
        nsx(h, "iptables-legacy", "-D", "FORWARD", "-s", "10.97.0.0/16", "-j", "DROP", check=False)


def test_conflicting_host_port_is_refused(topo: Topo, fw: NftablesFirewall) -> None:
    fw.add_network(NET_T)
    fw.add_ports(PORTS_C1)
    other = PortRules("e2", "br-t", "10.77.0.3", "", (PortBinding("tcp", 80, 8080),))
    with pytest.raises(Conflict):
        fw.add_ports(other)
    fw.remove_ports(other)  # its key belongs to e1: left alone
    assert talk(topo.ext, "tcp", "198.18.0.1", 8080) == "from 198.18.0.2"


def test_dns_redirect_in_sandbox(topo: Topo) -> None:
    fw = NftablesFirewall(netns=f"/run/netns/{topo.c2}", ipv6=False)
    p = topo.serve(topo.c2, "udp", "127.0.0.11", 35353)
    try:
        fw.sandbox_dns_redirect(35353, 35354)
        fw.sandbox_dns_redirect(35353, 35354)  # idempotent
        assert talk(topo.c2, "udp", "127.0.0.11", 53) == "from 127.0.0.1"
    finally:
        p.kill()
        p.communicate()
        topo.procs.remove(p)
        fw.teardown()
    assert "pynet" not in topo.ruleset(topo.c2)


def test_publishing_beside_1000_ports(topo: Topo, fw: NftablesFirewall) -> None:
    """A publish and its removal beside 1000 published ports change only
    their own map elements (the cost: bench/bench_firewall.py)."""
    fw.add_network(NET_T)
    big = PortRules("big", "br-t", "10.77.0.3", "", tuple(PortBinding("tcp", 80, 20000 + i) for i in range(1000)))
    fw.add_ports(big)
    before = topo.ruleset()
    one = PortRules("one", "br-t", "10.77.0.2", "", (PortBinding("tcp", 80, 30000),))
    for _ in range(3):
        fw.add_ports(one)
        assert talk(topo.ext, "tcp", "198.18.0.1", 30000) == "from 198.18.0.2"
        fw.remove_ports(one)
    assert topo.ruleset() == before
    assert talk(topo.ext, "tcp", "198.18.0.1", 20999) == "from 198.18.0.2"  # the last of the 1000 still answers
    fw.remove_ports(big)
