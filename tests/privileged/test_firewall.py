"""IptablesFirewall against real traffic, inside namespaces this module makes.

Topology (all in fresh namespaces, removed afterwards)::

    ext 198.18.0.2 --veth-- host 198.18.0.1
                            host br-t 10.77.0.1/24 -- c1 10.77.0.2, c2 10.77.0.3
                            host br-u 10.78.0.1/24 -- c3 10.78.0.2

The backend runs in the "host" namespace (``IptablesFirewall(netns=...)``);
the sysctls the bridge driver would set (ip_forward, route_localnet and
hairpin on br-t) are set inside that namespace only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from typing import Iterator

import pytest

from netstack.endpoint import PortBinding
from netstack.kernel.firewall import IptablesFirewall, NetworkRules, PortRules

pytestmark = pytest.mark.privileged
CI = os.environ.get("CI") == "true"
PY = sys.executable


def _require_root() -> None:
    problem = None
    if os.geteuid() != 0:
        problem = "needs root"
    elif not all(shutil.which(t) for t in ("ip", "iptables-legacy-save", "ip6tables-legacy-save")):
        problem = "needs iproute2 and iptables-legacy"
    if problem:
        if CI:
            pytest.fail(problem + " (CI=true: never skipped)")
        pytest.skip(problem)


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def nsx(ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("ip", "netns", "exec", ns, *argv, check=check)


SERVER = textwrap.dedent("""
    import socket, sys, threading
    proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    if proto == "tcp":
        s = socket.socket(fam, socket.SOCK_STREAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port)); s.listen(16); print("ready", flush=True)
        while True:
            c, peer = s.accept(); c.sendall(("from " + peer[0]).encode()); c.close()
    else:
        s = socket.socket(fam, socket.SOCK_DGRAM); s.bind((host, port)); print("ready", flush=True)
        while True:
            data, peer = s.recvfrom(512); s.sendto(("from " + peer[0]).encode(), peer)
""")

CLIENT = textwrap.dedent("""
    import socket, sys
    proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        if proto == "tcp":
            s = socket.create_connection((host, port), timeout=1.5); print(s.recv(100).decode())
        else:
            s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(1.5); s.sendto(b"x", (host, port))
            print(s.recvfrom(100)[0].decode())
    except OSError as e:
        print("FAIL", e)
""")


def talk(ns: str, proto: str, host: str, port: int) -> str:
    return nsx(ns, PY, "-c", CLIENT, proto, host, str(port)).stdout.strip()


class Topo:
    """The namespaces above, with a server on each port the tests talk to
    (also used by test_nftables.py: both backends face the same packets)."""

    def __init__(self, policy: str, prefix: str = "pynet-fwtest") -> None:
        tag = uuid.uuid4().hex[:6]
        self.host, self.ext = f"{prefix}-{tag}-h", f"{prefix}-{tag}-x"
        self.c1, self.c2, self.c3 = (f"{prefix}-{tag}-c{i}" for i in (1, 2, 3))
        self.all = [self.host, self.ext, self.c1, self.c2, self.c3]
        self.procs: list[subprocess.Popen[str]] = []
        self.policy = policy

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
        # what the bridge driver does, in the test's host namespace only
        nsx(h, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        nsx(h, "sysctl", "-qw", "net.ipv4.conf.br-t.route_localnet=1")
        for p in ("v1", "v2"):
            run("ip", "-n", h, "link", "set", p, "type", "bridge_slave", "hairpin", "on")
        if self.policy == "DROP":
            nsx(h, "iptables-legacy", "-P", "FORWARD", "DROP")
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
            p.communicate()  # reaps it and closes its pipes
        for ns in self.all:
            run("ip", "netns", "del", ns, check=False)

    def save(self) -> str:
        return nsx(self.host, "iptables-legacy-save").stdout + nsx(self.host, "ip6tables-legacy-save").stdout

    def policies_ok(self) -> bool:
        """Every built-in policy is still ACCEPT, except the v4 FORWARD
        policy this topology set itself."""
        fam = 4
        table = ""
        for line in self.save().splitlines():
            if line.startswith("# Generated by ip6tables"):
                fam = 6
            elif line.startswith("*"):
                table = line[1:]
            elif line.startswith(":") and line.split()[1] != "-":
                chain, pol = line[1:].split()[:2]
                want = self.policy if (fam, table, chain) == (4, "filter", "FORWARD") else "ACCEPT"
                if pol != want:
                    return False
        return True


@pytest.fixture(scope="module", params=["ACCEPT", "DROP"], ids=["forward-accept", "forward-drop"])
def topo(request: pytest.FixtureRequest) -> Iterator[Topo]:
    _require_root()
    t = Topo(request.param)
    try:
        t.build()
        yield t
    finally:
        t.destroy()


NET_T = NetworkRules("nt", "br-t", ("10.77.0.0/24",), ())
NET_U = NetworkRules("nu", "br-u", ("10.78.0.0/24",), ())
PORTS_C1 = PortRules("e1", "br-t", "10.77.0.2/24", "", (
    PortBinding("tcp", 80, 8080), PortBinding("udp", 53, 5353), PortBinding("tcp", 80, 9080, host_ip="127.0.0.1")))


@pytest.fixture
def fw(topo: Topo) -> Iterator[IptablesFirewall]:
    f = IptablesFirewall(netns=f"/run/netns/{topo.host}")
    f.setup()
    try:
        yield f
    finally:
        f.teardown()
        assert "PYNET" not in topo.save()
        assert topo.policies_ok()  # built-in policies untouched


def test_connectivity_isolation_masquerade_and_ports(topo: Topo, fw: IptablesFirewall) -> None:
    fw.add_network(NET_T)
    fw.add_network(NET_U)
    fw.add_ports(PORTS_C1)
    assert talk(topo.c2, "tcp", "10.77.0.2", 80) == "from 10.77.0.3"          # same network
    assert talk(topo.c3, "tcp", "10.77.0.3", 80).startswith("FAIL")          # cross network
    # (a published port is reachable at the container address from any other
    # interface, other networks included, as in Docker)
    assert talk(topo.c3, "tcp", "10.77.0.2", 80) == "from 10.77.0.1"
    assert talk(topo.c1, "tcp", "10.78.0.2", 80).startswith("FAIL")
    assert talk(topo.c1, "tcp", "198.18.0.2", 80) == "from 198.18.0.1"       # masquerade outward
    assert talk(topo.ext, "tcp", "10.77.0.3", 80).startswith("FAIL")         # no direct routed access
    assert talk(topo.ext, "tcp", "198.18.0.1", 8080) == "from 198.18.0.2"    # published tcp
    assert talk(topo.ext, "udp", "198.18.0.1", 5353) == "from 198.18.0.2"    # published udp
    assert talk(topo.host, "tcp", "127.0.0.1", 8080).startswith("from 10.77.0.1")   # host via loopback
    assert talk(topo.host, "tcp", "127.0.0.1", 9080).startswith("from 10.77.0.1")   # 127.0.0.1-bound
    assert talk(topo.ext, "tcp", "198.18.0.1", 9080).startswith("FAIL")      # ...not from outside
    assert talk(topo.host, "tcp", "198.18.0.1", 8080).startswith("from 10.77.0.1")  # host via own address
    assert talk(topo.c1, "tcp", "198.18.0.1", 8080) == "from 10.77.0.1"      # hairpin to itself
    assert talk(topo.c2, "tcp", "10.77.0.1", 8080) == "from 10.77.0.1"       # neighbour via gateway
    installed = {r.render() for r in fw.list_rules()}
    kernel = {l for l in topo.save().splitlines() if l.startswith("-A") and "PYNET" in l}
    assert installed == kernel

    fw.remove_ports(PORTS_C1)
    fw.remove_ports(PORTS_C1)  # already gone: fine
    assert talk(topo.ext, "tcp", "198.18.0.1", 8080).startswith("FAIL")
    fw.remove_network(NET_T)
    fw.remove_network(NET_U)
    assert [r for r in fw.list_rules() if r.chain in ("PYNET-CT", "PYNET-INBOUND", "PYNET-DNAT", "PYNET-POSTROUTING")] == []


def test_internal_network_blocked_outward(topo: Topo, fw: IptablesFirewall) -> None:
    internal = NetworkRules("nt", "br-t", ("10.77.0.0/24",), (), internal=True)
    fw.add_network(internal)
    assert talk(topo.c2, "tcp", "10.77.0.2", 80) == "from 10.77.0.3"
    assert talk(topo.c1, "tcp", "198.18.0.2", 80).startswith("FAIL")
    assert talk(topo.ext, "tcp", "10.77.0.2", 80).startswith("FAIL")
    fw.remove_network(internal)


def _bridge_nf(topo: Topo) -> bool:
    return nsx(topo.host, "sh", "-c", "test -e /proc/sys/net/bridge/bridge-nf-call-iptables", check=False).returncode == 0


def test_icc_false_blocks_same_network(topo: Topo, fw: IptablesFirewall) -> None:
    if not _bridge_nf(topo):
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


def test_sync_rebuilds_and_removes_orphans(topo: Topo, fw: IptablesFirewall) -> None:
    fw.add_network(NET_U)
    nsx(topo.host, "iptables-legacy", "-N", "PYNET-OLD")
    nsx(topo.host, "iptables-legacy", "-A", "PYNET-OLD", "-j", "RETURN")
    nsx(topo.host, "iptables-legacy", "-I", "FORWARD", "-j", "PYNET-OLD")
    nsx(topo.host, "iptables-legacy", "-A", "PYNET-USER", "-s", "10.99.0.0/16", "-j", "DROP")
    fw.sync([NET_T], [PORTS_C1])
    save = topo.save()
    assert "PYNET-OLD" not in save and "br-u" not in save
    assert "-A PYNET-USER -s 10.99.0.0/16 -j DROP" in save  # never edited
    fwd = [l for l in save.splitlines() if l.startswith("-A FORWARD")]
    assert fwd[:2] == ["-A FORWARD -j PYNET-USER", "-A FORWARD -j PYNET-FORWARD"]
    assert talk(topo.ext, "tcp", "198.18.0.1", 8080) == "from 198.18.0.2"
    fw.sync([NET_T], [PORTS_C1])  # idempotent
    assert topo.save().count("--dport 8080") == 1


def test_dns_redirect_in_sandbox(topo: Topo) -> None:
    _require_root()
    fw = IptablesFirewall(netns=f"/run/netns/{topo.c2}", ipv6=False)
    p = topo.serve(topo.c2, "udp", "127.0.0.11", 35353)
    try:
        fw.sandbox_dns_redirect(35353, 35354)
        fw.sandbox_dns_redirect(35353, 35354)  # idempotent
        assert talk(topo.c2, "udp", "127.0.0.11", 53) == "from 127.0.0.1"
        squatter = topo.serve(topo.c2, "udp", "0.0.0.0", 53)  # a container process can still bind :53
        assert squatter.poll() is None
        assert talk(topo.c2, "udp", "127.0.0.11", 53) == "from 127.0.0.1"
        assert nsx(topo.c2, "iptables-legacy-save", "-t", "nat").stdout.count("-j PYNET-DNS") == 1
    finally:
        fw.teardown()
    assert "PYNET" not in nsx(topo.c2, "iptables-legacy-save").stdout


def test_publishing_beside_1000_rules(topo: Topo, fw: IptablesFirewall) -> None:
    """A publish and its removal among 1000 other rules touch only their own
    (the cost of that is bench/bench_firewall.py's, not a test's)."""
    fw.add_network(NET_T)
    big = PortRules("big", "br-t", "10.77.0.3", "", tuple(PortBinding("tcp", 80, 20000 + i) for i in range(500)))
    fw.add_ports(big)
    # a DNAT per host port, one ACCEPT for the container port they share
    assert len([r for r in fw.list_rules() if "10.77.0.3" in " ".join(r.args)]) == 501
    before = sorted(map(str, fw.list_rules()))
    one = PortRules("one", "br-t", "10.77.0.2", "", (PortBinding("tcp", 80, 30000),))
    for _ in range(3):
        fw.add_ports(one)
        assert talk(topo.ext, "tcp", "198.18.0.1", 30000) == "from 198.18.0.2"
        fw.remove_ports(one)
    assert sorted(map(str, fw.list_rules())) == before
    assert talk(topo.ext, "tcp", "198.18.0.1", 20499) == "from 198.18.0.2"  # the last of the 500 still answers
    fw.remove_ports(big)
