"""A small ctnetlink client: list and delete conntrack entries of the
calling thread's network namespace.

Why it exists.  The embedded DNS reaches its listener through a DNAT rule
inside the sandbox (127.0.0.11:53 -> 127.0.0.11:<kernel-chosen port>).  NAT
is decided once per connection, on its first packet, and kept in the
conntrack entry; a UDP "connection" is a 5-tuple that lives while packets
keep coming (30 s after the last one, or longer once a reply was seen).
When the listener is re-opened on new ports (pynetd restarted, or the
sandbox left its last network and joined one again), the rule is rewritten,
but an entry made under the old rule still sends that 5-tuple to the old,
closed port: a client that reuses its source port -- a stub resolver on a
fixed port, or one whose random port comes round again -- gets no answer,
and every retry refreshes the stale entry.  So whoever rewrites the rule
deletes the entries that point elsewhere (`delete_stale_dnat`).

A dump walks the conntrack hash table, which is one for the whole machine
(~15 ms here with 262,144 buckets), so it is done only when the namespace
holds any entry at all (a stats request, ~0.1 ms).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass

from netstack.errors import Internal

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_GET_STATS = 1, 2, 5
CTA_STATS_GLOBAL_ENTRIES = 1
F_ACK, F_DUMP = 0x4, 0x300
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_ZONE = 1, 2, 18
CTA_TUPLE_IP, CTA_TUPLE_PROTO, CTA_TUPLE_ZONE = 1, 2, 3
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
NLA_F_NESTED = 0x8000

_NFGEN = struct.Struct("=BBH")  # family, version, res_id (big endian, 0)


@dataclass(frozen=True)
class Tuple:
    src: str
    dst: str
    proto: int
    sport: int
    dport: int


@dataclass(frozen=True)
class Entry:
    orig: Tuple
    reply: Tuple
    zone: bytes | None = None  # the CTA_ZONE attribute as dumped, kept for the delete


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _attrs(data: bytes) -> dict[int, bytes]:
    out = {}
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[offset + 4: offset + length]
        offset += (length + 3) & ~3
    return out


def _parse_tuple(data: bytes) -> Tuple | None:
    a = _attrs(data)
    ip, proto = _attrs(a.get(CTA_TUPLE_IP, b"")), _attrs(a.get(CTA_TUPLE_PROTO, b""))
    if CTA_IP_V4_SRC not in ip or CTA_IP_V4_DST not in ip or CTA_PROTO_NUM not in proto:
        return None  # not IPv4, or a protocol without ports we care about
    port = lambda k: struct.unpack("!H", proto[k][:2])[0] if k in proto else 0  # noqa: E731
    return Tuple(socket.inet_ntoa(ip[CTA_IP_V4_SRC][:4]), socket.inet_ntoa(ip[CTA_IP_V4_DST][:4]),
                 proto[CTA_PROTO_NUM][0], port(CTA_PROTO_SRC_PORT), port(CTA_PROTO_DST_PORT))


def _tuple_attr(kind: int, t: Tuple) -> bytes:
    ip = _attr(CTA_IP_V4_SRC, ipaddress.IPv4Address(t.src).packed) + _attr(CTA_IP_V4_DST, ipaddress.IPv4Address(t.dst).packed)
    proto = (_attr(CTA_PROTO_NUM, bytes([t.proto])) + _attr(CTA_PROTO_SRC_PORT, struct.pack("!H", t.sport))
             + _attr(CTA_PROTO_DST_PORT, struct.pack("!H", t.dport)))
    return _attr(kind | NLA_F_NESTED, _attr(CTA_TUPLE_IP | NLA_F_NESTED, ip) + _attr(CTA_TUPLE_PROTO | NLA_F_NESTED, proto))


class Conntrack:
    """A ctnetlink handle in the namespace of the thread that makes it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Conntrack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, msg: int, flags: int, body: bytes) -> list[bytes]:
        from netstack.kernel.rtnl import exchange

        self._seq += 1
        answers = exchange(self.sock, (NFNL_SUBSYS_CTNETLINK << 8) | msg, flags, self._seq,
                           _NFGEN.pack(socket.AF_INET, 0, 0) + body)
        return [a[_NFGEN.size:] for a in answers]

    def count(self) -> int:
        """How many entries this namespace's table holds (one cheap request;
        a dump walks the whole, machine-wide hash table: ~15 ms here)."""
        try:
            msgs = self._request(IPCTNL_MSG_CT_GET_STATS, 0, b"")
        except OSError as exc:
            raise Internal(f"conntrack stats: {exc.strerror}") from exc
        for m in msgs:
            value = _attrs(m).get(CTA_STATS_GLOBAL_ENTRIES)
            if value is not None:
                return struct.unpack("!I", value[:4])[0]
        return 0

    def entries(self) -> list[Entry]:
        """Every IPv4 entry of this namespace's table."""
        try:
            msgs = self._request(IPCTNL_MSG_CT_GET, F_DUMP, b"")
        except OSError as exc:
            raise Internal(f"conntrack dump: {exc.strerror}") from exc
        out = []
        for m in msgs:
            a = _attrs(m)
            orig = _parse_tuple(a.get(CTA_TUPLE_ORIG, b""))
            reply = _parse_tuple(a.get(CTA_TUPLE_REPLY, b""))
            if orig is not None and reply is not None:
                out.append(Entry(orig, reply, a.get(CTA_ZONE)))
        return out

    def delete(self, e: Entry) -> bool:
        """Delete one entry (by its original tuple); False if it was gone."""
        body = _tuple_attr(CTA_TUPLE_ORIG, e.orig)
        if e.zone is not None:
            body += _attr(CTA_ZONE, e.zone)
        try:
            self._request(IPCTNL_MSG_CT_DELETE, F_ACK, body)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False  # expired meanwhile
            raise Internal(f"conntrack delete: {exc.strerror}") from exc
        return True


def delete_stale_dnat(address: str, port: int, now_to: dict[int, int]) -> int:
    """In the calling thread's namespace: delete the entries of connections
    to `address`:`port` whose reply does not come from the port that
    `now_to` (IP protocol number -> port) says the DNAT rule now sends that
    protocol to -- entries made under an older rule.  Returns how many."""
    n = 0
    with Conntrack() as ct:
        if not ct.count():
            return 0
        for e in ct.entries():
            o = e.orig
            if o.dst == address and o.dport == port and o.proto in now_to and e.reply.sport != now_to[o.proto]:
                n += ct.delete(e)
    return n
