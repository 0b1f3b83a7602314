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
import subprocess
import time
import uuid
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
from tests.privileged.test_firewall import PY, SERVER, nsx, run, talk  # noqa: E402


class Topo:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.host, self.ext = f"pynet-nftest-{tag}-h", f"pynet-nftest-{tag}-x"
        self.c1, self.c2, self.c3 = (f"pynet-nftest-{tag}-c{i}" for i in (1, 2, 3))
        self.all = [self.host, self.ext, self.c1, self.c2, self.c3]
        self.procs: list[subprocess.Popen[str]] = []

    def build(self) -> None:
        for ns in self.all:
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        h = self.host
        for br, gw in (("br-t", "10.77.0.1/24"), ("br-u", "10.78.0.1/24")):
            run("ip", "-n", h, "link", "add", br, "type", "bridge")
            run("ip", "-n", h, "addr", "add", gw, "dev", br)
            run("ip", "-n", h, "link", "set", br, "up")
        for ns, port, br, addr, gw in ((self.c1, "v1", "br-t", "10.77.0.2/24", "10.77.0.1"),
                                       (self.c2, "v2", "br-t", "10.77.0.3/24", "10.77.0.1"),
                                       (self.c3, "v3", "br-u", "10.78.0.2/24", "10.78.0.1")):
            run("ip", "-n", h, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            run("ip", "-n", h, "link", "set", port, "master", br, "up")
            run("ip", "-n", ns, "addr", "add", addr, "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
            run("ip", "-n", ns, "route", "add", "default", "via", gw)
        run("ip", "-n", h, "link", "add", "vx", "type", "veth", "peer", "name", "eth0", "netns", self.ext)
        run("ip", "-n", h, "addr", "add", "198.18.0.1/24", "dev", "vx")
        run("ip", "-n", h, "link", "set", "vx", "up")
        run("ip", "-n", self.ext, "addr", "add", "198.18.0.2/24", "dev", "eth0")
        run("ip", "-n", self.ext, "link", "set", "eth0", "up")
        nsx(h, "sysctl", "-qw", "net.ipv4.ip_forward=1")  # test namespace only
        nsx(h, "sysctl", "-qw", "net.ipv4.conf.br-t.route_localnet=1")
        for p in ("v1", "v2"):
            run("ip", "-n", h, "link", "set", p, "type", "bridge_slave", "hairpin", "on")
        for ns, proto, port in ((self.c1, "tcp", 80), (self.c1, "udp", 53), (self.c2, "tcp", 80),
                                (self.c3, "tcp", 80), (self.ext, "tcp", 80), (self.c1, "tcp", 81)):
            self.serve(ns, proto, "0.0.0.0", port)

    def serve(self, ns: str, proto: str, host: str, port: int) -> subprocess.Popen[str]:
        p = subprocess.Popen(["ip", "netns", "exec", ns, PY, "-c", SERVER, proto, host, str(port)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready", p.stderr
        return p

    def destroy(self) -> None:
        for p in self.procs:  # only what this module started, by PID
            p.kill()
            p.communicate()
        for ns in self.all:
            run("ip", "netns", "del", ns, check=False)

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


def test_publish_cost_is_flat_with_1000_ports(topo: Topo, fw: NftablesFirewall) -> None:
    fw.add_network(NET_T)

    def per_op() -> float:
        one = PortRules("one", "br-t", "10.77.0.2", "", (PortBinding("tcp", 80, 30000),))
        t0 = time.perf_counter()
        for _ in range(10):
            fw.add_ports(one)
            fw.remove_ports(one)
        return (time.perf_counter() - t0) / 20

    empty = per_op()
    big = PortRules("big", "br-t", "10.77.0.3", "", tuple(PortBinding("tcp", 10000 + i, 20000 + i) for i in range(1000)))
    fw.add_ports(big)
    full = per_op()
    print(f"add/remove_ports: {empty * 1000:.1f} ms empty, {full * 1000:.1f} ms with 1000 ports published")
    assert full < 2 * empty + 0.005
    fw.remove_ports(big)
