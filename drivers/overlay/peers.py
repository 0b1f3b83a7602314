"""Remote endpoints as kernel forwarding state: pure planning, no netlink.

Each remote endpoint of a network (Docker's per-container L2 design) needs,
on the network's VXLAN device:
  * a permanent FDB entry  MAC -> VTEP of the host it lives on, and
  * a permanent neighbour entry IP -> MAC, which the device's ARP/ND proxy
    answers from, so no broadcast crosses the underlay.

`plan()` diffs what should be against what the kernel has; the driver
applies the result for a watch event (one peer) and for the reconcile loop
(the whole network) alike, so drift — a stale MAC after an address was
reused, an entry somebody deleted — is repaired by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Peer:
    endpoint_id: str
    mac: str
    vtep: str
    ipv4: str = ""                   # plain addresses, no prefix
    ipv6: str = ""

    def neighbours(self) -> set[tuple[str, str]]:
        return {(ip, self.mac) for ip in (self.ipv4, self.ipv6) if ip}


@dataclass(frozen=True, slots=True)
class Plan:
    fdb_add: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    fdb_delete: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    neigh_replace: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    neigh_delete: frozenset[str] = field(default_factory=frozenset)

    def __bool__(self) -> bool:
        return bool(self.fdb_add or self.fdb_delete or self.neigh_replace or self.neigh_delete)


def plan(peers: list[Peer], fdb: set[tuple[str, str]], neigh: set[tuple[str, str]]) -> Plan:
    """What to change so that the kernel's (MAC, VTEP) FDB entries and
    (IP, MAC) neighbour entries are exactly those of `peers`."""
    want_fdb = {(p.mac.lower(), p.vtep) for p in peers}
    want_neigh = {(ip, mac.lower()) for p in peers for ip, mac in p.neighbours()}
    have_fdb = {(m.lower(), d) for m, d in fdb}
    have_neigh = {(ip, m.lower()) for ip, m in neigh}
    wanted_ips = {ip for ip, _ in want_neigh}
    return Plan(
        fdb_add=frozenset(want_fdb - have_fdb),
        fdb_delete=frozenset(have_fdb - want_fdb),
        neigh_replace=frozenset(want_neigh - have_neigh),
        # An IP whose MAC changed is replaced, not deleted.
        neigh_delete=frozenset(ip for ip, _ in have_neigh - want_neigh if ip not in wanted_ips),
    )
