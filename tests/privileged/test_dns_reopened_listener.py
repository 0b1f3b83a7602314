"""The embedded resolver keeps answering a client whose source port comes
round again after the listener was re-opened.

Found by the crash harness ("dns: no answer in sandbox s75 for s82" after a
restart): 127.0.0.11:53 reaches the listener through a DNAT rule inside the
sandbox, and NAT is decided once per conntrack entry.  When the listener was
re-opened on new ports (pynetd killed and restarted, or the sandbox left its
last network and joined one again) the rule was rewritten, but an entry
made under the old rule kept sending that 5-tuple to the old, closed port,
and every retry from the same port kept the stale entry alive.  A client on
a fixed source port stands for a stub resolver bound to one port, or one
whose random port comes round again (the harness's case); `dig -b` gives
the fixed port.  Now a re-opened listener takes its old ports again when
they are free, and when they are not, the entries of the old rule are
deleted once the rule is rewritten."""

from __future__ import annotations

import re
import socket
import subprocess
import uuid
from types import SimpleNamespace

import pytest

from netstack import invariants
from netstack.kernel import conntrack
from netstack.kernel.netns import run_in_netns
from netstack.testing.hosts import Daemon, running
from tests.conftest import need, need_tool

pytestmark = pytest.mark.privileged

UPSTREAM = ["--dns-upstream", "127.0.0.1:9"]


def dig_from(key: str, port: int, name: str) -> list[str]:
    """dig @127.0.0.11 inside the namespace, from 127.0.0.1:`port` (two tries,
    both from that port, as a stub resolver retries)."""
    out = subprocess.run(["nsenter", f"--net={key}", "dig", "@127.0.0.11", "-b", f"127.0.0.1#{port}",
                          "+short", "+time=1", "+tries=2", "-q", name],
                         capture_output=True, text=True, timeout=15)
    return [l for l in out.stdout.splitlines() if l and not l.startswith(";")]


def nft_ports(key: str) -> tuple[int, int]:
    """(udp, tcp) ports the sandbox's nftables rules send 127.0.0.11:53 to."""
    rules = subprocess.run(["nsenter", f"--net={key}", "nft", "list", "table", "ip", "pynet-dns"],
                           capture_output=True, text=True, check=True).stdout
    found = dict(re.findall(r"(udp|tcp) dport 53 (?:udp|tcp) dport set (\d+)", rules))
    return int(found["udp"]), int(found["tcp"])


def stale_entries(key: str, udp_port: int, tcp_port: int) -> list[str]:
    """conntrack entries to 127.0.0.11:53 that lead elsewhere than the
    listener's ports."""
    def dump() -> list[conntrack.Entry]:
        with conntrack.Conntrack() as ct:
            return ct.entries()

    now = {socket.IPPROTO_UDP: udp_port, socket.IPPROTO_TCP: tcp_port}
    return [str(e) for e in run_in_netns(key, dump) if e.orig.dst == "127.0.0.11" and e.orig.dport == 53
            and e.reply.sport != now.get(e.orig.proto)]


def test_answered_from_the_same_source_port_after_pynetd_is_killed(host):
    need_tool("dig", "nft")
    d = Daemon(host, extra_args=UPSTREAM)
    try:
        d.start()
        c = d.client()
        c.network_create({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.81.0.0/24"}]}})
        c.sandbox_create({"Name": "a", "Networks": ["n"]})
        c.sandbox_create({"Name": "b", "Networks": ["n"]})
        a = c.sandbox_inspect("a")["Key"]
        assert dig_from(a, 40053, "b") == ["10.81.0.3"]
        before = nft_ports(a)
        d.kill9()
        d.start()
        assert dig_from(a, 40053, "b") == ["10.81.0.3"]
        assert nft_ports(a) == before  # the old ports were free: taken again
        assert stale_entries(a, *before) == []
        assert invariants.check(d.data_root, d.exec_root, host.path) == []
    finally:
        d.close()


def test_answered_from_the_same_source_port_when_the_old_ports_are_taken(host):
    """A process in the container took the resolver's old UDP port while
    pynetd was down: new ports, and the entries of the old rule go."""
    need_tool("dig", "nft")
    d = Daemon(host, extra_args=UPSTREAM)
    squatter = None
    try:
        d.start()
        c = d.client()
        c.network_create({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.83.0.0/24"}]}})
        c.sandbox_create({"Name": "a", "Networks": ["n"]})
        a = c.sandbox_inspect("a")["Key"]
        assert dig_from(a, 40055, "a") == ["10.83.0.2"]
        old_udp, _ = nft_ports(a)
        d.kill9()

        def squat() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("0.0.0.0", old_udp))
            return s

        squatter = run_in_netns(a, squat)
        d.start()
        now = nft_ports(a)
        assert now[0] != old_udp
        assert dig_from(a, 40055, "a") == ["10.83.0.2"]
        assert stale_entries(a, *now) == []
    finally:
        if squatter is not None:
            squatter.close()
        d.close()


def test_answered_from_the_same_source_port_after_leaving_and_rejoining(host):
    need_tool("dig", "nft")
    with running(Daemon(host, extra_args=UPSTREAM)) as d:
        c = d.client()
        c.network_create({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.82.0.0/24"}]}})
        c.sandbox_create({"Name": "a", "Networks": ["n"]})
        a = c.sandbox_inspect("a")["Key"]
        assert dig_from(a, 40054, "a") == ["10.82.0.2"]
        c.network_disconnect("n", {"Container": "a"})   # its last network: the listener closes
        c.network_connect("n", {"Container": "a"})      # and is opened again
        assert dig_from(a, 40054, "a") == [c.sandbox_inspect("a")["Networks"]["n"]["IPAddress"]]
        assert stale_entries(a, *nft_ports(a)) == []


@pytest.mark.parametrize("kind", ["nft", "iptables"])
def test_each_redirect_backend_leaves_no_stale_nat_when_reopened(kind):
    """SandboxDns alone in a namespace, with either redirect: the iptables
    fallback does not read its rule back, so its ports always change and the
    old entries must be deleted."""
    need_tool("dig", "ip", "iptables-legacy")
    from netstack.kernel import nft
    from netstack.sandbox_dns import IptablesRedirect, NftRedirect, SandboxDns

    if kind == "nft":
        need(nft.available(), "libnftables is not installed")
    name = f"pynet-dnsre-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    key = f"/run/netns/{name}"
    dns = SandboxDns(upstreams=[], listener=NftRedirect() if kind == "nft" else IptablesRedirect())
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        net = SimpleNamespace(id="n1", name="n", driver="bridge", internal=False)
        sb = SimpleNamespace(id="sb1", key=key)
        ep = SimpleNamespace(id="e1", network_id="n1", ipv4="10.9.0.2/24", ipv6="")
        for _ in range(2):  # open, close (left its last network), open again
            dns.add_endpoint(net, sb, ep, ["web"], [ep])
            assert dig_from(key, 40056, "web") == ["10.9.0.2"]
            udp, tcp = _served_ports(dns, sb.id)
            assert stale_entries(key, udp, tcp) == []
            dns.remove_endpoint(net, sb, ep, [])
    finally:
        dns.stop()
        subprocess.run(["ip", "netns", "delete", name], check=False)


def _served_ports(dns, sandbox_id: str) -> tuple[int, int]:
    served = dns.server._sandboxes[sandbox_id]
    return served.udp.sock.getsockname()[1], served.listener.sock.getsockname()[1]


def test_a_dnat_table_an_older_pynet_left_is_replaced():
    """A sandbox whose `pynet-dns` table holds an older pynet's DNAT chain
    (to ports nothing listens on): the new listener's table replaces it
    whole, so no nat chain is left and 127.0.0.11 answers.  (A new
    sandbox, with no table, skips the delete: see nft.dns_redirect_batch.)"""
    need_tool("dig", "ip", "nft")
    from netstack.kernel import nft
    from netstack.sandbox_dns import NftRedirect, SandboxDns

    need(nft.available(), "libnftables is not installed")
    name = f"pynet-dnsold-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    key = f"/run/netns/{name}"
    dns = SandboxDns(upstreams=[], listener=NftRedirect())
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", name, "nft", "-f", "-"], check=True, text=True, input=(
            "add table ip pynet-dns\n"
            "add chain ip pynet-dns output { type nat hook output priority -100 ; }\n"
            "add rule ip pynet-dns output ip daddr 127.0.0.11 udp dport 53 dnat to 127.0.0.11:9\n"
            "add rule ip pynet-dns output ip daddr 127.0.0.11 tcp dport 53 dnat to 127.0.0.11:9\n"))
        net = SimpleNamespace(id="n1", name="n", driver="bridge", internal=False)
        sb = SimpleNamespace(id="sb1", key=key)
        ep = SimpleNamespace(id="e1", network_id="n1", ipv4="10.9.0.7/24", ipv6="")
        dns.add_endpoint(net, sb, ep, ["web"], [ep])
        table = subprocess.run(["ip", "netns", "exec", name, "nft", "list", "table", "ip", "pynet-dns"],
                               capture_output=True, text=True, check=True).stdout
        assert "nat" not in table and "dnat" not in table
        assert nft_ports(key) == _served_ports(dns, sb.id)
        assert dig_from(key, 40057, "web") == ["10.9.0.7"]
    finally:
        dns.stop()
        subprocess.run(["ip", "netns", "delete", name], check=False)
