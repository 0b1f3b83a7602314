"""The `macvlan` driver: sandboxes on the parent's LAN with MACs of their own.

Options (Docker's names, so `docker network create -d macvlan -o ...` carries
over, plus pynet's host access):

    parent=IF          the link the network sits on.  `IF.ID` (e.g. eth0.10)
                       that does not exist is made as an 802.1Q sub-interface
                       of IF and deleted with the network; one that exists is
                       used as it is and left alone.
    macvlan_mode=M     bridge (default), private, vepa or passthru, as the
                       kernel documents them.
    host_access=BOOL   pynet's fix for macvlan's best-known gap: the kernel
                       never delivers between a parent and its macvlans, so
                       the host cannot reach its own containers.  With true,
                       the network gets a host-side macvlan `pmh<id12>` in
                       bridge mode, addressed from the network's IPAM (shown
                       as the auxiliary address "pynet-host"), with a /32
                       (/128) route per endpoint through it.  Per-endpoint
                       routes, not the subnet route, because the host usually
                       has its own address on that subnet on the parent: the
                       connected route of the parent stays, the longer
                       prefixes win, and strict rp_filter still passes.

Without a parent, or with `--internal` (as Docker does: its internal macvlan
ignores the parent), the network sits on a link pynet makes: Docker uses a
dummy link, which this kernel lacks, so pynet makes a veth pair
`pmv<id12>`/`pmp<id12>` with both ends up (carrier on, every kernel has veth;
a portless bridge would have no carrier).  Its sandboxes reach each other and
nothing else; the pair goes with the network.

No NAT, no published ports, no invented gateway: a default route only via a
--gateway the user gave (and never on an internal network).  MTU follows the
parent.  Sandbox interfaces are created directly in the sandbox namespace
(IFLA_NET_NS_FD on create), never moved.

The parent going away deletes every macvlan on it (the kernel's doing).
Endpoints then report `LinkState: missing` in sandbox and network inspect
("down" while the parent exists but is down); the next connect to the
network re-makes what the parent took (sub-interface, host-side link,
endpoints), through the controller's LowerLinked hook.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
from dataclasses import dataclass
from typing import Mapping

from netstack.driverapi import Capability, JoinResult
from netstack.endpoint import Endpoint
from netstack.errors import Conflict, InvalidParameter, NotFound, PynetError, Unavailable
from netstack.kernel import links
from netstack.kernel import rtnl as rt
from netstack.kernel.rtnl import Rtnl
from netstack.network import Network
from netstack.validation import check_known_options
from netstack.validation import parse_bool_option as parse_bool

NAME = "macvlan"

OPT_PARENT = "parent"
OPT_MODE = "macvlan_mode"
OPT_HOST_ACCESS = "host_access"
OPTIONS = (OPT_PARENT, OPT_MODE, OPT_HOST_ACCESS)

MODES = links.MACVLAN_MODES
DEFAULT_MODE = "bridge"
#: the auxiliary-address name of the host side's address
HOST_AUX = "pynet-host"
#: the auxiliary-address names of the parent's own addresses (then -1, -2 ...)
PARENT_AUX = "pynet-parent"


@dataclass(frozen=True, slots=True)
class MacvlanConfig:
    parent: str = ""          # "" = a link pynet makes (internal)
    mode: str = DEFAULT_MODE
    host_access: bool = False


@dataclass(frozen=True, slots=True)
class VlanParent:
    base: str
    vlan_id: int


def parse_options(options: Mapping[str, str], *, internal: bool = False) -> MacvlanConfig:
    """Options as a typed config; every key known, every value valid."""
    check_known_options(dict(options), OPTIONS, "macvlan")
    mode = options.get(OPT_MODE) or DEFAULT_MODE
    if mode not in MODES:
        raise InvalidParameter(f"invalid macvlan_mode {mode!r}: use one of {', '.join(MODES)}")
    parent = "" if internal else options.get(OPT_PARENT, "")
    if parent:
        links.check_ifname(parent, "parent interface name")
    host_access = parse_bool(OPT_HOST_ACCESS, options[OPT_HOST_ACCESS]) if OPT_HOST_ACCESS in options else False
    if host_access and mode != "bridge":
        # The host side is a bridge-mode macvlan: the kernel only delivers
        # between bridge-mode ports (private never, vepa via the switch,
        # passthru has one port).
        raise InvalidParameter(f"host_access needs macvlan_mode bridge, not {mode}")
    if host_access and not parent:
        raise InvalidParameter("host_access needs a parent: an internal macvlan network has no LAN to share")
    return MacvlanConfig(parent=parent, mode=mode, host_access=host_access)


def parse_vlan(parent: str) -> VlanParent | None:
    """`eth0.10` -> VlanParent("eth0", 10); a name without a dot -> None."""
    base, dot, tag = parent.rpartition(".")
    if not dot or not base:
        return None
    if not tag.isdigit():
        raise InvalidParameter(f"invalid parent {parent!r}: the part after the dot must be a VLAN id")
    vlan_id = int(tag)
    if not links.VLAN_ID_MIN <= vlan_id <= links.VLAN_ID_MAX:
        raise InvalidParameter(
            f"invalid parent {parent!r}: VLAN id {vlan_id} out of range ({links.VLAN_ID_MIN}-{links.VLAN_ID_MAX})"
        )
    return VlanParent(base, vlan_id)


def own_link_name(network_id: str) -> str:
    return f"pmv{network_id[:12]}"


def own_peer_name(network_id: str) -> str:
    return f"pmp{network_id[:12]}"


def host_link_name(network_id: str) -> str:
    return f"pmh{network_id[:12]}"


RTA_PREFSRC = 7
RTM_DELADDR = 21
IFLA_OPERSTATE = 16
#: the alias of a left endpoint's interface until the reaper deletes it
RETIRED_ALIAS = links.alias_for("retired", NAME)
IF_OPER_NOTPRESENT, IF_OPER_DOWN, IF_OPER_LOWERLAYERDOWN = 1, 2, 3


def _host_prefix(address: str) -> int:
    return 128 if ":" in address else 32


class MacvlanDriver:
    name = NAME
    capability = Capability(needs_gateway=False)

    def __init__(self) -> None:
        self._ipr = links.host()
        self._rtnl = Rtnl()  # the attach/detach hot path: raw rtnetlink
        self._reaper = SandboxLinkReaper()
        atexit.register(self._reaper.flush)  # a clean exit leaves no retired link behind
        # network id -> ifindex of the parent on which every endpoint was
        # last found present (see lower_link_changed)
        self._verified: dict[str, int] = {}

    # ------------------------------------------------------------- network

    def config(self, network: Network) -> MacvlanConfig:
        return parse_options(network.options, internal=network.internal)

    def validate(self, network: Network, networks: list[Network]) -> None:
        cfg = self.config(network)
        if not cfg.parent:
            return
        for other in networks:
            if other.driver != NAME or other.id == network.id:
                continue
            used = str(other.driver_state.get("parent") or ("" if other.internal else other.options.get(OPT_PARENT, "")))
            if used == cfg.parent:
                raise Conflict(f"parent {cfg.parent} is already used by macvlan network {other.name}")
        if links.link_info(self._ipr, cfg.parent) is not None:
            return
        vlan = parse_vlan(cfg.parent)
        if vlan is None:
            raise NotFound(f"parent interface {cfg.parent} does not exist")
        if links.link_info(self._ipr, vlan.base) is None:
            raise NotFound(f"parent interface {vlan.base} (of VLAN sub-interface {cfg.parent}) does not exist")
        if not links.vlan_supported():
            raise Unavailable(
                f"parent {cfg.parent} is an 802.1Q VLAN sub-interface that does not exist, and this kernel "
                "has no VLAN (8021q) support to create it: load the 8021q module, or use an existing parent"
            )

    def reserved_addresses(self, network: Network) -> Mapping[str, str]:
        """The host side's address, and the parent's own addresses in the
        subnets: a container given the host's LAN address would clash."""
        cfg = self.config(network)
        out = {HOST_AUX: ""} if cfg.host_access else {}
        if cfg.parent:
            for i, a in enumerate(links.addresses_of(self._ipr, cfg.parent)):
                out[f"{PARENT_AUX}{f'-{i}' if i else ''}"] = a
        return out

    def create_network(self, network: Network) -> Mapping[str, object]:
        cfg = self.config(network)
        self._check_subnets(network, cfg)
        alias = links.alias_for(NAME, network.id)
        with contextlib.ExitStack() as undo:
            state: dict[str, object] = {"mode": cfg.mode, "created": ""}
            parent = cfg.parent or own_link_name(network.id)
            info = links.link_info(self._ipr, parent)
            if info is not None and info["alias"] == alias:
                # Ours, from before (a re-create after the host-side link went away).
                state["created"] = "vlan" if cfg.parent else "veth"
            elif not cfg.parent:
                links.create_veth_pair(self._ipr, parent, own_peer_name(network.id), alias=alias)
                undo.callback(links.delete_link, self._ipr, parent)
                state["created"] = "veth"
            elif info is None:
                self._create_vlan(parent, alias)
                undo.callback(links.delete_link, self._ipr, parent)
                state["created"] = "vlan"
            info = links.link_info(self._ipr, parent)
            if info is None:
                raise NotFound(f"parent interface {parent} does not exist")
            state.update(parent=parent, mtu=int(info["mtu"] or 1500))  # type: ignore[call-overload]
            if cfg.host_access:
                state.update(self._create_host_side(network, parent, int(state["mtu"])))  # type: ignore[call-overload]
            undo.pop_all()
        return state

    def _check_subnets(self, network: Network, cfg: MacvlanConfig) -> None:
        """Options that need what IPAM gave (validate runs before IPAM)."""
        if cfg.host_access and not network.ipv4 and not network.ipv6:
            raise InvalidParameter("host_access needs a --subnet: the host side takes an address from it")
        if network.enable_ipv6 and not network.ipv6:
            raise InvalidParameter("a macvlan network has no default IPv6 pool: give an IPv6 --subnet with --ipv6")

    def _create_vlan(self, parent: str, alias: str) -> None:
        vlan = parse_vlan(parent)
        base = links.index_of(self._ipr, vlan.base) if vlan else None
        if vlan is None or base is None:
            raise NotFound(f"parent interface {parent} does not exist")
        if not links.vlan_supported():
            raise Unavailable(f"this kernel has no VLAN (8021q) support to create {parent}")
        links.create_link(self._ipr, links.vlan_request(parent, base_index=base, vlan_id=vlan.vlan_id),
                          alias=alias, up=True)

    def _create_host_side(self, network: Network, parent: str, mtu: int) -> dict[str, object]:
        name = host_link_name(network.id)
        parent_idx = links.index_of(self._ipr, parent) or 0
        links.delete_link(self._ipr, name)  # a leftover from before the parent went away
        links.create_link(
            self._ipr, links.macvlan_request(name, parent_index=parent_idx, mode="bridge", mtu=mtu),
            alias=links.alias_for(NAME, network.id),
        )
        try:
            addrs = [c.aux_addresses[HOST_AUX] for c in network.ipv4 + network.ipv6 if HOST_AUX in c.aux_addresses]
            for a in addrs:
                links.add_address(self._ipr, name, a, _host_prefix(a))
            self._ipr.link("set", index=links.index_of(self._ipr, name), state="up")
        except Exception:
            links.delete_link(self._ipr, name)
            raise
        return {"host_if": name, "host_addresses": addrs}

    def delete_network(self, network: Network) -> None:
        self._reaper.flush()
        self._verified.pop(network.id, None)
        st = network.driver_state
        errors: list[Exception] = []
        names = [str(st.get("host_if") or "")]
        if st.get("created"):
            names.append(str(st.get("parent") or ""))
        for name in filter(None, names):
            # Only links carrying this network's alias: a parent someone
            # re-made by hand after pynet's went away is theirs.
            info = links.link_info(self._ipr, name)
            if info is None or info["alias"] != links.alias_for(NAME, network.id):
                continue
            try:
                links.delete_link(self._ipr, name)
            except PynetError as exc:
                errors.append(exc)
        if errors:
            raise ExceptionGroup(f"macvlan network {network.name}: teardown errors", errors)

    def network_exists(self, network: Network) -> bool:
        # Raw rtnetlink: the controller asks before every connect.
        st = network.driver_state
        for name in (st.get("parent"), st.get("host_if")):
            if name and self._rtnl.link_index(str(name)) is None:
                return False
        return True

    def lower_link_changed(self, network: Network) -> int | None:
        """None while the parent is the very link (same ifindex) on which
        every endpoint was last found present: the kernel only takes a
        macvlan with its parent, so none can be missing and the controller
        skips looking into each sandbox.  Otherwise the parent's ifindex
        now (0: no parent), to hand to lower_link_verified once every
        endpoint has been checked (or re-made).  One request, no namespace
        entered: what a connect pays instead of a look per endpoint."""
        index = self._rtnl.link_index(str(network.driver_state.get("parent") or "")) or 0
        if index and self._verified.get(network.id) == index:
            return None
        return index

    def lower_link_verified(self, network: Network, index: int) -> None:
        if index:
            self._verified[network.id] = index

    def owned_links(self) -> dict[str, str]:
        return links.owned_links(self._ipr, NAME)

    # ------------------------------------------------------------ endpoints

    def create_endpoint(self, network: Network, endpoint: Endpoint) -> Mapping[str, object]:
        if network.driver_state.get("mode") == "passthru":
            return {"mac": endpoint.mac}  # passthru takes the parent's MAC
        return {"mac": endpoint.mac or links.random_mac()}

    def delete_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        pass

    def join(self, network: Network, endpoint: Endpoint, sandbox_key: str, ifname: str) -> JoinResult:
        st = network.driver_state
        parent = str(st["parent"])
        parent_idx = self._rtnl.link_index(parent)
        if parent_idx is None:
            raise NotFound(f"parent interface {parent} of network {network.name} does not exist")
        mtu = int(st.get("mtu", 1500))  # type: ignore[call-overload]
        mode = str(st.get("mode", DEFAULT_MODE))
        links.check_ifname(ifname)
        if mode == "passthru":
            self._reaper.flush()  # the parent takes one macvlan: a dying one still holds it
        else:
            self._reaper.wait_for(sandbox_key, ifname, endpoint.mac)  # a dying link's ifname or MAC
        fd = os.open(sandbox_key, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # Raw rtnetlink (the attach hot path): born inside the sandbox.
            try:
                self._rtnl.create_macvlan(ifname, parent=parent_idx, mode=mode, mtu=mtu, mac=endpoint.mac,
                                          netns_fd=fd)
            except Conflict:
                # A link retired before a crash still holds the name: gone now, then once more.
                if not self._reaper.reap_leftover(sandbox_key, ifname):
                    raise
                self._rtnl.create_macvlan(ifname, parent=parent_idx, mode=mode, mtu=mtu, mac=endpoint.mac,
                                          netns_fd=fd)
        except InvalidParameter as exc:
            if mode == "passthru":
                raise Conflict(f"network {network.name} is in passthru mode: its parent takes one endpoint") from exc
            raise
        finally:
            os.close(fd)
        try:
            self._route_from_host(network, endpoint)
        except Exception:
            self.leave(network, endpoint, sandbox_key)
            raise
        gw4 = gw6 = ""
        if not network.internal and st.get("created") != "veth":
            gw4 = next((c.gateway for c in network.ipv4 if c.gateway), "") or ""
            gw6 = next((c.gateway for c in network.ipv6 if c.gateway), "") or ""
        return JoinResult(host_ifname="", sandbox_ifname=ifname, gateway4=gw4, gateway6=gw6, mtu=mtu)

    def _route_from_host(self, network: Network, endpoint: Endpoint) -> None:
        host_if = str(network.driver_state.get("host_if") or "")
        if not host_if:
            return
        srcs = [str(a) for a in network.driver_state.get("host_addresses", [])]  # type: ignore[attr-defined]
        oif = self._rtnl.link_index(host_if)
        if oif is None:
            raise NotFound(f"interface {host_if} does not exist")
        for cidr in (endpoint.ipv4, endpoint.ipv6):
            if not cidr:
                continue
            addr = str(ipaddress.ip_interface(cidr).ip)
            src = next((s for s in srcs if (":" in s) == (":" in addr)), "")
            dst = f"{addr}/{_host_prefix(addr)}"
            body = rt.route_request(dst, oif=oif)
            if src:
                body += rt.attr(RTA_PREFSRC, ipaddress.ip_address(src).packed)
            self._rtnl.request(rt.RTM_NEWROUTE, rt.F_ACK | rt.F_CREATE | rt.F_REPLACE, body,
                               f"route {dst} dev {host_if}")

    def leave(self, network: Network, endpoint: Endpoint, sandbox_key: str) -> None:
        if network.driver_state.get("host_if"):
            for cidr in (endpoint.ipv4, endpoint.ipv6):
                if cidr:
                    addr = str(ipaddress.ip_interface(cidr).ip)
                    self._rtnl.delete_route(f"{addr}/{_host_prefix(addr)}")
        if not sandbox_key or not os.path.exists(sandbox_key):
            return
        # Cut off now (its addresses removed), deleted in the background.
        self._reaper.retire(sandbox_key, endpoint.ifname, mac=endpoint.mac,
                            addresses=(endpoint.ipv4, endpoint.ipv6))

    def settle(self) -> None:
        """Wait until every retired sandbox link is really gone."""
        self._reaper.flush()

    def endpoint_state(self, network: Network, endpoint: Endpoint, sandbox_key: str) -> str:
        # Raw rtnetlink (inspect asks per endpoint, a heal for every one).
        try:
            handle = Rtnl.in_netns(sandbox_key)
        except PynetError:
            return "missing"
        try:
            found = handle.link(endpoint.ifname)
        except PynetError:
            return "missing"
        finally:
            handle.close()
        if found is None:
            return "missing"
        operstate = found[1].get(IFLA_OPERSTATE, b"\0")[0]
        return "down" if operstate in (IF_OPER_NOTPRESENT, IF_OPER_DOWN, IF_OPER_LOWERLAYERDOWN) else "up"


class SandboxLinkReaper:
    """Deletes left endpoints' interfaces inside their sandboxes, in the
    background: deleting a netdevice waits for RCU grace periods (~20-30 ms
    here, more under load), the bulk of a detach; so does bringing it down
    (~10 ms), and a macvlan cannot be renamed while up.

    `retire` opens a netlink socket inside the sandbox (a short-lived thread
    enters it, ~0.3 ms) and cuts the interface off at once by removing its
    addresses (~0.1 ms each; with the last IPv4 address go the routes through
    it, and no reply comes from it any more, so IPAM may hand the address to
    someone else right away); the socket then goes to a thread of its own,
    which deletes the link and closes it (the socket keeps the namespace
    alive until then, so a sandbox removed meanwhile is no problem).

    Until then the link holds its ifname in the sandbox and its MAC on the
    parent: `wait_for` blocks a join into that sandbox, or with that MAC,
    until the deletion is done (free when it already is, the usual case);
    `flush` waits for everything (before a sandbox or network removal, and
    for a passthru join: the parent takes one macvlan).  A retired link
    carries the alias RETIRED_ALIAS: one a crash left behind is deleted by
    the join that finds its name taken (reap_leftover), otherwise it goes
    with the sandbox's namespace or its parent."""

    def __init__(self) -> None:
        import collections
        import queue
        import threading

        self._queue: "queue.Queue[tuple[Rtnl, int, tuple[str, ...]]]" = queue.Queue()
        self._pending: collections.Counter[str] = collections.Counter()
        self._done = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="pynet-macvlan-reaper", daemon=True)
        self._thread.start()

    def retire(self, netns_path: str, name: str, *, mac: str = "", addresses: tuple[str, ...] = ()) -> None:
        try:
            handle = Rtnl.in_netns(netns_path)
        except (NotFound, InvalidParameter):
            return  # the sandbox went: its links with it
        try:
            index = handle.link_index(name)
            if index is None:
                handle.close()
                return
            for cidr in filter(None, addresses):
                try:
                    handle.request(RTM_DELADDR, rt.F_ACK, rt.addr_request(index, cidr), f"address {cidr}")
                except PynetError:
                    pass  # not there: nothing to cut off
            handle.set_alias(index, RETIRED_ALIAS)  # so a crash's leftover can be told from a user's link
        except Exception:
            handle.close()
            raise
        keys = _keys(netns_path, name, mac)
        with self._done:
            self._pending.update(keys)
        self._queue.put((handle, index, keys))

    def reap_leftover(self, netns_path: str, name: str) -> bool:
        """Delete `name` in the sandbox if it is a link retired and never
        deleted (pynetd died meanwhile); False when it is anything else."""
        try:
            handle = Rtnl.in_netns(netns_path)
        except (NotFound, InvalidParameter):
            return False
        try:
            found = handle.link(name)
            if found is None or rt.text(found[1].get(rt.IFLA_IFALIAS)) != RETIRED_ALIAS:
                return False
            handle.request(rt.RTM_DELLINK, rt.F_ACK, rt.ifinfo(found[0]), f"delete {name}")
            return True
        except PynetError:
            return False
        finally:
            handle.close()

    def wait_for(self, netns_path: str, name: str, mac: str = "") -> None:
        """Until no retired link holds `name` in `netns_path`, or `mac`."""
        keys = _keys(netns_path, name, mac)
        with self._done:
            self._done.wait_for(lambda: not any(self._pending[k] for k in keys))

    def flush(self) -> None:
        self._queue.join()

    def _run(self) -> None:
        while True:
            handle, index, keys = self._queue.get()
            try:
                handle.request(rt.RTM_DELLINK, rt.F_ACK, rt.ifinfo(index), f"delete link {index}")
            except Exception:  # gone already (its parent went, or its namespace)
                pass
            finally:
                handle.close()
                with self._done:
                    self._pending.subtract(keys)
                    self._done.notify_all()
                self._queue.task_done()


def _keys(netns_path: str, name: str, mac: str) -> tuple[str, ...]:
    return (f"{netns_path}\0{name}", f"mac {mac.lower()}") if mac else (f"{netns_path}\0{name}",)
