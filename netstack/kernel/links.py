"""Links, addresses and routes through netlink (pyroute2).

The only module that speaks rtnetlink.  Every function takes the `IPRoute`
handle of the namespace it works in: `host()` for the daemon's own
namespace, `in_sandbox(path)` for a sandbox's (the socket is opened by a
short-lived thread that enters the namespace, which is ~6x cheaper than
pyroute2's fork-based `IPRoute(netns=...)`).

Links pynet makes carry an alias `pynet:<kind>:<owner id>` so that start-up
can tell its own links from everybody else's (Docker names bridges
`br-<id12>` too) and remove orphans.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import socket
from typing import Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from netstack.errors import Conflict, Internal, InvalidParameter, NotFound, Unavailable
from netstack.kernel.netns import run_in_netns

ALIAS_PREFIX = "pynet:"
IFNAMSIZ = 15


def host() -> IPRoute:
    """A handle on the calling thread's (the daemon's) namespace."""
    return IPRoute()


@contextlib.contextmanager
def in_sandbox(path: str) -> Iterator[IPRoute]:
    sock = run_in_netns(
        path, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, socket.NETLINK_ROUTE)
    )
    ipr = IPRoute(use_socket=sock)
    try:
        yield ipr
    finally:
        ipr.close()
        sock.close()


def alias_for(kind: str, owner: str) -> str:
    return f"{ALIAS_PREFIX}{kind}:{owner}"


def check_ifname(name: str, what: str = "interface name") -> None:
    if not name or len(name) > IFNAMSIZ or "/" in name or any(c.isspace() for c in name) or name in (".", ".."):
        raise InvalidParameter(f"invalid {what} {name!r}: 1 to {IFNAMSIZ} characters, no '/' or spaces")


def _translate(exc: NetlinkError, what: str) -> Exception:
    code = exc.code
    if code == errno.EEXIST:
        return Conflict(f"{what}: already exists")
    if code in (errno.ENODEV, errno.ENOENT):
        return NotFound(f"{what}: no such device")
    if code == errno.EOPNOTSUPP:
        return Unavailable(f"{what}: not supported by this kernel")
    if code == errno.EINVAL:
        return InvalidParameter(f"{what}: invalid argument")
    return Internal(f"{what}: {os.strerror(code) if code > 0 else exc}")


def index_of(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def link_info(ipr: IPRoute, name: str) -> dict[str, object] | None:
    """kind, alias, mtu, state and master index of a link, or None."""
    idx = index_of(ipr, name)
    if idx is None:
        return None
    msg = ipr.get_links(idx)[0]
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo else None
    return {
        "index": idx,
        "kind": kind,
        "alias": msg.get_attr("IFLA_IFALIAS") or "",
        "mtu": msg.get_attr("IFLA_MTU"),
        "up": bool(msg["flags"] & 1),
        "operstate": msg.get_attr("IFLA_OPERSTATE"),
        "master": msg.get_attr("IFLA_MASTER"),
        "link": msg.get_attr("IFLA_LINK"),
        "address": msg.get_attr("IFLA_ADDRESS"),
    }


def owned_links(ipr: IPRoute, kind: str) -> dict[str, str]:
    """ifname -> owner id of every link whose alias says pynet made it as `kind`."""
    prefix = alias_for(kind, "")
    out: dict[str, str] = {}
    for msg in ipr.get_links():
        alias = msg.get_attr("IFLA_IFALIAS") or ""
        if alias.startswith(prefix):
            out[msg.get_attr("IFLA_IFNAME")] = alias[len(prefix):]
    return out


def random_mac() -> str:
    """A random, locally administered unicast MAC (02:xx:...)."""
    octets = [0x02] + [random.randint(0, 255) for _ in range(5)]
    return ":".join(f"{o:02x}" for o in octets)


def create_bridge(ipr: IPRoute, name: str, *, alias: str, mtu: int, addresses: list[tuple[str, int]]) -> None:
    """A bridge with its gateway addresses, up.  Removed again if any step
    fails.  (Raw rtnetlink: pyroute2 costs ~3 ms a request.)"""
    from netstack.kernel.rtnl import Rtnl

    rtnl = Rtnl()
    try:
        # A MAC of its own, as Docker gives its bridges: otherwise the bridge
        # takes the lowest of its ports' and changes it whenever a port with
        # a lower one joins (containers' ARP entries for the gateway go
        # stale; the kernel recomputes it on every join).
        idx = rtnl.create_link(name, "bridge", mtu=mtu, alias=alias, mac=random_mac())
        try:
            for address, prefixlen in addresses:
                if ":" in address:
                    _sysctl_if(6, name, "disable_ipv6", "0")
                rtnl.add_address(idx, f"{address}/{prefixlen}")
            rtnl.link_up(idx)
        except Exception as exc:
            rtnl.delete_link(name)
            if isinstance(exc, (Conflict, NotFound, InvalidParameter, Internal)):
                raise
            raise Internal(f"bridge {name}: {exc}") from exc
    finally:
        rtnl.close()


def _nodad(address: str) -> dict[str, int]:
    # IFA_F_NODAD: a gateway address must be usable at once, not after DAD.
    return {"flags": 0x02} if ":" in address else {}


def delete_link(ipr: IPRoute | None, name: str) -> None:
    """Delete a link in `ipr`'s namespace (None: the calling thread's, over
    raw rtnetlink); a link already gone is fine."""
    if ipr is None:
        from netstack.kernel.rtnl import Rtnl

        rtnl = Rtnl()
        try:
            rtnl.delete_link(name)
        finally:
            rtnl.close()
        return
    idx = index_of(ipr, name)
    if idx is None:
        return
    try:
        ipr.link("del", index=idx)
    except NetlinkError as exc:
        if exc.code not in (errno.ENODEV, errno.ENOENT):
            raise _translate(exc, f"delete {name}") from exc


def create_veth_into(
    ipr: IPRoute, host_name: str, *, alias: str, master: str, mtu: int,
    sandbox_fd: int, peer_name: str, peer_mac: str,
) -> None:
    """A veth pair whose peer is born inside the sandbox (no move, which
    costs a grace period), host end enslaved to `master` and up."""
    master_idx = index_of(ipr, master)
    if master_idx is None:
        raise NotFound(f"bridge {master} does not exist")
    try:
        ipr.link(
            "add", ifname=host_name, kind="veth", mtu=mtu,
            peer={"ifname": peer_name, "net_ns_fd": sandbox_fd, "address": peer_mac, "mtu": mtu},
        )
    except NetlinkError as exc:
        raise _translate(exc, f"veth {host_name}/{peer_name}") from exc
    try:
        idx = index_of(ipr, host_name)
        ipr.link("set", index=idx, master=master_idx, ifalias=alias, state="up")
    except NetlinkError as exc:
        delete_link(ipr, host_name)
        raise _translate(exc, f"veth {host_name}") from exc


def configure_sandbox_iface(
    ipr: IPRoute, name: str, *, addresses: list[tuple[str, int]], routes: list[tuple[str, str]],
) -> None:
    """Inside the sandbox: loopback up, addresses on `name`, link up, routes
    (destination CIDR, gateway or "" for on-link)."""
    ipr.link("set", index=1, state="up")
    idx = index_of(ipr, name)
    if idx is None:
        raise NotFound(f"interface {name} is missing in the sandbox")
    for address, prefixlen in addresses:
        ipr.addr("add", index=idx, address=address, prefixlen=prefixlen, **_nodad(address))
    ipr.link("set", index=idx, state="up")
    for dst, gateway in routes:
        add_route(ipr, dst, gateway, oif=idx)


def add_route(ipr: IPRoute, dst: str, gateway: str, *, oif: int | None = None) -> None:
    args: dict[str, object] = {"dst": dst}
    if gateway:
        args["gateway"] = gateway
    if oif is not None:
        args["oif"] = oif
    if ":" in dst:
        args["family"] = socket.AF_INET6
    try:
        ipr.route("replace", **args)
    except NetlinkError as exc:
        raise _translate(exc, f"route {dst} via {gateway or 'link'}") from exc


def delete_route(ipr: IPRoute, dst: str) -> None:
    args: dict[str, object] = {"dst": dst}
    if ":" in dst:
        args["family"] = socket.AF_INET6
    try:
        ipr.route("del", **args)
    except NetlinkError as exc:
        if exc.code not in (errno.ESRCH, errno.ENOENT, errno.ENODEV):
            raise _translate(exc, f"route {dst}") from exc


def routed_networks(ipr: IPRoute | None = None) -> list[str]:
    """Destinations (CIDR) of the calling thread's namespace's routes, for
    IPAM to avoid; the default route is not a conflict."""
    from netstack.kernel.rtnl import Rtnl

    rtnl = Rtnl()
    try:
        return rtnl.routes()
    finally:
        rtnl.close()


def _sysctl_if(version: int, ifname: str, key: str, value: str) -> None:
    """Set a per-interface sysctl of pynet's own link in the calling thread's namespace."""
    path = f"/proc/sys/net/ipv{version}/conf/{ifname}/{key}"
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise Internal(f"cannot set {path}: {exc.strerror}") from exc


def set_if_sysctl(version: int, ifname: str, key: str, value: str) -> None:
    _sysctl_if(version, ifname, key, value)


def set_sysctl(path: str, value: str) -> None:
    """A namespace-wide sysctl (e.g. net/ipv4/ip_forward) of the calling thread's namespace."""
    full = f"/proc/sys/{path}"
    try:
        with open(full) as f:
            if f.read().strip() == value:
                return
        with open(full, "w") as f:
            f.write(value)
    except OSError as exc:
        raise Internal(f"cannot set {full}: {exc.strerror}") from exc


def set_hairpin(ifname: str) -> None:
    """Let a bridge port send frames back out where they came in, so a
    sandbox reaches its own published port when br_netfilter bridges the
    DNAT'd frame.  (Raw rtnetlink: an `ip`/`bridge` process per publish
    costs milliseconds, more under load.)"""
    from netstack.kernel.rtnl import Rtnl

    rtnl = Rtnl()
    try:
        rtnl.set_hairpin(ifname)
    finally:
        rtnl.close()


# ------------------------------------------------------------ stacked links
# macvlan endpoints and 802.1Q sub-interfaces.  The requests are built by
# pure functions (unit-tested without root) and sent by `create_link`.

MACVLAN_MODES = ("private", "vepa", "bridge", "passthru")
VLAN_ID_MIN, VLAN_ID_MAX = 1, 4094


def vlan_request(name: str, *, base_index: int, vlan_id: int) -> dict[str, object]:
    """`ip link add link BASE name NAME type vlan id ID` as pyroute2 arguments
    (IFLA_LINK = base, IFLA_INFO_KIND = vlan, IFLA_VLAN_ID = id, 802.1Q)."""
    if not VLAN_ID_MIN <= vlan_id <= VLAN_ID_MAX:
        raise InvalidParameter(f"VLAN id {vlan_id} out of range ({VLAN_ID_MIN}-{VLAN_ID_MAX})")
    check_ifname(name, "VLAN interface name")
    return {"ifname": name, "kind": "vlan", "link": base_index, "vlan_id": vlan_id}


def macvlan_request(
    name: str, *, parent_index: int, mode: str, mtu: int, mac: str = "", net_ns_fd: int | None = None,
) -> dict[str, object]:
    """`ip link add link PARENT name NAME type macvlan mode MODE` as pyroute2
    arguments; with `net_ns_fd` the link is born in that namespace
    (IFLA_NET_NS_FD on create), which saves the move and its grace period."""
    if mode not in MACVLAN_MODES:
        raise InvalidParameter(f"invalid macvlan mode {mode!r} (use one of {', '.join(MACVLAN_MODES)})")
    check_ifname(name)
    req: dict[str, object] = {"ifname": name, "kind": "macvlan", "link": parent_index, "macvlan_mode": mode, "mtu": mtu}
    if mac:
        req["address"] = mac
    if net_ns_fd is not None:
        req["net_ns_fd"] = net_ns_fd
    return req


def create_link(ipr: IPRoute, request: dict[str, object], *, alias: str = "", up: bool = False) -> int:
    """Send a link request built above; optionally alias it and set it up
    (only for links in `ipr`'s namespace).  Returns the new index, or 0 when
    the link was created in another namespace.  Removed again if a later
    step fails."""
    name = str(request["ifname"])
    try:
        ipr.link("add", **request)
    except NetlinkError as exc:
        raise _translate(exc, f"{request['kind']} link {name}") from exc
    if "net_ns_fd" in request:
        return 0
    idx = index_of(ipr, name) or 0
    try:
        if alias:
            ipr.link("set", index=idx, ifalias=alias)
        if up:
            ipr.link("set", index=idx, state="up")
    except NetlinkError as exc:
        delete_link(ipr, name)
        raise _translate(exc, f"{request['kind']} link {name}") from exc
    return idx


def create_veth_pair(ipr: IPRoute, name: str, peer: str, *, alias: str, mtu: int = 1500) -> int:
    """Both ends in `ipr`'s namespace, both up (so the pair has carrier).
    Returns the index of `name`."""
    try:
        ipr.link("add", ifname=name, kind="veth", mtu=mtu, peer={"ifname": peer, "mtu": mtu})
    except NetlinkError as exc:
        raise _translate(exc, f"veth {name}/{peer}") from exc
    try:
        idx = index_of(ipr, name) or 0
        ipr.link("set", index=idx, ifalias=alias, state="up")
        ipr.link("set", index=index_of(ipr, peer), ifalias=alias, state="up")
    except NetlinkError as exc:
        delete_link(ipr, name)
        raise _translate(exc, f"veth {name}") from exc
    return idx


def add_address(ipr: IPRoute, name: str, address: str, prefixlen: int) -> None:
    idx = index_of(ipr, name)
    if idx is None:
        raise NotFound(f"interface {name} does not exist")
    try:
        ipr.addr("replace", index=idx, address=address, prefixlen=prefixlen, **_nodad(address))
    except NetlinkError as exc:
        raise _translate(exc, f"address {address}/{prefixlen} on {name}") from exc


def addresses_of(ipr: IPRoute, name: str) -> list[str]:
    """The global-scope addresses on `name` (no link-local), or []."""
    idx = index_of(ipr, name)
    if idx is None:
        return []
    return [m.get_attr("IFA_ADDRESS") for m in ipr.get_addr(index=idx) if m["scope"] == 0]


def add_host_route(ipr: IPRoute, dst: str, *, oif: str, src: str = "") -> None:
    """A route to one address through `oif`, with a preferred source."""
    idx = index_of(ipr, oif)
    if idx is None:
        raise NotFound(f"interface {oif} does not exist")
    args: dict[str, object] = {"dst": dst, "oif": idx}
    if src:
        args["prefsrc"] = src
    if ":" in dst:
        args["family"] = socket.AF_INET6
    try:
        ipr.route("replace", **args)
    except NetlinkError as exc:
        raise _translate(exc, f"route {dst} dev {oif}") from exc


def link_state_in(path: str, name: str) -> str:
    """The operstate of `name` in the namespace at `path` ("UP",
    "LOWERLAYERDOWN", ...), or "" when there is no such link."""
    with in_sandbox(path) as ipr:
        info = link_info(ipr, name)
    return str(info["operstate"] or "") if info is not None else ""


_VLAN_SUPPORTED: bool | None = None


def vlan_supported() -> bool:
    """Whether this kernel can make 802.1Q links.  Probed once, in a
    throwaway namespace (a veth pair and a VLAN on it), so the daemon's own
    namespace sees nothing; a negative answer is asked again next time, in
    case someone loads 8021q meanwhile."""
    global _VLAN_SUPPORTED
    if _VLAN_SUPPORTED:
        return True
    import tempfile

    from netstack.kernel import netns

    tmp = tempfile.mkdtemp(prefix="pynet-vlan-probe-")
    path = os.path.join(tmp, "ns")
    try:
        netns.create(path)
        try:
            with in_sandbox(path) as ipr:
                ipr.link("add", ifname="probe0", kind="veth", peer={"ifname": "probe1"})
                try:
                    ipr.link("add", **vlan_request("probe0.1", base_index=index_of(ipr, "probe0") or 0, vlan_id=1))
                    _VLAN_SUPPORTED = True
                except NetlinkError:
                    _VLAN_SUPPORTED = False
        finally:
            netns.delete(path)
    finally:
        os.rmdir(tmp)
    return bool(_VLAN_SUPPORTED)


# ---------------------------------------------------------------- VXLAN (overlay)

def address_owner(ipr: IPRoute, address: str) -> tuple[str, int] | None:
    """(ifname, mtu) of the link holding `address` in this namespace, or None."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for msg in ipr.get_addr(family=family):
        if msg.get_attr("IFA_ADDRESS") == address or msg.get_attr("IFA_LOCAL") == address:
            link = ipr.get_links(msg["index"])[0]
            return link.get_attr("IFLA_IFNAME"), int(link.get_attr("IFLA_MTU"))
    return None


def create_vxlan(ipr: IPRoute, name: str, *, alias: str, vni: int, local: str, port: int,
                 mtu: int, master: str) -> None:
    """A VXLAN device with learning off and ARP/ND proxy on (answers from the
    neighbour table, so no broadcast crosses the underlay), enslaved to
    `master` and up.  Removed again if any step fails."""
    master_idx = index_of(ipr, master)
    if master_idx is None:
        raise NotFound(f"bridge {master} does not exist")
    try:
        ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=local, vxlan_port=port,
                 vxlan_learning=0, vxlan_proxy=1, mtu=mtu)
    except NetlinkError as exc:
        raise _translate(exc, f"vxlan {name} (VNI {vni})") from exc
    try:
        ipr.link("set", index=index_of(ipr, name), master=master_idx, ifalias=alias, state="up")
    except NetlinkError as exc:
        delete_link(ipr, name)
        raise _translate(exc, f"vxlan {name}") from exc
