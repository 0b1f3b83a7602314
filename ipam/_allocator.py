"""DefaultIpam: Docker's default IPAM policy, in memory.

State is rebuilt by replay (the controller re-requests every stored pool and
address on start, as libnetwork does for its ``RequiresRequestReplay``
default driver), so nothing here touches a disk.  The controller serializes
calls; the allocator takes no lock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from netstack.errors import Conflict, InvalidParameter, NotFound, Unavailable
from netstack.ipamapi import (
    GLOBAL,
    LOCAL,
    DefaultPool,
    IPAddress,
    IPNetwork,
    Pool,
    PoolRequest,
)

from ._addresses import AddressSet
from ._pools import (
    DEFAULT_GLOBAL_POOLS,
    DEFAULT_LOCAL_POOLS,
    check_default_pool,
    first_free_subnet,
    overlaps,
)

SPACES = (LOCAL, GLOBAL)


@dataclass(slots=True)
class _PoolState:
    space: str
    network: IPNetwork
    sub_pool: IPNetwork | None
    addresses: AddressSet
    make: Callable[[int], IPAddress]  # int -> address of the pool's family


def _reserved_edges(network: IPNetwork) -> tuple[int, ...]:
    """Addresses a pool never hands out.  IPv4 loses its network and
    broadcast addresses, except point-to-point /31 and host /32 (RFC 3021);
    IPv6 loses its subnet-router anycast address (the first), except /127
    (RFC 6164) and /128."""
    first, last = int(network.network_address), int(network.broadcast_address)
    if network.max_prefixlen - network.prefixlen <= 1:
        return ()
    if network.version == 4:
        return (first, last)
    return (first,)


class DefaultIpam:
    """The default allocator (see netstack.ipamapi.Ipam for the contract).

    Pools are reserved per address space (`local`, `global`); two pools of
    one space never overlap, the spaces are independent.  A request without a
    pool gets the first default subnet of its family that overlaps neither a
    reserved pool of that space nor a prefix of ``request.exclude``.
    """

    def __init__(
        self,
        local_pools: Sequence[DefaultPool] = DEFAULT_LOCAL_POOLS,
        global_pools: Sequence[DefaultPool] = DEFAULT_GLOBAL_POOLS,
    ) -> None:
        self._defaults = {
            LOCAL: tuple(check_default_pool(p) for p in local_pools),
            GLOBAL: tuple(check_default_pool(p) for p in global_pools),
        }
        self._pools: dict[str, _PoolState] = {}

    # -- pools ---------------------------------------------------------------

    def request_pool(self, request: PoolRequest) -> Pool:
        space = request.address_space
        if space not in SPACES:
            raise InvalidParameter(
                f"unknown address space {space!r}: expected {LOCAL!r} or {GLOBAL!r}"
            )
        if request.pool is None:
            network = self._pick_default(request)
        else:
            network = request.pool
            self._check_explicit(request, network)
        sub_pool = request.sub_pool
        make = ipaddress.IPv6Address if network.version == 6 else ipaddress.IPv4Address
        state = _PoolState(
            space, network, sub_pool, self._address_set(network, sub_pool), make
        )
        for aux in request.aux_addresses:
            state.addresses.reserve(int(aux))
        pool_id = f"{space}/{network}" + (f"/{sub_pool}" if sub_pool else "")
        self._pools[pool_id] = state
        return Pool(pool_id, network)

    def release_pool(self, pool_id: str) -> None:
        self._pools.pop(pool_id, None)

    def pools(self) -> dict[str, IPNetwork]:
        """The reserved pools by id (for inspection and tests)."""
        return {pool_id: state.network for pool_id, state in self._pools.items()}

    def _pick_default(self, request: PoolRequest) -> IPNetwork:
        if request.sub_pool is not None or request.aux_addresses:
            raise InvalidParameter(
                "an ip-range or auxiliary addresses need an explicit subnet"
            )
        space, version = request.address_space, 6 if request.v6 else 4
        family = f"IPv{version}"
        defaults = [p for p in self._defaults[space] if p.base.version == version]
        if not defaults:
            raise Unavailable(
                f"no default {family} address pool is configured in address "
                f"space {space!r}: specify a subnet"
            )
        # A default route (a /0) would exclude everything; Docker skips it too.
        taken = [s.network for s in self._pools.values() if s.space == space]
        taken += [n for n in request.exclude if n.prefixlen > 0]
        found = first_free_subnet(defaults, taken, version)
        if found is None:
            raise Unavailable(
                f"no available pool in address space {space!r}: every default "
                f"{family} subnet overlaps a reserved pool or a host route"
            )
        return found

    def _check_explicit(self, request: PoolRequest, network: IPNetwork) -> None:
        if (network.version == 6) != request.v6:
            raise InvalidParameter(
                f"pool {network} is IPv{network.version} but the request is for "
                f"IPv{6 if request.v6 else 4}"
            )
        sub_pool = request.sub_pool
        if sub_pool is not None and (
            sub_pool.version != network.version or not sub_pool.subnet_of(network)  # type: ignore[arg-type]
        ):
            raise InvalidParameter(f"ip-range {sub_pool} is not inside pool {network}")
        for aux in request.aux_addresses:
            if aux.version != network.version or aux not in network:
                raise InvalidParameter(
                    f"auxiliary address {aux} is not inside pool {network}"
                )
        for state in self._pools.values():
            if state.space == request.address_space and overlaps(state.network, network):
                raise Conflict(
                    f"pool {network} overlaps with pool {state.network} already "
                    f"reserved in address space {state.space!r}"
                )

    @staticmethod
    def _address_set(network: IPNetwork, sub_pool: IPNetwork | None) -> AddressSet:
        first, last = int(network.network_address), int(network.broadcast_address)
        span = sub_pool or network
        addresses = AddressSet(
            first, last, int(span.network_address), int(span.broadcast_address)
        )
        for edge in _reserved_edges(network):
            addresses.reserve(edge)
        return addresses

    # -- addresses -----------------------------------------------------------

    def request_address(
        self, pool_id: str, preferred: IPAddress | None = None, *, gateway: bool = False
    ) -> IPAddress:
        state = self._pools.get(pool_id) or self._state(pool_id)
        addresses = state.addresses
        if preferred is not None:
            # A static address (or a user-given gateway) may lie anywhere in
            # the pool, outside the sub-pool too; it leaves the cursor alone.
            address = self._check_preferred(state, preferred)
            addresses.take(address)
            return state.make(address)
        if gateway:
            # The first free address of the whole pool, as Docker picks it;
            # it does not move the serial cursor either.
            found = addresses.first_free()
            if found is not None:
                addresses.take(found)
        else:
            found = addresses.take_serial()
        if found is None:
            raise Unavailable(f"no available addresses in pool {state.network}")
        return state.make(found)

    def release_address(self, pool_id: str, address: IPAddress) -> None:
        state = self._pools.get(pool_id) or self._state(pool_id)
        addresses, value = state.addresses, int(address)
        if address.version != state.network.version or not (
            addresses.first <= value <= addresses.last
        ):
            raise InvalidParameter(f"address {address} is not inside pool {state.network}")
        addresses.give_back(value)

    def _state(self, pool_id: str) -> _PoolState:
        try:
            return self._pools[pool_id]
        except KeyError:
            raise NotFound(f"address pool {pool_id!r} not found") from None

    @staticmethod
    def _check_preferred(state: _PoolState, preferred: IPAddress) -> int:
        network, addresses = state.network, state.addresses
        if preferred.version != network.version or preferred not in network:
            raise InvalidParameter(f"address {preferred} is not inside pool {network}")
        address = int(preferred)
        if address in _reserved_edges(network):
            which = "network" if address == int(network.network_address) else "broadcast"
            raise InvalidParameter(
                f"address {preferred} is the {which} address of pool {network}"
            )
        if address in addresses:
            raise Conflict(f"address {preferred} is already in use in pool {network}")
        return address
