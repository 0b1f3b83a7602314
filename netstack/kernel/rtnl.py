"""A small, fast rtnetlink client for the attach/detach hot path.

pyroute2 (used for everything else in kernel/links.py) spends ~3 ms per
request in its asyncio machinery; an attach needs half a dozen requests, so
the connect path speaks rtnetlink directly: one sendto and one recv per
request, ~0.1 ms.  Only the messages that path needs are here: create a
veth whose peer is born in the sandbox, set an alias, add an address, bring
a link up, replace or delete a route, look up and delete a link; and the
reads the overlay's reconcile loop makes every few seconds (a link's state,
a link's addresses).

A handle belongs to the namespace its socket was created in; `in_netns`
creates one inside a sandbox (by a short-lived thread), and the controller
keeps it for the sandbox's lifetime.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from typing import NamedTuple

from netstack.errors import Conflict, Internal, InvalidParameter, NotFound

NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
F_DUMP = 0x300
F_REQUEST, F_ACK, F_ECHO, F_REPLACE, F_EXCL, F_CREATE = 0x1, 0x4, 0x8, 0x100, 0x200, 0x400
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER = 1, 3, 4, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_LINK, IFLA_MACVLAN_MODE = 5, 1
IFLA_AF_SPEC, IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 26, 8, 1
IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA, IFLA_BRPORT_MODE = 4, 5, 4
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_FLAGS, IFA_F_NODAD = 1, 2, 4, 8, 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
IFF_UP = 1
NLA_F_NESTED = 0x8000
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 4, 0, 1

_HDR = struct.Struct("=LHHLL")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


#: IFLA_AF_SPEC for "no IPv6 address generation" (Rtnl.no_ipv6_link_local)
_NO_IPV6_ADDR_GEN = nested(IFLA_AF_SPEC, nested(socket.AF_INET6, attr(IFLA_INET6_ADDR_GEN_MODE,
                                                                      bytes([IN6_ADDR_GEN_MODE_NONE]))))


def ifinfo(index: int = 0, flags: int = 0, change: int = 0, family: int = socket.AF_UNSPEC) -> bytes:
    return _IFINFO.pack(family, 0, index, flags, change)


def mac_bytes(mac: str) -> bytes:
    try:
        raw = bytes(int(x, 16) for x in mac.split(":"))
    except ValueError:
        raise InvalidParameter(f"invalid MAC address {mac!r}") from None
    if len(raw) != 6:
        raise InvalidParameter(f"invalid MAC address {mac!r}")
    return raw


def veth_request(host: str, peer: str, *, peer_netns_fd: int, peer_mac: str, mtu: int,
                 master: int) -> bytes:
    """RTM_NEWLINK body: host end up (on `master`, unless 0), peer (down: the kernel
    refuses to open a veth end before its pair exists) inside the sandbox."""
    peer_info = ifinfo() + b"".join((
        attr(IFLA_IFNAME, peer.encode() + b"\0"),
        attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd)),
        attr(IFLA_ADDRESS, mac_bytes(peer_mac)),
        attr(IFLA_MTU, struct.pack("=I", mtu)),
    ))
    body = ifinfo(flags=IFF_UP, change=IFF_UP) + b"".join((
        attr(IFLA_IFNAME, host.encode() + b"\0"),
        attr(IFLA_MTU, struct.pack("=I", mtu)),
        attr(IFLA_MASTER, struct.pack("=I", master)) if master else b"",
        nested(IFLA_LINKINFO, attr(IFLA_INFO_KIND, b"veth"),
               nested(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_info))),
    ))
    return body


def macvlan_request(name: str, *, parent: int, mode: str, mtu: int, mac: str, netns_fd: int) -> bytes:
    """RTM_NEWLINK body: a macvlan on `parent`, born inside the sandbox."""
    body = ifinfo() + b"".join((
        attr(IFLA_IFNAME, name.encode() + b"\0"),
        attr(IFLA_LINK, struct.pack("=I", parent)),
        attr(IFLA_MTU, struct.pack("=I", mtu)),
        attr(IFLA_NET_NS_FD, struct.pack("=I", netns_fd)),
        nested(IFLA_LINKINFO, attr(IFLA_INFO_KIND, b"macvlan"),
               nested(IFLA_INFO_DATA, attr(IFLA_MACVLAN_MODE, struct.pack("=I", MACVLAN_MODES[mode])))),
    ))
    if mac:
        body += attr(IFLA_ADDRESS, mac_bytes(mac))
    return body


class LinkState(NamedTuple):
    index: int
    up: bool
    master: int          # 0: none
    alias: str


def parse_link(payload: bytes) -> tuple[int, dict[int, bytes]]:
    """(index, attributes by type) of an RTM_NEWLINK message."""
    return _IFINFO.unpack_from(payload)[2], dict(attributes(payload[_IFINFO.size:]))


def link_and_peer(payload: bytes) -> tuple[int, int]:
    """(index, IFLA_LINK) of an RTM_NEWLINK message: for a veth end, its
    own index and its peer's index in the peer's namespace."""
    index, attrs = parse_link(payload)
    peer = attrs.get(IFLA_LINK, b"")
    return index, struct.unpack("=I", peer)[0] if len(peer) == 4 else 0


def hairpin_request(port: str) -> bytes:
    """RTM_NEWLINK body: bridge port `port` (by name) in hairpin mode, as
    `ip link set dev PORT type bridge_slave hairpin on` sends it."""
    return ifinfo() + attr(IFLA_IFNAME, port.encode() + b"\0") + nested(
        IFLA_LINKINFO, attr(IFLA_INFO_SLAVE_KIND, b"bridge\0"),
        nested(IFLA_INFO_SLAVE_DATA, attr(IFLA_BRPORT_MODE, b"\x01")))


def addr_request(index: int, cidr: str) -> bytes:
    iface = ipaddress.ip_interface(cidr)
    family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
    packed = iface.ip.packed
    body = _IFADDR.pack(family, iface.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
    body += attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)
    if iface.version == 4 and iface.network.prefixlen < 31:
        body += attr(IFA_BROADCAST, iface.network.broadcast_address.packed)
    if iface.version == 6:
        body += attr(IFA_FLAGS, struct.pack("=I", IFA_F_NODAD))
    return body


def route_request(dst: str, gateway: str = "", oif: int = 0) -> bytes:
    net = ipaddress.ip_network(dst)
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    body = _RTMSG.pack(family, net.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC,
                       RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    if net.prefixlen:
        body += attr(RTA_DST, net.network_address.packed)
    if gateway:
        body += attr(RTA_GATEWAY, ipaddress.ip_address(gateway).packed)
    if oif:
        body += attr(RTA_OIF, struct.pack("=I", oif))
    return body


class Rtnl:
    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self._seq = 0

    @classmethod
    def in_netns(cls, path: str) -> "Rtnl":
        """A handle kept for a sandbox's lifetime: its fd goes above
        FD_SETSIZE (see kernel/fds.py)."""
        from netstack.kernel.netns import run_in_netns

        return cls.kept(run_in_netns(path, cls.new_socket))

    @staticmethod
    def new_socket() -> socket.socket:
        """A netlink socket of the calling thread's namespace (call it
        inside the namespace wanted; wrap it with `kept`)."""
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)

    @classmethod
    def kept(cls, sock: socket.socket) -> "Rtnl":
        from netstack.kernel.fds import move_high

        return cls(move_high(sock))

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes, what: str) -> list[bytes]:
        """Send one request; return the payloads of the answers (for a GET),
        raising the error kind that matches the kernel's errno."""
        self._seq += 1
        try:
            return exchange(self.sock, kind, flags, self._seq, body)
        except OSError as exc:
            raise _error(exc.errno, what) from None

    def _link_message(self, name: str) -> bytes | None:
        """The RTM_NEWLINK answer for link `name`, None if there is none."""
        try:
            answers = self.request(RTM_GETLINK, 0, ifinfo() + attr(IFLA_IFNAME, name.encode() + b"\0"),
                                   f"link {name}")
        except NotFound:
            return None
        return answers[0] if answers else None

    def link(self, name: str) -> tuple[int, dict[int, bytes]] | None:
        """(index, attributes by type) of link `name`, None if there is none."""
        message = self._link_message(name)
        return parse_link(message) if message is not None else None

    def link_index(self, name: str) -> int | None:
        found = self.link(name)
        return found[0] if found else None

    def link_state(self, name: str) -> LinkState | None:
        """Index, up flag, master and alias of link `name`, None if there is none."""
        message = self._link_message(name)
        if message is None:
            return None
        _, _, index, flags, _ = _IFINFO.unpack_from(message)
        attrs = dict(attributes(message[_IFINFO.size:]))
        master = attrs.get(IFLA_MASTER, b"")
        return LinkState(index, bool(flags & IFF_UP), struct.unpack("=I", master)[0] if len(master) == 4 else 0,
                         text(attrs.get(IFLA_IFALIAS)))

    def addresses(self, index: int) -> list[str]:
        """The global-scope addresses (no prefix) on link `index`, IPv4 and IPv6."""
        out = []
        for payload in self.request(RTM_GETADDR, F_DUMP, _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0), "address dump"):
            _, _, _, scope, owner = _IFADDR.unpack_from(payload)
            if owner != index or scope != RT_SCOPE_UNIVERSE:
                continue
            attrs = dict(attributes(payload[_IFADDR.size:]))
            value = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if value:
                out.append(str(ipaddress.ip_address(value)))
        return out

    def create_veth(self, host: str, peer: str, *, peer_netns_fd: int, peer_mac: str, mtu: int,
                    master: int, alias: str = "") -> int:
        """Create the pair; return the peer's index inside its namespace (0
        if this kernel does not echo the new link, Linux < 6.1), which
        spares the caller a lookup there."""
        # The kernel ignores IFLA_IFALIAS in a create request, and without the
        # alias start-up cannot tell an orphan veth from somebody else's.  It
        # is set before the link joins the bridge: an alias change notifies
        # NETDEV_CHANGE, for which the bridge walks all its ports (0.5 ms
        # with 500 of them, against 0.05 ms off the bridge).
        echoed = self.request(RTM_NEWLINK, F_ACK | F_CREATE | F_EXCL | F_ECHO,
                              veth_request(host, peer, peer_netns_fd=peer_netns_fd, peer_mac=peer_mac, mtu=mtu,
                                           master=0 if alias else master),
                              f"veth {host}/{peer}")
        index, peer_index = link_and_peer(echoed[0]) if echoed else (0, 0)
        if alias:
            index = index or self.link_index(host) or 0
            if not index:
                raise NotFound(f"veth {host}: gone right after it was made")
            try:
                # No IPv6 address generation either: a bridge port needs no
                # link-local address, and each one brings multicast neighbour
                # entries the kernel walks on some link events (a cost that
                # grew with every endpoint of the host).
                self.set_alias(index, alias, no_ipv6_link_local=True)
                if master:
                    self.request(RTM_NEWLINK, F_ACK, ifinfo(index) + attr(IFLA_MASTER, struct.pack("=I", master)),
                                 f"veth {host} onto bridge {master}")
            except BaseException:
                self.delete_link(host)  # the peer goes with it
                raise
        return peer_index

    def create_macvlan(self, name: str, *, parent: int, mode: str, mtu: int, mac: str, netns_fd: int) -> None:
        self.request(RTM_NEWLINK, F_ACK | F_CREATE | F_EXCL,
                     macvlan_request(name, parent=parent, mode=mode, mtu=mtu, mac=mac, netns_fd=netns_fd),
                     f"macvlan link {name}")

    def set_alias(self, index: int, alias: str, *, no_ipv6_link_local: bool = False) -> None:
        """The alias, and with `no_ipv6_link_local` that too in the same
        request (see `no_ipv6_link_local`; a kernel without IPv6 refuses
        that half, and gets the alias alone)."""
        body = ifinfo(index) + attr(IFLA_IFALIAS, alias.encode() + b"\0")
        if no_ipv6_link_local:
            try:
                self.request(RTM_NEWLINK, F_ACK, body + _NO_IPV6_ADDR_GEN, f"alias of link {index}")
                return
            except Internal:
                pass
        self.request(RTM_NEWLINK, F_ACK, body, f"alias of link {index}")

    def set_hairpin(self, port: str) -> None:
        self.request(RTM_NEWLINK, F_ACK, hairpin_request(port), f"hairpin mode of bridge port {port}")

    def no_ipv6_link_local(self, index: int) -> None:
        """No IPv6 address generation on link `index` (still down): no
        link-local address, so none of the DAD probes, router solicitations
        and MLD reports that follow one.  A bridge has no multicast querier
        and floods those to every port, so each new member of a network
        would cost every other member some work.  IPv6 stays enabled: an
        address configured by hand still works.  A kernel without IPv6
        refuses, which is fine (nothing to silence)."""
        try:
            self.request(RTM_NEWLINK, F_ACK, ifinfo(index) + _NO_IPV6_ADDR_GEN,
                         f"IPv6 address generation of link {index}")
        except Internal:
            pass

    def link_up(self, index: int) -> None:
        self.request(RTM_NEWLINK, F_ACK, ifinfo(index, IFF_UP, IFF_UP), f"link {index} up")

    def add_address(self, index: int, cidr: str) -> None:
        self.request(RTM_NEWADDR, F_ACK | F_CREATE | F_EXCL, addr_request(index, cidr), f"address {cidr}")

    def replace_route(self, dst: str, gateway: str = "", oif: int = 0) -> None:
        self.request(RTM_NEWROUTE, F_ACK | F_CREATE | F_REPLACE, route_request(dst, gateway, oif),
                     f"route {dst} via {gateway or 'link'}")

    def delete_route(self, dst: str) -> None:
        try:
            self.request(RTM_DELROUTE, F_ACK, route_request(dst), f"route {dst}")
        except NotFound:
            pass

    def create_link(self, name: str, kind: str, *, mtu: int, alias: str = "", mac: str = "") -> int:
        """A new link of `kind` (bridge, ...), down; returns its index."""
        self.request(RTM_NEWLINK, F_ACK | F_CREATE | F_EXCL,
                     ifinfo() + attr(IFLA_IFNAME, name.encode() + b"\0") + attr(IFLA_MTU, struct.pack("=I", mtu))
                     + (attr(IFLA_ADDRESS, mac_bytes(mac)) if mac else b"")
                     + nested(IFLA_LINKINFO, attr(IFLA_INFO_KIND, kind.encode())), f"{kind} {name}")
        index = self.link_index(name)
        if index is None:
            raise Internal(f"{kind} {name} vanished right after it was made")
        if alias:
            self.set_alias(index, alias)
        return index

    def routes(self) -> list[str]:
        """Destinations (CIDR) of the main table's routes, IPv4 and IPv6,
        the default routes left out."""
        out: list[str] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
            for payload in self.request(RTM_GETROUTE, F_DUMP, body, "route dump"):
                fam, dst_len, _, _, table, _, _, _, _ = _RTMSG.unpack_from(payload)
                if table != RT_TABLE_MAIN or not dst_len:
                    continue
                for kind, value in attributes(payload[_RTMSG.size:]):
                    if kind == RTA_DST:
                        out.append(f"{ipaddress.ip_address(value)}/{dst_len}")
        return out

    def links(self) -> list[tuple[int, str, str, str]]:
        """(index, name, alias, kind) of every link in the namespace."""
        out = []
        for payload in self.request(RTM_GETLINK, F_DUMP, ifinfo(), "link dump"):
            index, attrs = parse_link(payload)
            info = dict(attributes(attrs.get(IFLA_LINKINFO, b"")))
            out.append((index, text(attrs.get(IFLA_IFNAME)), text(attrs.get(IFLA_IFALIAS)),
                        text(info.get(IFLA_INFO_KIND))))
        return out

    def delete_link(self, name: str) -> None:
        try:
            self.request(RTM_DELLINK, F_ACK, ifinfo() + attr(IFLA_IFNAME, name.encode() + b"\0"), f"delete {name}")
        except NotFound:
            pass


def exchange(sock: socket.socket, kind: int, flags: int, seq: int, body: bytes) -> list[bytes]:
    """One netlink request on `sock` (any netlink family): the payloads of
    the answers; the kernel's error as an OSError.  A plain GET has one
    answer and no ack; a dump ends with NLMSG_DONE; an ack with an error
    message of code 0."""
    sock.send(_HDR.pack(_HDR.size + len(body), kind, F_REQUEST | flags, seq, 0) + body)
    out: list[bytes] = []
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + _HDR.size <= len(data):
            length, mtype, _, mseq, _ = _HDR.unpack_from(data, offset)
            payload = data[offset + _HDR.size: offset + length]
            offset += (length + 3) & ~3
            if mseq != seq:
                continue
            if mtype == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    raise OSError(code, os.strerror(code))
                return out
            if mtype == NLMSG_DONE:
                return out
            out.append(payload)
            if not flags & (F_ACK | F_DUMP):
                return out


def text(value: bytes | None) -> str:
    """A string attribute's value ("" if absent)."""
    return value.rstrip(b"\0").decode() if value else ""


def attributes(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out.append((kind & 0x3FFF, data[offset + 4: offset + length]))
        offset += (length + 3) & ~3
    return out


def _error(code: int, what: str) -> Exception:
    if code == errno.EEXIST:
        return Conflict(f"{what}: already exists")
    if code in (errno.ENODEV, errno.ENOENT, errno.ESRCH):
        return NotFound(f"{what}: no such device or entry")
    if code == errno.EINVAL:
        return InvalidParameter(f"{what}: invalid argument")
    return Internal(f"{what}: {os.strerror(code)}")


class LinkReaper:
    """Deletes retired links in the background.

    Deleting a netdevice waits for an RCU grace period (~15-25 ms here),
    the bulk of a detach.  `retire` cuts the link off at once (down, off its
    bridge: no packet passes it any more) and queues the deletion for a
    thread of its own; `flush` waits for the queue to drain, and is called
    before anything that could collide with a dying link (a new join, a
    network or sandbox removal, shutdown).  Links left behind by a crash
    carry pynet's alias and are removed by start-up recovery."""

    def __init__(self) -> None:
        import queue
        import threading

        self._now = Rtnl()        # the caller's thread: cut-offs
        self._bg = Rtnl()         # the reaper thread: deletions
        self._queue: "queue.Queue[tuple[str, str]]" = queue.Queue()
        self._pending: dict[str, int] = {}   # group (a sandbox) -> links of it not yet deleted
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="pynet-link-reaper", daemon=True)
        self._thread.start()

    def retire(self, name: str, group: str = "") -> None:
        """Cut `name` off now and delete it later; `group` (the sandbox the
        peer lives in) lets `flush` wait for just that sandbox's links."""
        index = self._now.link_index(name)
        if index is None:
            return
        self._now.request(RTM_NEWLINK, F_ACK, ifinfo(index, 0, IFF_UP) + attr(IFLA_MASTER, struct.pack("=I", 0)),
                          f"retire {name}")
        with self._done:
            self._pending[group] = self._pending.get(group, 0) + 1
        self._queue.put((name, group))

    def flush(self, group: str | None = None) -> None:
        """Wait until every retired link (of `group` only, if given) is gone."""
        if group is None:
            self._queue.join()
            return
        with self._done:
            self._done.wait_for(lambda: not self._pending.get(group))

    def _run(self) -> None:
        while True:
            name, group = self._queue.get()
            try:
                self._bg.delete_link(name)
            except Exception:  # gone already, or the namespace went: recovery handles leftovers
                pass
            finally:
                with self._done:
                    left = self._pending.get(group, 1) - 1
                    if left:
                        self._pending[group] = left
                    else:
                        self._pending.pop(group, None)
                    self._done.notify_all()
                self._queue.task_done()
