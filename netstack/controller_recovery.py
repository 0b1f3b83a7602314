"""Start-up recovery: make the store and the kernel agree again.

Runs once, under the controller's lock, before the daemon serves anything.
In order (libnetwork's, plus what it leaves to luck):

1. load the store and replay every pool and address into IPAM;
2. undo operations a crash interrupted: objects still "creating" are torn
   down, objects "deleting" are finished;
3. drop sandboxes whose namespace is gone, with their endpoints;
4. re-create a network whose kernel objects are missing, re-make an
   endpoint whose interface is missing;
5. remove links pynet made that no stored object owns (orphans);
   re-make missing endpoint interfaces, then choose each sandbox's gateway
   endpoint (default route, published ports) again;
6. rebuild pynet's firewall chains from the store, restore DNS.

Every repair is logged and returned, so `pynetd` and `pynet system repair`
can say what they did.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from netstack.controller import endpoint_pools
from netstack.driverapi import Reconciling, Repairing
from netstack.ipamapi import GLOBAL, LOCAL, PoolRequest
from netstack.requests import EndpointConfig
from netstack.sandbox import HANDOFF

if TYPE_CHECKING:
    from netstack.controller import Controller
    from netstack.endpoint import Endpoint
    from netstack.network import Network

log = logging.getLogger("pynet.recovery")


def recover(ctrl: "Controller") -> list[str]:
    repairs: list[str] = []

    def note(msg: str) -> None:
        log.warning("repair: %s", msg)
        repairs.append(msg)

    nets, sbs, eps = ctrl.store.load()
    ctrl.networks = {n.id: n for n in nets}
    ctrl.sandboxes = {s.id: s for s in sbs}
    ctrl.endpoints = {e.id: e for e in eps}
    _replay_ipam(ctrl, nets, eps, note)

    from netstack.kernel import netns

    # Endpoints of interrupted operations, and of sandboxes that are gone.
    for ep in list(ctrl.endpoints.values()):
        sb = ctrl.sandboxes.get(ep.sandbox_id)
        net = ctrl.networks.get(ep.network_id)
        if net is None:
            note(f"endpoint {ep.id[:12]} of a missing network removed")
            ctrl._forget_endpoint(ep)
            continue
        if sb is None or ep.state != "ready" or not _alive(sb.key):
            note(f"endpoint {ep.name} on {net.name} ({ep.state}) removed")
            if sb is None:
                from netstack.sandbox import Sandbox

                sb = Sandbox(id=ep.sandbox_id, name=ep.name, key="", state="deleting")
            ctrl._disconnect(net, sb, ep)

    for sb in list(ctrl.sandboxes.values()):
        if sb.state != "ready" or not _alive(sb.key):
            note(f"sandbox {sb.name} ({sb.state}, namespace {'present' if netns.is_netns(sb.key) else 'gone'}) removed")
            ctrl._delete_sandbox(sb)

    for net in list(ctrl.networks.values()):
        driver = ctrl._driver(net.driver)
        if net.state == "creating":
            note(f"network {net.name} was half-created: undone")
            ctrl._collect(lambda: driver.delete_network(net))
            for c in net.ipv4 + net.ipv6:
                ctrl.ipam.release_pool(c.pool_id)
            ctrl._forget_network(net)
        elif net.state == "deleting":
            note(f"network {net.name} was half-deleted: finished")
            ctrl._delete_network(net)
        elif isinstance(driver, Reconciling) and not driver.network_exists(net):
            note(f"network {net.name}: kernel objects missing, re-created")
            net.driver_state = dict(driver.create_network(net))
            ctrl._commit(networks=[net])
        elif isinstance(driver, Repairing):
            try:
                for what in driver.repair_network(net):
                    note(f"network {net.name}: put back {what}")
            except Exception as exc:  # the rest of the start-up repairs go on
                note(f"network {net.name}: not repaired: {exc}")

    _remove_orphan_links(ctrl, note)
    _remove_retired_sandbox_links(ctrl, note)
    _repair_endpoints(ctrl, note)
    _repair_gateways(ctrl, note)
    _sync_firewall(ctrl)
    _restore_dns(ctrl)
    return repairs


def _alive(key: str) -> bool:
    """A sandbox's namespace is still there.  A HANDOFF sandbox's namespace
    is its engine's (docker's, through the plugin), invisible here: the
    engine says when it goes (DeleteEndpoint), and its veth stays."""
    from netstack.kernel import netns

    return key == HANDOFF or netns.is_netns(key)


def _repair_gateways(ctrl: "Controller", note) -> None:
    """Default routes and the gateway endpoint (which carries the published
    ports) of every sandbox, by Docker's rule again: a disconnect killed
    after its endpoint was forgotten but before the gateway moved leaves a
    sandbox with no default route and its ports on no endpoint."""
    for sb in list(ctrl.sandboxes.values()):
        eps = ctrl.endpoints_of_sandbox(sb.id)
        if not eps or sb.key == HANDOFF:  # the engine routes inside
            continue
        before = next((e.id for e in eps if e.driver_state.get("is_gateway")), None)
        errors = ctrl._collect(lambda: ctrl._update_gateway(sb))
        if errors:
            note(f"sandbox {sb.name}: gateway not repaired: {errors[0]}")
        after = next((e.id for e in eps if e.driver_state.get("is_gateway")), None)
        if after != before:
            note(f"sandbox {sb.name}: gateway endpoint {(before or 'none')[:12]} -> {(after or 'none')[:12]}")


def _restore_dns(ctrl: "Controller") -> None:
    """Records and listeners live in memory: rebuild them from the store."""
    for ep in ctrl.endpoints.values():
        sb = ctrl.sandboxes.get(ep.sandbox_id)
        if sb is not None and sb.key != HANDOFF:  # the engine's DNS serves it
            ctrl._add_dns(ctrl.networks[ep.network_id], sb, ep)


def _replay_ipam(ctrl: "Controller", nets: list["Network"], eps: list["Endpoint"], note) -> None:
    for net in nets:
        if net.scope == GLOBAL:
            continue  # allocated in the cluster store (etcd), not in memory
        space = LOCAL
        for c in net.ipv4 + net.ipv6:
            subnet = ipaddress.ip_network(c.subnet)
            pool = ctrl.ipam.request_pool(PoolRequest(
                address_space=space, pool=subnet,
                sub_pool=ipaddress.ip_network(c.ip_range) if c.ip_range else None,
                v6=subnet.version == 6,
                aux_addresses=tuple(ipaddress.ip_address(a) for a in c.aux_addresses.values()),
            ))
            c.pool_id = pool.pool_id
            if c.gateway:
                ctrl.ipam.request_address(pool.pool_id, ipaddress.ip_address(c.gateway))
    by_id = {n.id: n for n in nets}
    for ep in eps:
        net = by_id.get(ep.network_id)
        if net is None or net.scope == GLOBAL:
            continue
        for pool, addr in endpoint_pools(net, ep):
            try:
                ctrl.ipam.request_address(pool.pool_id, addr)
            except Exception as exc:  # a duplicate in the store: keep going, report it
                note(f"address {addr} of endpoint {ep.name} could not be replayed: {exc}")


def _remove_orphan_links(ctrl: "Controller", note) -> None:
    from netstack.kernel import links

    bridge = ctrl._driver("bridge")
    known_nets = {n.driver_state.get("bridge") for n in ctrl.networks.values()}
    for driver_name in ctrl.drivers.names():
        driver = ctrl.drivers.get(driver_name)
        if not isinstance(driver, Reconciling):
            continue
        for ifname, owner in driver.owned_links().items():
            if owner not in ctrl.networks and ifname not in known_nets:
                note(f"orphan link {ifname} (network {owner[:12]}) removed")
                with links.host() as ipr:
                    links.delete_link(ipr, ifname)
    owned_eps = getattr(bridge, "owned_endpoint_links", None)
    if owned_eps is not None:
        for ifname, owner in owned_eps().items():
            if owner not in ctrl.endpoints:
                note(f"orphan veth {ifname} (endpoint {owner[:12]}) removed")
                with links.host() as ipr:
                    links.delete_link(ipr, ifname)


def _remove_retired_sandbox_links(ctrl: "Controller", note) -> None:
    """Interfaces a driver cut off from a sandbox (alias pynet:retired:...)
    and meant to delete in the background, left by a crash before it did."""
    from netstack.kernel.links import alias_for

    prefix = alias_for("retired", "")
    for sb in ctrl.sandboxes.values():
        if sb.key == HANDOFF or not _alive(sb.key):
            continue
        handle = ctrl._rtnl(sb)
        for _, name, alias, _ in handle.links():
            if alias.startswith(prefix):
                note(f"retired interface {name} left in sandbox {sb.name} removed")
                handle.delete_link(name)


def _sync_firewall(ctrl: "Controller") -> None:
    net_rules = []
    for net in ctrl.networks.values():
        rules = ctrl._network_rules(net, ctrl._driver(net.driver))
        if rules is not None:
            net_rules.append(rules)
    port_rules = []
    for ep in ctrl.endpoints.values():
        sb = ctrl.sandboxes.get(ep.sandbox_id)
        if sb is not None and ep.driver_state.get("is_gateway"):
            rules = ctrl._port_rules(sb, ep)
            if rules is not None:
                port_rules.append(rules)
    ctrl.firewall.sync(net_rules, port_rules)  # type: ignore[attr-defined]


def _repair_endpoints(ctrl: "Controller", note) -> None:
    """An endpoint whose interface vanished (its bridge was re-created, or
    someone deleted the veth) is made again with the same addresses."""
    from netstack.kernel import links

    with links.host() as ipr:
        for ep in list(ctrl.endpoints.values()):
            host_if = str(ep.driver_state.get("host_ifname") or "")
            net = ctrl.networks[ep.network_id]
            if not host_if:
                continue
            info = links.link_info(ipr, host_if)
            bridge = str(net.driver_state.get("bridge", ""))
            if info is not None:
                if bridge and info["master"] != links.index_of(ipr, bridge):
                    note(f"veth {host_if} re-attached to {bridge}")
                    ipr.link("set", index=info["index"], master=links.index_of(ipr, bridge))
                continue
            sb = ctrl.sandboxes[ep.sandbox_id]
            note(f"endpoint {ep.name} on {net.name}: interface missing, re-made")
            cfg = EndpointConfig(
                ipv4=ep.ipv4.split("/")[0] if ep.ipv4 else "", ipv6=ep.ipv6.split("/")[0] if ep.ipv6 else "",
                aliases=tuple(ep.aliases), mac=ep.mac, gw_priority=ep.gw_priority,
            )
            ctrl._disconnect(net, sb, ep)
            ctrl._connect(net, sb, cfg)
