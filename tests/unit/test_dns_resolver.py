"""The dnslib handling, driven through a dict-backed fake NameBackend (and
the real RecordTable where the combination matters)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from netstack.dns.backend import Addresses, NameBackend
from netstack.dns.records import RecordTable
from netstack.dns.resolver import UDP_PAYLOAD, Forward, Resolver


@dataclass
class FakeBackend:
    """sandbox -> lower name -> addresses; sandbox -> address -> ptr name."""
    names: dict[str, dict[str, Addresses]] = field(default_factory=dict)
    ptrs: dict[str, dict[str, str]] = field(default_factory=dict)
    no_forward: set[str] = field(default_factory=set)
    generation: int = 0
    asked: list[tuple[str, str]] = field(default_factory=list)

    def resolve(self, sandbox_id: str, name: str) -> Addresses | None:
        self.asked.append((sandbox_id, name))
        return self.names.get(sandbox_id, {}).get(name.lower())

    def resolve_ptr(self, sandbox_id: str, address: str) -> str | None:
        return self.ptrs.get(sandbox_id, {}).get(address)

    def may_forward(self, sandbox_id: str) -> bool:
        return sandbox_id not in self.no_forward


def fake() -> FakeBackend:
    return FakeBackend(
        names={"s1": {"web": (["10.0.0.2"], ["fd00::2"]), "v4only": (["10.0.0.4"], []),
                      "many": ([f"10.0.1.{i}" for i in range(1, 5)], []),
                      "huge": ([f"10.9.{i // 250}.{i % 250 + 1}" for i in range(60)], [])}},
        ptrs={"s1": {"10.0.0.2": "web.front", "fd00::2": "web.front"}},
        no_forward={"internal"},
    )


def ask(resolver: Resolver, name: str, qtype: str = "A", *, sandbox: str = "s1", tcp: bool = False,
        edns: int | None = None) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    out = resolver.handle(sandbox, bytes(q.pack()), tcp=tcp)
    assert isinstance(out, bytes), out
    reply = DNSRecord.parse(out)
    assert reply.header.id == q.header.id and reply.header.qr == 1
    return reply


def addrs(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr]


def test_fake_backend_satisfies_protocol() -> None:
    assert isinstance(fake(), NameBackend)


def test_a_and_aaaa_from_the_backend() -> None:
    backend = fake()
    r = Resolver(backend)
    reply = ask(r, "web")
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa == 1
    assert addrs(reply) == ["10.0.0.2"] and reply.rr[0].ttl == 600
    assert addrs(ask(r, "web", "AAAA")) == ["fd00::2"]
    assert ("s1", "web") in backend.asked


def test_case_is_echoed_and_lookup_case_insensitive() -> None:
    reply = ask(Resolver(fake()), "WeB")
    assert str(reply.q.qname) == "WeB." and str(reply.rr[0].rname) == "WeB."
    assert addrs(reply) == ["10.0.0.2"]


def test_one_family_only_is_nodata_not_forwarded() -> None:
    reply = ask(Resolver(fake()), "v4only", "AAAA")
    assert reply.header.rcode == RCODE.NOERROR and reply.rr == []


def test_other_qtypes_for_local_names_are_empty_noerror() -> None:
    for qtype in ("MX", "TXT", "SRV"):
        reply = ask(Resolver(fake()), "web", qtype)
        assert reply.header.rcode == RCODE.NOERROR and reply.rr == []


def test_round_robin_rotates_per_query() -> None:
    r = Resolver(fake())
    firsts = [addrs(ask(r, "many"))[0] for _ in range(4)]
    assert sorted(firsts) == [f"10.0.1.{i}" for i in range(1, 5)]
    assert sorted(addrs(ask(r, "many"))) == [f"10.0.1.{i}" for i in range(1, 5)]


def test_ptr() -> None:
    r = Resolver(fake())
    reply = ask(r, "2.0.0.10.in-addr.arpa", "PTR")
    assert addrs(reply) == ["web.front."]
    v6 = ipaddress.IPv6Address("fd00::2").reverse_pointer
    assert addrs(ask(r, v6, "PTR")) == ["web.front."]
    out = r.handle("s1", bytes(DNSRecord.question("9.9.0.10.in-addr.arpa", "PTR").pack()), tcp=False)
    assert isinstance(out, Forward)


def test_non_local_names_are_forwarded_unchanged() -> None:
    packet = bytes(DNSRecord.question("example.com").pack())
    out = Resolver(fake()).handle("s1", packet, tcp=False)
    assert out == Forward("s1", packet, False)


def test_names_of_other_sandboxes_are_nxdomain() -> None:
    assert ask(Resolver(fake()), "web", sandbox="s2").header.rcode == RCODE.NXDOMAIN


def test_internal_only_sandbox_gets_nxdomain_not_forward() -> None:
    reply = ask(Resolver(fake()), "example.com", sandbox="internal")
    assert reply.header.rcode == RCODE.NXDOMAIN


def test_edns_answered_with_opt_and_do_bit_copied() -> None:
    reply = ask(Resolver(fake()), "web", edns=4096)
    opt = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    assert len(opt) == 1 and opt[0].rclass == UDP_PAYLOAD
    q = DNSRecord.question("web")
    q.add_ar(EDNS0(udp_len=1232, flags="do"))
    reply = DNSRecord.parse(Resolver(fake()).handle("s1", bytes(q.pack()), tcp=False))  # type: ignore[arg-type]
    assert reply.ar[0].ttl & 0x8000
    assert not [rr for rr in ask(Resolver(fake()), "web").ar if rr.rtype == QTYPE.OPT]


def test_edns_version_1_is_badvers() -> None:
    q = DNSRecord.question("web")
    q.add_ar(EDNS0(udp_len=1232, version=1))
    reply = DNSRecord.parse(Resolver(fake()).handle("s1", bytes(q.pack()), tcp=False))  # type: ignore[arg-type]
    assert (reply.ar[0].ttl >> 24) == 1 and reply.rr == []


def test_truncation_over_udp_size_and_full_over_tcp() -> None:
    r = Resolver(fake())
    small = ask(r, "huge")  # 60 A records > 512 bytes
    assert small.header.tc == 1 and small.rr == [] and str(small.q.qname) == "huge."
    big = ask(r, "huge", edns=4096)  # fits in 1232
    assert big.header.tc == 0 and len(big.rr) == 60
    tcp = ask(r, "huge", tcp=True)
    assert tcp.header.tc == 0 and len(tcp.rr) == 60


def test_udp_payload_capped_at_our_size() -> None:
    backend = fake()
    backend.names["s1"]["giant"] = ([f"10.8.{i // 250}.{i % 250 + 1}" for i in range(100)], [])
    r = Resolver(backend)
    assert ask(r, "giant", edns=65000).header.tc == 1
    assert len(ask(r, "giant", tcp=True).rr) == 100


@pytest.mark.parametrize("qtype", ["ANY", "AXFR", "IXFR"])
def test_any_and_zone_transfers_are_notimp(qtype: str) -> None:
    assert ask(Resolver(fake()), "web", qtype).header.rcode == RCODE.NOTIMP


def test_opcode_other_than_query_is_notimp() -> None:
    q = DNSRecord.question("web")
    q.header.opcode = 5  # UPDATE
    out = Resolver(fake()).handle("s1", bytes(q.pack()), tcp=False)
    assert isinstance(out, bytes)
    assert out[:2] == bytes(q.pack())[:2] and out[3] & 0x0F == RCODE.NOTIMP and out[2] & 0x80


def test_class_other_than_in_is_refused() -> None:
    q = DNSRecord.question("version.bind", "TXT", "CH")
    reply = DNSRecord.parse(Resolver(fake()).handle("s1", bytes(q.pack()), tcp=False))  # type: ignore[arg-type]
    assert reply.header.rcode == RCODE.REFUSED


def test_malformed_is_formerr_and_responses_are_dropped() -> None:
    r = Resolver(fake())
    good = bytes(DNSRecord.question("web").pack())
    garbage = good[:12] + b"\x3fabc"
    out = r.handle("s1", garbage, tcp=False)
    assert isinstance(out, bytes) and out[3] & 0x0F == RCODE.FORMERR and out[:2] == good[:2]
    assert r.handle("s1", b"\x00\x01\x02", tcp=False) is None  # shorter than a header
    response = bytes([good[0], good[1], good[2] | 0x80]) + good[3:]
    assert r.handle("s1", response, tcp=False) is None  # QR set: never answer an answer
    no_question = good[:4] + b"\x00\x00" + good[6:12]
    out = r.handle("s1", no_question, tcp=False)
    assert isinstance(out, bytes) and out[3] & 0x0F == RCODE.FORMERR


def test_two_questions_is_formerr() -> None:
    q = DNSRecord.question("web")
    q.add_question(*DNSRecord.question("v4only").questions)
    reply = DNSRecord.parse(Resolver(fake()).handle("s1", bytes(q.pack()), tcp=False))  # type: ignore[arg-type]
    assert reply.header.rcode == RCODE.FORMERR


def test_single_label_miss_is_nxdomain_without_forwarding() -> None:
    assert ask(Resolver(fake()), "nosuch").header.rcode == RCODE.NXDOMAIN
    out = Resolver(fake()).handle("s1", bytes(DNSRecord.question("com", "NS").pack()), tcp=False)
    assert isinstance(out, Forward)


def test_with_real_record_table() -> None:
    t = RecordTable()
    t.add_endpoint("n1", "front", "e1", ["web"], "10.0.0.2", None)
    t.add_endpoint("n2", "back", "e2", ["db"], "10.1.0.2", None)
    t.set_sandbox_networks("s1", ["n1"])
    r = Resolver(t)
    assert addrs(ask(r, "WEB.FRONT")) == ["10.0.0.2"]
    assert ask(r, "db").header.rcode == RCODE.NXDOMAIN
    assert isinstance(r.handle("s1", bytes(DNSRecord.question("db.back").pack()), tcp=False), Forward)
    assert addrs(ask(r, "2.0.0.10.in-addr.arpa", "PTR")) == ["web.front."]
    t.remove_endpoint("n1", "e1")
    assert ask(r, "web").header.rcode == RCODE.NXDOMAIN
