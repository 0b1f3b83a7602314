"""The DNS query handler: bytes in, bytes (or a forward request) out.

Pure: no sockets, no clock, no threads.  The server calls ``answer`` on a
cache miss and keeps what it returns; ``handle`` is the one-shot form.

Wire decisions (each also stated where it is made):

* A/AAAA for a visible name: every address, TTL 600 (as Docker), with the
  rotations needed for round-robin prebuilt; a name that exists in one family
  only answers NOERROR with no data for the other; any other qtype for a
  visible name answers NOERROR with no data (it is ours, so asking upstream
  would only leak it).
* PTR for a visible endpoint address: ``name.network.`` (as Docker).
* Not visible: forwarded, unless the sandbox may not forward (internal
  networks only) → NXDOMAIN, and except single-label A/AAAA → NXDOMAIN right
  away: a bare label can only be a container name, so forwarding it would
  leak the name upstream and wait for the same NXDOMAIN (the container gets
  ``ndots:0``, so its stub never appends a search domain to it first).
* Header: QR set → dropped (never answer an answer: no reflection loops);
  shorter than a header → dropped; opcode ≠ QUERY → NOTIMP; unparsable,
  QDCOUNT ≠ 1 or two OPT records → FORMERR; EDNS version ≠ 0 → BADVERS;
  class ≠ IN → REFUSED; ANY, AXFR, IXFR, MAILA, MAILB → NOTIMP on either
  transport (we are not an authoritative server, and ANY is an amplifier).
* EDNS0: a query with OPT gets OPT back (our payload size, DO copied).
  UDP replies are limited to max(512, min(client payload, 1232)); over that,
  the reply carries the question and TC=1 so the client retries over TCP,
  where up to 65535 bytes are served.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Sequence

from dnslib import (AAAA, CLASS, EDNS0, PTR, QTYPE, RCODE, RR, A, DNSHeader,
                    DNSLabel, DNSQuestion, DNSRecord)

from netstack.dns.backend import NameBackend

__all__ = ["Answer", "Forward", "Resolver", "TTL", "UDP_PAYLOAD", "question_key"]

TTL = 600
#: our EDNS payload size: the DNS flag day 2020 value, never fragmented
UDP_PAYLOAD = 1232
MAX_ROTATIONS = 8

_NOT_SERVED = {QTYPE.ANY, QTYPE.AXFR, QTYPE.IXFR, 253, 254}  # 253 MAILB, 254 MAILA
_BADVERS = 16


@dataclass(frozen=True, slots=True)
class Forward:
    """Ask the upstreams: `packet` is the client's query, unchanged."""
    sandbox_id: str
    packet: bytes
    tcp: bool


@dataclass(frozen=True, slots=True)
class Answer:
    """A local answer.  `responses` are complete wire messages carrying the
    query's id, one per round-robin rotation (usually one); `cacheable`
    says the same query bytes always get these responses until the
    backend's generation moves."""
    responses: tuple[bytes, ...]
    cacheable: bool


def _error(packet: bytes, rcode: int) -> Answer:
    """A bare reply (header only) for a query we could not or would not parse."""
    rd = packet[2] & 0x01
    opcode = packet[2] & 0x78
    header = packet[:2] + bytes([0x80 | opcode | rd, 0x80 | rcode]) + bytes(8)
    return Answer((header,), cacheable=False)


def question_key(packet: bytes) -> bytes:
    """The first question's bytes, lowercased: name, type and class."""
    i = 12
    while i < len(packet) and packet[i]:
        i += 1 + packet[i]
    return packet[12:i + 5].lower()


def _qname_text(qname: DNSLabel) -> str | None:
    """The name as a lookup key, or None when it cannot be one of ours."""
    labels = qname.label
    if any(b"." in lb for lb in labels):
        return None
    try:
        return b".".join(labels).decode("ascii")
    except UnicodeDecodeError:
        return None


def _reverse_address(name: str) -> str | None:
    labels = name.lower().split(".")
    try:
        if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
            return str(ipaddress.IPv4Address(".".join(reversed(labels[:4]))))
        if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
            nibbles = "".join(reversed(labels[:32]))
            return str(ipaddress.IPv6Address(int(nibbles, 16)))
    except ValueError:
        return None
    return None


class Resolver:
    """Answers queries from a sandbox out of a NameBackend."""

    def __init__(self, backend: NameBackend, *, ttl: int = TTL,
                 max_rotations: int = MAX_ROTATIONS) -> None:
        self.backend = backend
        self.ttl = ttl
        self.max_rotations = max_rotations
        self._turns: dict[tuple[str, bytes], int] = {}

    def handle(self, sandbox_id: str, packet: bytes, *, tcp: bool) -> bytes | None | Forward:
        """One query → one response (rotated per call), a Forward, or None
        (drop).  Never raises on hostile input."""
        result = self.answer(sandbox_id, packet, tcp=tcp)
        if result is None or isinstance(result, Forward):
            return result
        responses = result.responses
        if len(responses) == 1:
            return responses[0]
        return self.pick(sandbox_id, bytes(packet), responses)

    def pick(self, sandbox_id: str, packet: bytes, responses: tuple[bytes, ...]) -> bytes:
        """The next round-robin rotation for this sandbox and question.
        Keyed by the question, not the whole query, since queries carrying
        an EDNS cookie (dig's default) are all different."""
        if len(responses) == 1:
            return responses[0]
        if len(self._turns) > 4096:
            self._turns.clear()
        key = (sandbox_id, question_key(packet))
        turn = self._turns.get(key, 0)
        self._turns[key] = turn + 1
        return responses[turn % len(responses)]

    def error_reply(self, packet: bytes, rcode: int, *, tcp: bool) -> bytes:
        """A reply to `packet` with `rcode` and no answer (the server's
        SERVFAIL when every upstream failed, REFUSED when too many queries
        are in flight), carrying the question and OPT when they parse."""
        packet = bytes(packet)
        try:
            query = DNSRecord.parse(packet)
            opts = [rr for rr in query.ar if rr.rtype == QTYPE.OPT]
            if len(query.questions) == 1:
                return self._reply(query, opts[0] if opts else None, tcp, rcode=rcode).responses[0]
        except Exception:  # fall back to a bare header
            pass
        return _error(packet, rcode).responses[0]

    def answer(self, sandbox_id: str, packet: bytes, *, tcp: bool) -> Answer | Forward | None:
        """Like handle, but with every rotation of a local answer and
        whether it may be cached; what the server calls on a cache miss."""
        packet = bytes(packet)
        if len(packet) < 12 or packet[2] & 0x80:
            return None
        if packet[2] & 0x78:
            return _error(packet, RCODE.NOTIMP)
        try:
            query = DNSRecord.parse(packet)
        except Exception:  # dnslib raises several kinds on garbage
            return _error(packet, RCODE.FORMERR)
        try:
            return self._answer(sandbox_id, packet, query, tcp)
        except Exception:  # e.g. a name dnslib parsed but cannot re-pack
            return _error(packet, RCODE.SERVFAIL)

    def _answer(self, sandbox_id: str, packet: bytes, query: DNSRecord,
                tcp: bool) -> Answer | Forward | None:
        opts = [rr for rr in query.ar if rr.rtype == QTYPE.OPT]
        if len(query.questions) != 1 or len(opts) > 1:
            return _error(packet, RCODE.FORMERR)
        opt = opts[0] if opts else None
        if opt is not None and (opt.ttl >> 16) & 0xFF:
            return self._reply(query, opt, tcp, ext_rcode=_BADVERS)
        q = query.q
        if q.qclass != CLASS.IN:
            return self._reply(query, opt, tcp, rcode=RCODE.REFUSED)
        if q.qtype in _NOT_SERVED:
            return self._reply(query, opt, tcp, rcode=RCODE.NOTIMP)
        name = _qname_text(q.qname)
        if name is None:
            return self._forward_or_nx(sandbox_id, packet, query, opt, tcp)
        if q.qtype == QTYPE.PTR:
            address = _reverse_address(name)
            target = self.backend.resolve_ptr(sandbox_id, address) if address else None
            if target is not None:
                rr = RR(q.qname, QTYPE.PTR, ttl=self.ttl, rdata=PTR(target + "."))
                return self._reply(query, opt, tcp, rrs=[[rr]])
            return self._forward_or_nx(sandbox_id, packet, query, opt, tcp)
        found = self.backend.resolve(sandbox_id, name) if name else None
        if found is None:
            if "." not in name and q.qtype in (QTYPE.A, QTYPE.AAAA):
                return self._reply(query, opt, tcp, rcode=RCODE.NXDOMAIN)
            return self._forward_or_nx(sandbox_id, packet, query, opt, tcp)
        if q.qtype == QTYPE.A:
            rdatas = [A(a) for a in found[0]]
        elif q.qtype == QTYPE.AAAA:
            rdatas = [AAAA(a) for a in found[1]]
        else:
            rdatas = []
        rrs = [RR(q.qname, q.qtype, ttl=self.ttl, rdata=r) for r in rdatas]
        return self._reply(query, opt, tcp, rrs=self._rotations(rrs))

    def _rotations(self, rrs: list[RR]) -> list[list[RR]]:
        """Round-robin: the answer order starts at a different address on
        each rotation.  At most max_rotations are prebuilt, so a cached
        entry stays small however many endpoints share an alias."""
        k = len(rrs)
        if k < 2:
            return [rrs]
        n = min(k, self.max_rotations)
        return [rrs[i * k // n:] + rrs[:i * k // n] for i in range(n)]

    def _forward_or_nx(self, sandbox_id: str, packet: bytes, query: DNSRecord,
                       opt: RR | None, tcp: bool) -> Answer | Forward:
        if self.backend.may_forward(sandbox_id):
            return Forward(sandbox_id, packet, tcp)
        return self._reply(query, opt, tcp, rcode=RCODE.NXDOMAIN)

    def _reply(self, query: DNSRecord, opt: RR | None, tcp: bool, *, rcode: int = RCODE.NOERROR,
               ext_rcode: int = 0, rrs: Sequence[list[RR]] = ((),)) -> Answer:
        limit = 65535 if tcp else max(512, min(opt.rclass if opt else 512, UDP_PAYLOAD))
        responses = tuple(self._pack(query, opt, rcode, ext_rcode, list(answers), limit)
                          for answers in rrs)
        return Answer(responses, cacheable=True)

    def _pack(self, query: DNSRecord, opt: RR | None, rcode: int, ext_rcode: int,
              answers: list[RR], limit: int) -> bytes:
        qh = query.header
        header = DNSHeader(id=qh.id, qr=1, aa=1, ra=1, rd=qh.rd, cd=qh.cd, rcode=rcode)
        reply = DNSRecord(header, q=DNSQuestion(query.q.qname, query.q.qtype, query.q.qclass))
        reply.add_answer(*answers)
        if opt is not None:
            reply.add_ar(EDNS0(udp_len=UDP_PAYLOAD, ext_rcode=ext_rcode >> 4,
                               flags="do" if opt.ttl & 0x8000 else ""))
        wire = bytes(reply.pack())
        if len(wire) > limit:
            reply.rr = []
            reply.header.tc = 1
            wire = bytes(reply.pack())
        return wire
