"""FDB and neighbour entries of a VXLAN device over raw rtnetlink: one
request each for the cluster agent's per-event path (run on every host for
every endpoint attached anywhere), and the dumps the reconcile loop diffs
against (every few seconds, per network).  pyroute2 costs ~3 ms of CPU a
request and more per dumped entry; these cost a few tens of microseconds."""

from __future__ import annotations

import ipaddress
import socket
import struct

from netstack.errors import Conflict, NotFound
from netstack.kernel.rtnl import F_ACK, F_CREATE, F_DUMP, F_REPLACE, Rtnl, attr, attributes, ifinfo, mac_bytes

RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NDA_DST, NDA_LLADDR, NDA_IFINDEX = 1, 2, 8
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
AF_BRIDGE = 7
F_APPEND = 0x800

_NDMSG = struct.Struct("=BxxxiHBB")   # family, pad, pad, ifindex, state, flags, type


def _ip(address: str) -> tuple[int, bytes]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return family, socket.inet_pton(family, address)


def fdb_append(rtnl: Rtnl, vx: int, mac: str, vtep: str) -> None:
    """`bridge fdb append MAC dev VX dst VTEP self permanent` (tolerates an existing one)."""
    _, dst = _ip(vtep)
    try:
        rtnl.request(RTM_NEWNEIGH, F_ACK | F_CREATE | F_APPEND,
                     _NDMSG.pack(AF_BRIDGE, vx, NUD_PERMANENT, NTF_SELF, 0)
                     + attr(NDA_LLADDR, mac_bytes(mac)) + attr(NDA_DST, dst), f"fdb {mac} dst {vtep}")
    except Conflict:
        pass


def fdb_delete(rtnl: Rtnl, vx: int, mac: str, vtep: str) -> None:
    _, dst = _ip(vtep)
    try:
        rtnl.request(RTM_DELNEIGH, F_ACK, _NDMSG.pack(AF_BRIDGE, vx, 0, NTF_SELF, 0)
                     + attr(NDA_LLADDR, mac_bytes(mac)) + attr(NDA_DST, dst), f"fdb {mac} dst {vtep}")
    except NotFound:
        pass


def replace(rtnl: Rtnl, vx: int, ip: str, mac: str) -> None:
    """`ip neigh replace IP lladdr MAC dev VX nud permanent`."""
    family, dst = _ip(ip)
    rtnl.request(RTM_NEWNEIGH, F_ACK | F_CREATE | F_REPLACE,
                 _NDMSG.pack(family, vx, NUD_PERMANENT, 0, 0) + attr(NDA_DST, dst) + attr(NDA_LLADDR, mac_bytes(mac)),
                 f"neighbour {ip}")


def delete(rtnl: Rtnl, vx: int, ip: str) -> None:
    family, dst = _ip(ip)
    try:
        rtnl.request(RTM_DELNEIGH, F_ACK, _NDMSG.pack(family, vx, 0, 0, 0) + attr(NDA_DST, dst), f"neighbour {ip}")
    except NotFound:
        pass


def _dump(rtnl: Rtnl, body: bytes, vx: int, what: str) -> list[tuple[int, dict[int, bytes]]]:
    """(state, attributes) of the dumped entries that are on device `vx`."""
    out = []
    for payload in rtnl.request(RTM_GETNEIGH, F_DUMP, body, what):
        _, ifindex, state, _, _ = _NDMSG.unpack_from(payload)
        if ifindex == vx:
            out.append((state, dict(attributes(payload[_NDMSG.size:]))))
    return out


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def fdb_entries(rtnl: Rtnl, vx: int) -> set[tuple[str, str]]:
    """(MAC, remote VTEP) of the device's forwarding entries (`bridge fdb
    show dev VX`): an ifinfomsg-sized request is how rtnetlink's fdb dump
    is told to walk one device only."""
    entries = _dump(rtnl, ifinfo(vx, family=AF_BRIDGE), vx, f"fdb dump of link {vx}")
    return {(_mac(a[NDA_LLADDR]), str(ipaddress.ip_address(a[NDA_DST])))
            for _, a in entries if NDA_DST in a and NDA_LLADDR in a}


def entries(rtnl: Rtnl, vx: int) -> set[tuple[str, str]]:
    """(IP, MAC) of the device's permanent neighbour entries, IPv4 and IPv6
    (NDA_IFINDEX makes the kernel dump that device's only)."""
    body = _NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr(NDA_IFINDEX, struct.pack("=I", vx))
    return {(str(ipaddress.ip_address(a[NDA_DST])), _mac(a[NDA_LLADDR]))
            for state, a in _dump(rtnl, body, vx, f"neighbour dump of link {vx}")
            if state & NUD_PERMANENT and NDA_DST in a and NDA_LLADDR in a}
