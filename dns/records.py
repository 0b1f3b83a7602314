"""RecordTable: the names each sandbox can resolve, built by the controller.

Visibility follows Docker's user-defined networks: an endpoint's names
(sandbox name, network-scoped aliases, hostname) are registered on its
network only, and a sandbox sees the names of the networks it is attached
to.  ``NAME.NETWORK`` narrows a lookup to one of those networks.

Concurrency: the controller mutates (one operation at a time, under its own
lock); the DNS thread reads at any moment.  Both take this table's lock,
held only for dict operations: a reader never sees half an update, and a
mutation costs the same with 5 endpoints or 5,000 (a copy-on-write table
copied its network's dicts on every attach, which grew with the network).
``generation`` moves after every mutation, for the DNS server's caches.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass, field

from netstack.dns.backend import Addresses

__all__ = ["RecordTable"]


@dataclass(frozen=True, slots=True)
class _Endpoint:
    names: tuple[str, ...]  # as given; names[0] is the PTR name
    ipv4: str | None
    ipv6: str | None


@dataclass(slots=True)
class _Network:
    name: str
    internal: bool = False
    endpoints: dict[str, _Endpoint] = field(default_factory=dict)
    by_name: dict[str, tuple[str, ...]] = field(default_factory=dict)  # lower name -> endpoint ids

    def addresses(self, lname: str) -> Addresses | None:
        ids = self.by_name.get(lname)
        if not ids:
            return None
        v4 = [a for a in (self.endpoints[i].ipv4 for i in ids) if a]
        v6 = [a for a in (self.endpoints[i].ipv6 for i in ids) if a]
        return v4, v6

    def forget(self, endpoint_id: str) -> None:
        """Drop `endpoint_id` and its names; tolerates one that is not here."""
        old = self.endpoints.pop(endpoint_id, None)
        if old is None:
            return
        for lname in {_lower(n) for n in old.names}:
            rest = tuple(e for e in self.by_name.get(lname, ()) if e != endpoint_id)
            if rest:
                self.by_name[lname] = rest
            else:
                self.by_name.pop(lname, None)


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
        self._lock = threading.Lock()
        self._networks: dict[str, _Network] = {}
        self._sandboxes: dict[str, tuple[str, ...]] = {}
        self.generation = 0

    # -- mutations (controller) ------------------------------------------

    def add_endpoint(self, network_id: str, network_name: str, endpoint_id: str,
                     names: list[str], ipv4: str | None, ipv6: str | None) -> None:
        """Register (or replace) an endpoint's names on its network."""
        ep = _Endpoint(tuple(n.rstrip(".") for n in names if n.rstrip(".")),
                       _canonical_ip(ipv4, 4), _canonical_ip(ipv6, 6))
        with self._lock:
            net = self._networks.setdefault(network_id, _Network(name=network_name))
            net.name = network_name
            net.forget(endpoint_id)
            net.endpoints[endpoint_id] = ep
            for lname in dict.fromkeys(_lower(n) for n in ep.names):
                net.by_name[lname] = net.by_name.get(lname, ()) + (endpoint_id,)
            self.generation += 1

    def remove_endpoint(self, network_id: str, endpoint_id: str) -> None:
        """Forget an endpoint; tolerates one that is already gone."""
        with self._lock:
            net = self._networks.get(network_id)
            if net is None or endpoint_id not in net.endpoints:
                return
            net.forget(endpoint_id)
            self.generation += 1

    def set_network_internal(self, network_id: str, internal: bool) -> None:
        with self._lock:
            self._networks.setdefault(network_id, _Network(name=network_id)).internal = internal
            self.generation += 1

    def remove_network(self, network_id: str) -> None:
        """Forget a network and every endpoint on it; tolerates absence."""
        with self._lock:
            if self._networks.pop(network_id, None) is not None:
                self.generation += 1

    def set_sandbox_networks(self, sandbox_id: str, network_ids: list[str]) -> None:
        """The networks `sandbox_id` is attached to, in lookup order."""
        with self._lock:
            self._sandboxes[sandbox_id] = tuple(dict.fromkeys(network_ids))
            self.generation += 1

    def remove_sandbox(self, sandbox_id: str) -> None:
        with self._lock:
            if self._sandboxes.pop(sandbox_id, None) is not None:
                self.generation += 1

    # -- lookups (DNS thread) --------------------------------------------

    def _visible(self, sandbox_id: str) -> list[_Network]:
        nets = self._networks
        return [nets[n] for n in self._sandboxes.get(sandbox_id, ()) if n in nets]

    def resolve(self, sandbox_id: str, name: str) -> Addresses | None:
        with self._lock:
            return self._resolve(sandbox_id, _lower(name))

    def _resolve(self, sandbox_id: str, lname: str) -> Addresses | None:
        visible = self._visible(sandbox_id)
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
        with self._lock:
            for net in self._visible(sandbox_id):
                for ep in net.endpoints.values():
                    if address in (ep.ipv4, ep.ipv6) and ep.names:
                        return f"{ep.names[0]}.{net.name}"
        return None

    def may_forward(self, sandbox_id: str) -> bool:
        with self._lock:
            nets = self._visible(sandbox_id)
            return not nets or any(not n.internal for n in nets)
