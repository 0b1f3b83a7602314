"""RecordTable: the names each sandbox can resolve, built by the controller.

Visibility follows Docker's user-defined networks: an endpoint's names
(sandbox name, network-scoped aliases, hostname) are registered on its
network only, and a sandbox sees the names of the networks it is attached
to.  ``NAME.NETWORK`` narrows a lookup to one of those networks.

Concurrency: the controller mutates (one operation at a time, under its own
lock); the DNS thread reads at any moment.  Rather than a second lock, the
table is copy-on-write: every mutation builds a new immutable snapshot of
what it changes and publishes it with one reference assignment, then bumps
``generation``.  A reader takes one snapshot and never sees half an update.
A mutation copies the dicts of one network (plus the top-level maps), which
is cheap next to the netlink work of the same operation.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

from netstack.dns.backend import Addresses

__all__ = ["RecordTable"]


@dataclass(frozen=True, slots=True)
class _Endpoint:
    names: tuple[str, ...]  # as given; names[0] is the PTR name
    ipv4: str | None
    ipv6: str | None


@dataclass(frozen=True, slots=True)
class _Network:
    name: str
    internal: bool = False
    endpoints: Mapping[str, _Endpoint] = field(default_factory=dict)
    by_name: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # lower name -> endpoint ids

    def addresses(self, lname: str) -> Addresses | None:
        ids = self.by_name.get(lname)
        if not ids:
            return None
        v4 = [a for a in (self.endpoints[i].ipv4 for i in ids) if a]
        v6 = [a for a in (self.endpoints[i].ipv6 for i in ids) if a]
        return v4, v6


@dataclass(frozen=True, slots=True)
class _Snapshot:
    networks: Mapping[str, _Network]
    sandboxes: Mapping[str, tuple[str, ...]]


def _canonical_ip(address: str | None, version: int) -> str | None:
    if not address:
        return None
    ip = ipaddress.ip_interface(address).ip  # tolerate "10.0.0.2/24"
    if ip.version != version:
        raise ValueError(f"{address} is not an IPv{version} address")
    return str(ip)


def _lower(name: str) -> str:
    return name.rstrip(".").lower()


class RecordTable:
    """The real NameBackend.  Mutators are called by the controller in the
    same operation that joins or leaves an endpoint; lookups by the DNS
    serving thread."""

    def __init__(self) -> None:
        self._snap = _Snapshot(networks={}, sandboxes={})
        self.generation = 0

    # -- mutations (controller) ------------------------------------------

    def _publish(self, networks: Mapping[str, _Network] | None = None,
                 sandboxes: Mapping[str, tuple[str, ...]] | None = None) -> None:
        old = self._snap
        self._snap = _Snapshot(
            networks=old.networks if networks is None else MappingProxyType(dict(networks)),
            sandboxes=old.sandboxes if sandboxes is None else MappingProxyType(dict(sandboxes)),
        )
        self.generation += 1  # after publishing: see NameBackend.generation

    def _with_network(self, network_id: str, net: _Network | None) -> None:
        networks = dict(self._snap.networks)
        if net is None:
            networks.pop(network_id, None)
        else:
            networks[network_id] = net
        self._publish(networks=networks)

    def add_endpoint(self, network_id: str, network_name: str, endpoint_id: str,
                     names: list[str], ipv4: str | None, ipv6: str | None) -> None:
        """Register (or replace) an endpoint's names on its network."""
        ep = _Endpoint(tuple(n.rstrip(".") for n in names if n.rstrip(".")),
                       _canonical_ip(ipv4, 4), _canonical_ip(ipv6, 6))
        net = self._snap.networks.get(network_id) or _Network(name=network_name)
        endpoints = dict(net.endpoints)
        by_name = _unindex(net.by_name, endpoint_id, endpoints.get(endpoint_id))
        endpoints[endpoint_id] = ep
        for lname in dict.fromkeys(_lower(n) for n in ep.names):
            by_name[lname] = by_name.get(lname, ()) + (endpoint_id,)
        self._with_network(network_id, replace(net, name=network_name, endpoints=endpoints, by_name=by_name))

    def remove_endpoint(self, network_id: str, endpoint_id: str) -> None:
        """Forget an endpoint; tolerates one that is already gone."""
        net = self._snap.networks.get(network_id)
        if net is None or endpoint_id not in net.endpoints:
            return
        endpoints = dict(net.endpoints)
        by_name = _unindex(net.by_name, endpoint_id, endpoints.pop(endpoint_id))
        self._with_network(network_id, replace(net, endpoints=endpoints, by_name=by_name))

    def set_network_internal(self, network_id: str, internal: bool) -> None:
        net = self._snap.networks.get(network_id) or _Network(name=network_id)
        self._with_network(network_id, replace(net, internal=internal))

    def remove_network(self, network_id: str) -> None:
        """Forget a network and every endpoint on it; tolerates absence."""
        if network_id in self._snap.networks:
            self._with_network(network_id, None)

    def set_sandbox_networks(self, sandbox_id: str, network_ids: list[str]) -> None:
        """The networks `sandbox_id` is attached to, in lookup order."""
        sandboxes = dict(self._snap.sandboxes)
        sandboxes[sandbox_id] = tuple(dict.fromkeys(network_ids))
        self._publish(sandboxes=sandboxes)

    def remove_sandbox(self, sandbox_id: str) -> None:
        if sandbox_id in self._snap.sandboxes:
            sandboxes = dict(self._snap.sandboxes)
            del sandboxes[sandbox_id]
            self._publish(sandboxes=sandboxes)

    # -- lookups (DNS thread) --------------------------------------------

    def _visible(self, snap: _Snapshot, sandbox_id: str) -> list[_Network]:
        nets = snap.networks
        return [nets[n] for n in snap.sandboxes.get(sandbox_id, ()) if n in nets]

    def resolve(self, sandbox_id: str, name: str) -> Addresses | None:
        snap = self._snap
        visible = self._visible(snap, sandbox_id)
        lname = _lower(name)
        found = [a for a in (net.addresses(lname) for net in visible) if a is not None]
        if not found:
            # NAME.NETWORK: try every split, since names and network names
            # may both contain dots ("web.v1.front-net").
            labels = lname.split(".")
            for i in range(1, len(labels)):
                head, net_name = ".".join(labels[:i]), ".".join(labels[i:])
                found = [a for a in (net.addresses(head) for net in visible
                                     if net.name.lower() == net_name) if a is not None]
                if found:
                    break
        if not found:
            return None
        v4 = list(dict.fromkeys(a for f in found for a in f[0]))
        v6 = list(dict.fromkeys(a for f in found for a in f[1]))
        return v4, v6

    def resolve_ptr(self, sandbox_id: str, address: str) -> str | None:
        snap = self._snap
        for net in self._visible(snap, sandbox_id):
            for ep in net.endpoints.values():
                if address in (ep.ipv4, ep.ipv6) and ep.names:
                    return f"{ep.names[0]}.{net.name}"
        return None

    def may_forward(self, sandbox_id: str) -> bool:
        snap = self._snap
        nets = self._visible(snap, sandbox_id)
        return not nets or any(not n.internal for n in nets)


def _unindex(by_name: Mapping[str, tuple[str, ...]], endpoint_id: str,
             old: _Endpoint | None) -> dict[str, tuple[str, ...]]:
    """A copy of `by_name` without `endpoint_id`'s entries."""
    out = dict(by_name)
    if old is not None:
        for lname in {_lower(n) for n in old.names}:
            rest = tuple(e for e in out.get(lname, ()) if e != endpoint_id)
            if rest:
                out[lname] = rest
            else:
                out.pop(lname, None)
    return out
