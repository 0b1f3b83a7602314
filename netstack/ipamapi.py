"""The IPAM contract, modelled on libnetwork's ipamapi but small.

Addresses and pools cross this boundary as stdlib ``ipaddress`` objects.
The controller asks for a pool when a network is created and for addresses
when endpoints (and gateways) are made; it replays every stored pool and
address into a fresh allocator on start, so the allocator keeps no state of
its own on disk (as Docker's default IPAM, ``RequiresRequestReplay``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOCAL = "local"
GLOBAL = "global"


@dataclass(frozen=True, slots=True)
class PoolRequest:
    """What the controller asks for; every field already validated."""

    address_space: str = LOCAL
    pool: IPNetwork | None = None          # None: pick a free default pool
    sub_pool: IPNetwork | None = None      # --ip-range, inside pool
    v6: bool = False
    exclude: tuple[IPNetwork, ...] = ()    # host routes, other networks' pools
    aux_addresses: tuple[IPAddress, ...] = ()  # reserved, never handed out


@dataclass(frozen=True, slots=True)
class Pool:
    pool_id: str            # "<space>/<cidr>[/<sub_pool cidr>]"
    network: IPNetwork


@dataclass(frozen=True, slots=True)
class DefaultPool:
    """One entry of `default-address-pools`: carve `base` into /`size`s."""

    base: IPNetwork
    size: int


@runtime_checkable
class Ipam(Protocol):
    def request_pool(self, request: PoolRequest) -> Pool:
        """Reserve a pool.  Called once per network and family at create,
        and again at start-up to replay stored networks.  Raises Conflict
        when the pool overlaps one already reserved in that address space,
        Unavailable when no default pool is free."""

    def release_pool(self, pool_id: str) -> None:
        """Free a pool and every address in it.  Unknown ids are ignored."""

    def request_address(
        self, pool_id: str, preferred: IPAddress | None = None, *, gateway: bool = False
    ) -> IPAddress:
        """Hand out one address of the pool: `preferred` if given (Conflict
        if taken, InvalidParameter if outside the pool), else a free one in
        the sub-pool.  Never the network/broadcast address or an aux
        address; a just-released address is not handed back at once."""

    def release_address(self, pool_id: str, address: IPAddress) -> None:
        """Return an address.  Releasing a free address is a no-op."""
