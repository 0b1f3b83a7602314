"""The `overlay` driver: one L2 segment across hosts over VXLAN.

Per network and host (made eagerly on every host of the cluster, when the
network appears in the cluster store):

    pob-<id11>  a Linux bridge holding the network's gateway address: the
                same address on every host (an anycast gateway), so each
                host routes its own sandboxes' egress, NAT'd like a bridge
                network's, and serves their published ports
    pox-<id11>  a VXLAN device on it: VNI from the cluster store, UDP 4789,
                local = this host's advertised address, learning off,
                ARP/ND proxy on
    pov<ep12>   one veth per local endpoint, the peer inside the sandbox

Remote endpoints are programmed as static FDB + neighbour entries (see
peers.py) by whoever knows them — the cluster agent, from its etcd watch —
through `set_peers`; `reconcile` repairs drift.

The gateway address never crosses the VXLAN: the device answers ARP and
neighbour solicitations from its table of remote endpoints (proxy on) and
drops the rest, so a sandbox's request for the gateway is answered by its
own host's bridge only.  Docker instead gives each overlay sandbox a second
interface on docker_gwbridge; one interface is half the kernel work of an
attach, and leaves no second subnet to clash with the hosts' LANs.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Mapping

from netstack.driverapi import GLOBAL, Capability, JoinResult
from netstack.drivers.bridge import create_gateway_bridge, default_gateways, repair_gateway_bridge
from netstack.kernel.links import random_mac
from netstack.drivers.overlay import neigh
from netstack.drivers.overlay import peers as peerplan
from netstack.drivers.overlay.options import VXLAN_OVERHEAD, VXLAN_PORT, OverlayConfig, parse_options
from netstack.drivers.overlay.peers import Peer
from netstack.endpoint import Endpoint
from netstack.errors import Conflict, Internal, NotFound, Unavailable
from netstack.kernel import links, netns
from netstack.kernel.rtnl import LinkReaper, Rtnl
from netstack.network import Network

log = logging.getLogger("pynet.overlay")

NAME = "overlay"
VXLAN_ALIAS_KIND = "overlay-vxlan"

NO_CLUSTER = ("overlay networks need a cluster store: start pynetd with"
              " --cluster-store etcd://HOST:PORT --cluster-advertise ADDR")


def bridge_name(network_id: str) -> str:
    return f"pob-{network_id[:11]}"


def vxlan_name(network_id: str) -> str:
    return f"pox-{network_id[:11]}"


def host_ifname(endpoint_id: str) -> str:
    return f"pov{endpoint_id[:12]}"


class OverlayDriver:
    name = NAME
    capability = Capability(data_scope=GLOBAL, connectivity_scope=GLOBAL, publishes_ports=True, masquerades=True)

    def __init__(self) -> None:
        self._ipr = links.host()
        self._rtnl = Rtnl()          # the attach hot path (pyroute2 costs ~3 ms a request)
        self._reaper = LinkReaper()
        self.local_vtep = ""
        self.underlay_mtu = 0
        self._peers: dict[str, dict[str, Peer]] = {}

    # -- cluster side ------------------------------------------------------

    def attach_cluster(self, vtep: str, underlay_mtu: int) -> None:
        """Called once by the cluster agent, before any network is made:
        the local VTEP address and the MTU of the link that holds it."""
        self.local_vtep = vtep
        self.underlay_mtu = underlay_mtu

    def mtu(self, network: Network) -> int:
        cfg = parse_options(network)
        return cfg.mtu or (self.underlay_mtu or 1500) - VXLAN_OVERHEAD

    def set_peers(self, network: Network, peers: list[Peer]) -> peerplan.Plan:
        """Make the network's remote endpoints exactly `peers`.  Called by
        the cluster agent on each watch event and by its reconcile loop;
        returns what had to change."""
        self._peers[network.id] = {p.endpoint_id: p for p in peers if p.vtep != self.local_vtep}
        return self._apply(network)

    def peers(self, network_id: str) -> list[Peer]:
        return list(self._peers.get(network_id, {}).values())

    def add_peer(self, network: Network, peer: Peer) -> None:
        """One remote endpoint appeared (a watch event): its FDB and
        neighbour entries, two raw netlink requests, no dumps.  Every host
        runs this for every attach anywhere, so it must be cheap; drift is
        the reconcile loop's (set_peers)."""
        if peer.vtep == self.local_vtep:
            return
        before = self._peers.get(network.id, {}).get(peer.endpoint_id)
        if before == peer:
            return
        if before is not None:  # re-published elsewhere (moved, readdressed): the old entries go first
            self.remove_peer(network, peer.endpoint_id)
        self._peers.setdefault(network.id, {})[peer.endpoint_id] = peer
        self._incremental(network, lambda vx: (
            neigh.fdb_append(self._rtnl, vx, peer.mac, peer.vtep),
            [neigh.replace(self._rtnl, vx, ip, peer.mac) for ip, _ in sorted(peer.neighbours())]))

    def remove_peer(self, network: Network, endpoint_id: str) -> None:
        """One remote endpoint went: its entries, unless another peer
        still needs them (an address already reused: its MAC takes over)."""
        gone = self._peers.get(network.id, {}).pop(endpoint_id, None)
        if gone is None:
            return
        rest = self.peers(network.id)

        def undo(vx: int) -> None:
            if not any(p.mac.lower() == gone.mac.lower() and p.vtep == gone.vtep for p in rest):
                neigh.fdb_delete(self._rtnl, vx, gone.mac, gone.vtep)
            for ip, _ in sorted(gone.neighbours()):
                heir = next((p for p in rest if ip in (p.ipv4, p.ipv6)), None)
                if heir is not None:
                    neigh.replace(self._rtnl, vx, ip, heir.mac)
                else:
                    neigh.delete(self._rtnl, vx, ip)

        self._incremental(network, undo)

    def _incremental(self, network: Network, change: Callable[[int], object]) -> None:
        vx = self._rtnl.link_index(vxlan_name(network.id))
        if vx is None:
            return  # not made yet (or gone): create_network / reconcile programs the whole table
        try:
            change(vx)
        except Exception as exc:
            log.warning("network %s: peer update failed (%s); programming the whole table", network.name, exc)
            self._apply(network)

    def _apply(self, network: Network) -> peerplan.Plan:
        vx = self._rtnl.link_index(vxlan_name(network.id))
        if vx is None:
            return peerplan.Plan()
        plan = peerplan.plan(self.peers(network.id), neigh.fdb_entries(self._rtnl, vx), neigh.entries(self._rtnl, vx))
        for ip in plan.neigh_delete:
            neigh.delete(self._rtnl, vx, ip)
        for mac, dst in plan.fdb_delete:
            neigh.fdb_delete(self._rtnl, vx, mac, dst)
        for mac, dst in plan.fdb_add:
            neigh.fdb_append(self._rtnl, vx, mac, dst)
        for ip, mac in plan.neigh_replace:
            neigh.replace(self._rtnl, vx, ip, mac)
        return plan

    # -- NetworkDriver -----------------------------------------------------

    def validate(self, network: Network, networks: list[Network]) -> None:
        parse_options(network)
        if not self.local_vtep:
            raise Unavailable(NO_CLUSTER)

    def config(self, network: Network) -> OverlayConfig:
        return parse_options(network)

    def create_network(self, network: Network) -> Mapping[str, object]:
        cfg = parse_options(network)
        if not self.local_vtep:
            raise Unavailable(NO_CLUSTER)
        if cfg.vni is None:
            raise Internal(f"overlay network {network.name} has no VNI: the cluster store allocates it")
        mtu = self.mtu(network)
        br, vx = bridge_name(network.id), vxlan_name(network.id)
        create_gateway_bridge(self._ipr, br, network, alias=links.alias_for(NAME, network.id), mtu=mtu)
        try:
            links.create_vxlan(self._ipr, vx, alias=links.alias_for(VXLAN_ALIAS_KIND, network.id), vni=cfg.vni,
                               local=self.local_vtep, port=VXLAN_PORT, mtu=mtu, master=br)
        except Conflict:
            links.delete_link(self._ipr, br)
            raise Conflict(f"VNI {cfg.vni} is already used by another VXLAN device on this host") from None
        except Exception:
            links.delete_link(self._ipr, br)
            raise
        self._apply(network)
        return {"bridge": br, "vxlan": vx, "vni": cfg.vni, "mtu": mtu}

    def delete_network(self, network: Network) -> None:
        self._reaper.flush()
        errors = []
        for name in (vxlan_name(network.id), bridge_name(network.id)):
            try:
                links.delete_link(self._ipr, name)
            except Exception as exc:
                errors.append(exc)
        self._peers.pop(network.id, None)
        if errors:
            raise ExceptionGroup(f"deleting overlay network {network.name}", errors)

    def network_exists(self, network: Network) -> bool:
        # Raw rtnetlink: the cluster's reconcile loop asks every few seconds.
        br = self._rtnl.link_state(bridge_name(network.id))
        vx = self._rtnl.link_state(vxlan_name(network.id))
        return (br is not None and br.alias == links.alias_for(NAME, network.id)
                and vx is not None and vx.master == br.index)

    def owned_links(self) -> dict[str, str]:
        return {**links.owned_links(self._ipr, NAME), **links.owned_links(self._ipr, VXLAN_ALIAS_KIND)}

    def repair_network(self, network: Network) -> list[str]:
        done = repair_gateway_bridge(self._rtnl, bridge_name(network.id), network)
        vx = self._rtnl.link_state(vxlan_name(network.id))
        if vx is not None and not vx.up:
            self._rtnl.link_up(vx.index)
            done.append(f"{vxlan_name(network.id)} up")
        return done

    def create_endpoint(self, network: Network, endpoint: Endpoint) -> Mapping[str, object]:
        # Random, not IP-derived: a reused address never meets a stale MAC.
        return {"mac": endpoint.mac or random_mac()}

    def delete_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        pass

    def join(self, network: Network, endpoint: Endpoint, sandbox_key: str, ifname: str) -> JoinResult:
        mtu = int(network.driver_state.get("mtu") or self.mtu(network))  # type: ignore[call-overload]
        veth = host_ifname(endpoint.id)
        # A dying peer may still hold this ifname in the sandbox's namespace
        # (reached by this path or another: the group is the namespace).
        self._reaper.flush(netns.identity(sandbox_key))
        master = self._rtnl.link_index(bridge_name(network.id))
        if master is None:
            raise NotFound(f"bridge {bridge_name(network.id)} of network {network.name} does not exist")
        fd = os.open(sandbox_key, os.O_RDONLY | os.O_CLOEXEC)
        try:
            peer_index = self._rtnl.create_veth(veth, ifname, peer_netns_fd=fd, peer_mac=endpoint.mac, mtu=mtu,
                                                master=master, alias=links.alias_for("endpoint", endpoint.id))
        finally:
            os.close(fd)
        gw4, gw6 = default_gateways(network)
        # The echoed index spares the controller a lookup in the sandbox.
        return JoinResult(host_ifname=veth, sandbox_ifname=ifname, gateway4=gw4, gateway6=gw6, mtu=mtu,
                          sandbox_ifindex=peer_index)

    def leave(self, network: Network, endpoint: Endpoint, sandbox_key: str) -> None:
        # Cut off now, deleted in the background (the peer goes with it).
        self._reaper.retire(host_ifname(endpoint.id), group=netns.identity(sandbox_key))

    def settle(self) -> None:
        """Wait until every retired link is really gone."""
        self._reaper.flush()
