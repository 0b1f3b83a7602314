"""DnsServer over real sockets on 127.0.0.1 (standing in for a sandbox's
127.0.0.11), forwarding to fake upstreams that the test runs."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from dnslib import QTYPE, RCODE, RR, DNSRecord

from netstack.dns.records import RecordTable
from netstack.dns.resolvconf import host_upstreams, parse_nameservers, sandbox_resolv_conf
from netstack.dns.server import DnsServer


class FakeUpstream:
    """Answers every A query with 192.0.2.1 over UDP and TCP, or with a
    fixed rcode, or not at all (silent)."""

    def __init__(self, *, rcode: int = RCODE.NOERROR, silent: bool = False) -> None:
        self.rcode, self.silent = rcode, silent
        self.udp, self.tcp = self._bind_same_port()
        self.tcp.listen()
        self.addr = self.udp.getsockname()
        self.queries = 0
        self._stop = False
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._serve_udp, self._serve_tcp)]
        for t in self._threads:
            t.start()

    @staticmethod
    def _bind_same_port() -> tuple[socket.socket, socket.socket]:
        """UDP and TCP on one kernel-chosen port; that port may be taken
        for TCP (a connection of another process on this machine): try
        another."""
        for _ in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            tcp = socket.socket()
            try:
                tcp.bind(("127.0.0.1", udp.getsockname()[1]))
                return udp, tcp
            except OSError:
                udp.close()
                tcp.close()
        raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")

    def answer(self, data: bytes) -> bytes | None:
        self.queries += 1
        if self.silent:
            return None
        q = DNSRecord.parse(data)
        r = q.reply()
        r.header.rcode = self.rcode
        if self.rcode == RCODE.NOERROR:
            r.add_answer(*RR.fromZone(f"{q.q.qname} 30 A 192.0.2.1"))
        return bytes(r.pack())

    def _serve_udp(self) -> None:
        self.udp.settimeout(0.2)
        while not self._stop:
            try:
                data, addr = self.udp.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            out = self.answer(data)
            if out:
                self.udp.sendto(out, addr)

    def _serve_tcp(self) -> None:
        self.tcp.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                size = int.from_bytes(conn.recv(2), "big")
                out = self.answer(conn.recv(size))
                if out:
                    conn.sendall(len(out).to_bytes(2, "big") + out)

    def close(self) -> None:
        self._stop = True
        for t in self._threads:
            t.join()
        self.udp.close()
        self.tcp.close()


@dataclass
class Harness:
    server: DnsServer
    table: RecordTable
    udp_port: int
    tcp_port: int

    def query(self, name: str, qtype: str = "A", timeout: float = 3.0) -> DNSRecord:
        q = DNSRecord.question(name, qtype)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(bytes(q.pack()), ("127.0.0.1", self.udp_port))
            reply = DNSRecord.parse(s.recv(65535))
        assert reply.header.id == q.header.id
        return reply


def add_sandbox(server: DnsServer, sandbox_id: str) -> tuple[int, int]:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    ports = udp.getsockname()[1], tcp.getsockname()[1]
    server.add_sandbox(sandbox_id, udp, tcp)
    return ports


def make(upstreams: list[tuple[str, int]], **kw: object) -> Iterator[Harness]:
    table = RecordTable()
    table.add_endpoint("n1", "front", "e1", ["web", "www"], "10.0.0.2", "fd00::2")
    table.add_endpoint("n1", "front", "e2", ["www"], "10.0.0.3", None)
    table.add_endpoint("n1", "front", "e3", ["www"], "10.0.0.4", None)
    table.add_endpoint("n2", "back", "e4", ["db"], "10.1.0.2", None)
    table.set_sandbox_networks("s1", ["n1"])
    server = DnsServer(table, upstreams=upstreams, **kw)  # type: ignore[arg-type]
    server.start()
    try:
        udp_port, tcp_port = add_sandbox(server, "s1")
        yield Harness(server, table, udp_port, tcp_port)
    finally:
        server.stop()


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream()
    yield up
    up.close()


@pytest.fixture
def h(upstream: FakeUpstream) -> Iterator[Harness]:
    yield from make([upstream.addr], forward_timeout=0.3)


def tcp_exchange(sock: socket.socket, name: str, qtype: str = "A") -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    msg = bytes(q.pack())
    sock.sendall(len(msg).to_bytes(2, "big") + msg)
    size = int.from_bytes(recv_exactly(sock, 2), "big")
    reply = DNSRecord.parse(recv_exactly(sock, size))
    assert reply.header.id == q.header.id
    return reply


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, "connection closed"
        buf += chunk
    return buf


def test_local_answer_and_cache_hit(h: Harness) -> None:
    for _ in range(3):
        reply = h.query("Web")
        assert [str(rr.rdata) for rr in reply.rr] == ["10.0.0.2"]
        assert str(reply.q.qname) == "Web."
    stats = h.server.stats()
    assert stats["cache_hits"] >= 2 and stats["cache_misses"] == 1
    assert [str(rr.rdata) for rr in h.query("web", "AAAA").rr] == ["fd00::2"]


def test_round_robin_through_the_cache(h: Harness) -> None:
    firsts = {str(h.query("www").rr[0].rdata) for _ in range(6)}
    assert firsts == {"10.0.0.2", "10.0.0.3", "10.0.0.4"}


def test_cache_invalidated_by_record_change(h: Harness) -> None:
    assert h.query("web").header.rcode == RCODE.NOERROR
    h.table.remove_endpoint("n1", "e1")
    assert h.query("web").header.rcode == RCODE.NXDOMAIN
    h.table.add_endpoint("n1", "front", "e1", ["web"], "10.0.0.9", None)
    assert [str(rr.rdata) for rr in h.query("web").rr] == ["10.0.0.9"]


def test_other_network_is_nxdomain_and_ptr(h: Harness) -> None:
    assert h.query("db").header.rcode == RCODE.NXDOMAIN
    assert [str(rr.rdata) for rr in h.query("2.0.0.10.in-addr.arpa", "PTR").rr] == ["web.front."]


def test_forward_udp(h: Harness, upstream: FakeUpstream) -> None:
    reply = h.query("example.com")
    assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.1"]
    assert upstream.queries == 1
    assert h.server.stats()["inflight"] == 0


def test_tcp_several_queries_per_connection(h: Harness) -> None:
    with socket.create_connection(("127.0.0.1", h.tcp_port), timeout=3) as s:
        assert [str(rr.rdata) for rr in tcp_exchange(s, "web").rr] == ["10.0.0.2"]
        assert [str(rr.rdata) for rr in tcp_exchange(s, "example.org").rr] == ["192.0.2.1"]
        assert tcp_exchange(s, "db").header.rcode == RCODE.NXDOMAIN


def test_tcp_serves_what_udp_truncates(h: Harness) -> None:
    for i in range(60):
        h.table.add_endpoint("n1", "front", f"big{i}", ["big"], f"10.0.2.{i + 1}", None)
    assert h.query("big").header.tc == 1
    with socket.create_connection(("127.0.0.1", h.tcp_port), timeout=3) as s:
        assert len(tcp_exchange(s, "big").rr) == 60


def test_tcp_idle_timeout_and_connection_bound(upstream: FakeUpstream) -> None:
    for h in make([upstream.addr], tcp_idle_timeout=0.3, max_tcp_per_sandbox=2):
        conns = [socket.create_connection(("127.0.0.1", h.tcp_port), timeout=3) for _ in range(3)]
        try:
            assert conns[2].recv(10) == b""  # over the bound: closed at once
            assert tcp_exchange(conns[0], "web").rr
            time.sleep(1.2)
            assert conns[0].recv(10) == b"" and conns[1].recv(10) == b""  # idle: closed
            assert h.server.stats()["tcp_rejected"] == 1
        finally:
            for c in conns:
                c.close()


def test_slow_tcp_client_does_not_block_udp(h: Harness) -> None:
    with socket.create_connection(("127.0.0.1", h.tcp_port), timeout=3) as s:
        s.sendall(b"\x00\x40\x12")  # half a message, then nothing
        assert h.query("web").rr
        s.sendall(b"\x00" * 0x40)  # ... and finally the rest: garbage
        assert h.query("web").rr


def test_failover_from_silent_upstream(upstream: FakeUpstream) -> None:
    silent = FakeUpstream(silent=True)
    try:
        for h in make([silent.addr, upstream.addr], forward_timeout=0.3):
            t0 = time.monotonic()
            assert [str(rr.rdata) for rr in h.query("example.com").rr] == ["192.0.2.1"]
            assert 0.25 < time.monotonic() - t0 < 2.0
            assert silent.queries == 1 and h.server.stats()["upstream_timeouts"] == 1
    finally:
        silent.close()


@pytest.mark.parametrize("rcode", [RCODE.SERVFAIL, RCODE.REFUSED])
def test_failover_on_servfail_and_refused(upstream: FakeUpstream, rcode: int) -> None:
    bad = FakeUpstream(rcode=rcode)
    try:
        for h in make([bad.addr, upstream.addr]):
            assert [str(rr.rdata) for rr in h.query("example.com").rr] == ["192.0.2.1"]
            assert bad.queries == 1
    finally:
        bad.close()


def test_servfail_when_every_upstream_fails() -> None:
    silent = FakeUpstream(silent=True)
    try:
        for h in make([silent.addr, silent.addr], forward_timeout=0.2):
            reply = h.query("example.com")
            assert reply.header.rcode == RCODE.SERVFAIL and str(reply.q.qname) == "example.com."
            with socket.create_connection(("127.0.0.1", h.tcp_port), timeout=3) as s:
                assert tcp_exchange(s, "example.net").header.rcode == RCODE.SERVFAIL
        for h in make([]):
            assert h.query("example.com").header.rcode == RCODE.SERVFAIL
    finally:
        silent.close()


def test_inflight_bound_refuses_excess() -> None:
    silent = FakeUpstream(silent=True)
    try:
        for h in make([silent.addr], forward_timeout=1.0, max_inflight=2):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(3)
                for i in range(5):
                    s.sendto(bytes(DNSRecord.question(f"q{i}.example").pack()), ("127.0.0.1", h.udp_port))
                rcodes = [DNSRecord.parse(s.recv(4096)).header.rcode for _ in range(5)]
            assert sorted(rcodes) == [RCODE.SERVFAIL] * 2 + [RCODE.REFUSED] * 3
            assert h.server.stats()["inflight"] == 0
    finally:
        silent.close()


def test_sandboxes_are_isolated_and_removable(h: Harness) -> None:
    h.table.set_sandbox_networks("s2", ["n2"])
    udp2, _ = add_sandbox(h.server, "s2")
    other = Harness(h.server, h.table, udp2, 0)
    assert other.query("web").header.rcode == RCODE.NXDOMAIN
    assert [str(rr.rdata) for rr in other.query("db").rr] == ["10.1.0.2"]
    h.server.remove_sandbox("s2")
    with pytest.raises(socket.timeout):
        other.query("db", timeout=0.3)
    assert h.query("web").rr  # the other sandbox is unaffected
    h.server.remove_sandbox("s2")  # tolerated


def test_edns_query_gets_opt(h: Harness) -> None:
    reply = DNSRecord.parse(DNSRecord.question("web").send("127.0.0.1", h.udp_port, timeout=3))
    q = DNSRecord.question("web")
    q.add_ar(__import__("dnslib").EDNS0(udp_len=1232))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(bytes(q.pack()), ("127.0.0.1", h.udp_port))
        reply = DNSRecord.parse(s.recv(4096))
    assert [rr.rtype for rr in reply.ar] == [QTYPE.OPT]


def test_sandbox_resolv_conf() -> None:
    host = "# generated\nnameserver 127.0.0.53\nsearch corp.example lab.example\noptions edns0 trust-ad\n"
    assert sandbox_resolv_conf(host) == (
        "nameserver 127.0.0.11\nsearch corp.example lab.example\noptions edns0 trust-ad ndots:0\n")
    assert sandbox_resolv_conf("nameserver 1.1.1.1\noptions ndots:2\n") == (
        "nameserver 127.0.0.11\noptions ndots:2\n")


def test_host_upstreams(tmp_path: object) -> None:
    import pathlib
    base = pathlib.Path(str(tmp_path))
    stub = base / "resolv.conf"
    real = base / "systemd.conf"
    stub.write_text("nameserver 127.0.0.53\n")
    real.write_text("nameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver 127.0.0.11\n")
    assert host_upstreams(str(stub), str(real)) == [("192.0.2.53", 53), ("fe80::1", 53)]
    stub.write_text("nameserver 10.0.0.1 ; comment\nnameserver bogus\n")
    assert host_upstreams(str(stub), str(real)) == [("10.0.0.1", 53)]
    assert parse_nameservers("") == []
    assert host_upstreams(str(base / "missing"), str(base / "missing2")) == []
