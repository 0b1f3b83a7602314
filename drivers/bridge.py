"""The `bridge` driver: a Linux bridge per network, a veth per endpoint.

Options (Docker's labels, so `docker network create -o ...` carries over):
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Mapping

from netstack.driverapi import Capability, JoinResult
from netstack.endpoint import Endpoint
from netstack.errors import Conflict, InvalidParameter, NotFound
from netstack.kernel import links, netns
from netstack.kernel.links import random_mac
from netstack.kernel.rtnl import LinkReaper, Rtnl
from netstack.network import Network
from netstack.validation import check_known_options
from netstack.sandbox import HANDOFF
from netstack.validation import parse_bool_option as parse_bool

NAME = "bridge"

OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_MTU = "com.docker.network.driver.mtu"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"
OPT_HOST_BINDING_IPV4 = "com.docker.network.bridge.host_binding_ipv4"
OPTIONS = (OPT_BRIDGE_NAME, OPT_MTU, OPT_ICC, OPT_MASQUERADE, OPT_HOST_BINDING_IPV4)

__doc__ += "".join(f"\n    {o}" for o in OPTIONS) + "\n"

DEFAULT_MTU = 1500


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    bridge: str
    mtu: int = DEFAULT_MTU
    icc: bool = True
    masquerade: bool = True
    host_binding_ipv4: str = ""


def parse_mtu(key: str, value: str) -> int:
    try:
        mtu = int(value)
    except ValueError:
        raise InvalidParameter(f"invalid value {value!r} for option {key}: expected an integer") from None
    if not 68 <= mtu <= 65535:
        raise InvalidParameter(f"invalid MTU {mtu} for option {key}: must be between 68 and 65535")
    return mtu


def parse_options(network: Network) -> BridgeConfig:
    """Options as a typed config; every key known, every value valid."""
    opts = network.options
    check_known_options(opts, OPTIONS, "bridge")
    name = opts.get(OPT_BRIDGE_NAME) or f"br-{network.id[:12]}"
    links.check_ifname(name, "bridge name")
    host_ip = opts.get(OPT_HOST_BINDING_IPV4, "")
    if host_ip:
        try:
            ipaddress.IPv4Address(host_ip)
        except ValueError:
            raise InvalidParameter(f"invalid value {host_ip!r} for option {OPT_HOST_BINDING_IPV4}") from None
    return BridgeConfig(
        bridge=name,
        mtu=parse_mtu(OPT_MTU, opts[OPT_MTU]) if OPT_MTU in opts else DEFAULT_MTU,
        icc=parse_bool(OPT_ICC, opts[OPT_ICC]) if OPT_ICC in opts else True,
        masquerade=parse_bool(OPT_MASQUERADE, opts[OPT_MASQUERADE]) if OPT_MASQUERADE in opts else True,
        host_binding_ipv4=host_ip,
    )


def gateway_addresses(network: Network) -> list[tuple[str, int]]:
    return [(c.gateway, ipaddress.ip_network(c.subnet).prefixlen) for c in network.ipv4 + network.ipv6 if c.gateway]


def default_gateways(network: Network) -> tuple[str, str]:
    """The (IPv4, IPv6) next hops a sandbox's default routes take; none on
    an internal network."""
    if network.internal:
        return "", ""
    return (next((c.gateway for c in network.ipv4 if c.gateway), "") or "",
            next((c.gateway for c in network.ipv6 if c.gateway), "") or "")


def create_gateway_bridge(ipr: links.IPRoute, name: str, network: Network, *, alias: str, mtu: int) -> None:
    """A bridge holding the network's gateway addresses, with forwarding
    on: the host routes its sandboxes' traffic (the bridge and overlay
    drivers).  Removed again if any step fails."""
    links.create_bridge(ipr, name, alias=alias, mtu=mtu, addresses=gateway_addresses(network))
    try:
        # The host reaches published ports through 127.0.0.1: DNAT'd
        # packets keep a loopback source until POSTROUTING masquerades it.
        links.set_if_sysctl(4, name, "route_localnet", "1")
        links.set_sysctl("net/ipv4/ip_forward", "1")
        if network.ipv6:
            links.set_sysctl("net/ipv6/conf/all/forwarding", "1")
    except Exception:
        links.delete_link(ipr, name)
        raise


def repair_gateway_bridge(rtnl: Rtnl, name: str, network: Network) -> list[str]:
    """Put back a gateway bridge's addresses and up state, should someone
    have taken them (`ip addr flush`, `ip link set down`): its sandboxes'
    way out depends on them.  Says what was put back.  (Raw rtnetlink:
    the overlay's reconcile loop runs this every few seconds.)"""
    link = rtnl.link_state(name)
    if link is None:
        return []
    done = []
    have = {ipaddress.ip_address(a) for a in rtnl.addresses(link.index)}
    for address, prefixlen in gateway_addresses(network):
        if ipaddress.ip_address(address) not in have:
            rtnl.add_address(link.index, f"{address}/{prefixlen}")
            done.append(f"address {address}/{prefixlen} on {name}")
    if not link.up:
        rtnl.link_up(link.index)
        done.append(f"{name} up")
    return done


def host_ifname(endpoint_id: str) -> str:
    # Deterministic, so teardown can recompute it from the endpoint id alone.
    return f"pnv{endpoint_id[:12]}"


class BridgeDriver:
    name = NAME
    capability = Capability(publishes_ports=True, masquerades=True)

    def __init__(self) -> None:
        self._ipr = links.host()
        self._rtnl = Rtnl()  # the attach hot path
        self._reaper = LinkReaper()

    def validate(self, network: Network, networks: list[Network]) -> None:
        cfg = parse_options(network)
        for other in networks:
            if other.driver == NAME and other.id != network.id and other.driver_state.get("bridge") == cfg.bridge:
                raise Conflict(f"bridge name {cfg.bridge} is already used by network {other.name}")
        existing = links.link_info(self._ipr, cfg.bridge)
        if existing is not None:
            raise Conflict(f"a link named {cfg.bridge} already exists on the host")

    def config(self, network: Network) -> BridgeConfig:
        return parse_options(network)

    def create_network(self, network: Network) -> Mapping[str, object]:
        cfg = parse_options(network)
        create_gateway_bridge(self._ipr, cfg.bridge, network, alias=links.alias_for(NAME, network.id), mtu=cfg.mtu)
        return {"bridge": cfg.bridge, "mtu": cfg.mtu}

    def delete_network(self, network: Network) -> None:
        self._reaper.flush()
        links.delete_link(None, str(network.driver_state.get("bridge") or parse_options(network).bridge))

    def network_exists(self, network: Network) -> bool:
        info = links.link_info(self._ipr, str(network.driver_state.get("bridge", "")))
        return info is not None and info["alias"] == links.alias_for(NAME, network.id)

    def owned_links(self) -> dict[str, str]:
        return links.owned_links(self._ipr, NAME)

    def repair_network(self, network: Network) -> list[str]:
        return repair_gateway_bridge(self._rtnl, str(network.driver_state.get("bridge", "")), network)

    def create_endpoint(self, network: Network, endpoint: Endpoint) -> Mapping[str, object]:
        return {"mac": endpoint.mac or random_mac()}

    def delete_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        pass

    def join(self, network: Network, endpoint: Endpoint, sandbox_key: str, ifname: str) -> JoinResult:
        mtu = int(network.driver_state.get("mtu", DEFAULT_MTU))  # type: ignore[arg-type]
        veth = host_ifname(endpoint.id)
        # A dying peer may still hold this ifname in the sandbox's namespace
        # (reached by this path or another: the group is the namespace).
        self._reaper.flush(netns.identity(sandbox_key))
        bridge = str(network.driver_state["bridge"])
        master = self._rtnl.link_index(bridge)
        if master is None:
            raise NotFound(f"bridge {bridge} of network {network.name} does not exist")
        # HANDOFF: the peer stays in pynetd's namespace for an engine to move.
        fd = os.open("/proc/thread-self/ns/net" if sandbox_key == HANDOFF else sandbox_key, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # One request: the peer is born inside the sandbox, named and
            # addressed, and the host end is born up on the bridge.
            peer_index = self._rtnl.create_veth(veth, ifname, peer_netns_fd=fd, peer_mac=endpoint.mac, mtu=mtu,
                                                master=master, alias=links.alias_for("endpoint", endpoint.id))
        finally:
            os.close(fd)
        gw4, gw6 = default_gateways(network)
        return JoinResult(host_ifname=veth, sandbox_ifname=ifname, gateway4=gw4, gateway6=gw6, mtu=mtu,
                          sandbox_ifindex=peer_index if sandbox_key != HANDOFF else 0)

    def leave(self, network: Network, endpoint: Endpoint, sandbox_key: str) -> None:
        # Cut off now, deleted in the background (the peer in the sandbox
        # goes with the host end).
        self._reaper.retire(host_ifname(endpoint.id), group=netns.identity(sandbox_key))

    def settle(self) -> None:
        """Wait until every retired link is really gone."""
        self._reaper.flush()

    def owned_endpoint_links(self) -> dict[str, str]:
        return links.owned_links(self._ipr, "endpoint")
