"""Pure helpers over prefixes: overlap, Docker's default pools, and picking
the first free default subnet.  Nothing here holds state."""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable, Sequence

from netstack.errors import InvalidParameter
from netstack.ipamapi import DefaultPool, IPNetwork


def _pool(cidr: str, size: int) -> DefaultPool:
    return DefaultPool(ipaddress.ip_network(cidr), size)


#: dockerd's built-in local pools [moby daemon/libnetwork/ipamutils/utils.go]
DEFAULT_LOCAL_POOLS: tuple[DefaultPool, ...] = (
    _pool("172.17.0.0/16", 16),
    _pool("172.18.0.0/16", 16),
    _pool("172.19.0.0/16", 16),
    _pool("172.20.0.0/14", 16),
    _pool("172.24.0.0/14", 16),
    _pool("172.28.0.0/14", 16),
    _pool("192.168.0.0/16", 20),
)

#: dockerd's built-in global (swarm-scope) pools
DEFAULT_GLOBAL_POOLS: tuple[DefaultPool, ...] = (_pool("10.0.0.0/8", 24),)


def overlaps(a: IPNetwork, b: IPNetwork) -> bool:
    """True when the two prefixes share at least one address.  Prefixes of
    different families never overlap."""
    if a.version != b.version:
        return False
    return int(a.network_address) <= int(b.broadcast_address) and int(
        b.network_address
    ) <= int(a.broadcast_address)


def check_default_pool(pool: DefaultPool) -> DefaultPool:
    """Raise InvalidParameter unless `pool.size` can carve `pool.base`."""
    base = pool.base
    if not isinstance(base, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        raise InvalidParameter(f"invalid default address pool base {base!r}")
    if not base.prefixlen <= pool.size <= base.max_prefixlen:
        raise InvalidParameter(
            f"invalid default address pool {base}: size {pool.size} must be "
            f"between {base.prefixlen} and {base.max_prefixlen}"
        )
    return pool


def parse_default_pools(spec: str) -> DefaultPool:
    """Parse one dockerd `default-address-pools` entry,
    ``"base=10.10.0.0/16,size=24"``, into a DefaultPool."""
    fields: dict[str, str] = {}
    for item in spec.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in ("base", "size") or key in fields or not value:
            raise InvalidParameter(
                f"invalid default address pool {spec!r}: expected 'base=CIDR,size=N'"
            )
        fields[key] = value
    if set(fields) != {"base", "size"}:
        raise InvalidParameter(
            f"invalid default address pool {spec!r}: both base and size are required"
        )
    try:
        base = ipaddress.ip_network(fields["base"])
    except ValueError as exc:
        raise InvalidParameter(
            f"invalid default address pool base {fields['base']!r}: {exc}"
        ) from exc
    if not fields["size"].isdigit():
        raise InvalidParameter(
            f"invalid default address pool size {fields['size']!r}: not a number"
        )
    return check_default_pool(DefaultPool(base, int(fields["size"])))


def _merged_spans(taken: Iterable[IPNetwork]) -> tuple[list[int], list[int]]:
    """Sorted, disjoint [start, end] integer spans covering `taken`."""
    spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in taken)
    starts: list[int] = []
    ends: list[int] = []
    for start, end in spans:
        if ends and start <= ends[-1] + 1:
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(start)
            ends.append(end)
    return starts, ends


def first_free_subnet(
    defaults: Sequence[DefaultPool], taken: Iterable[IPNetwork], version: int
) -> IPNetwork | None:
    """The first /size subnet of `defaults` (in order) of the given family
    that overlaps nothing in `taken`.

    Candidates are never enumerated one by one: when a candidate hits a taken
    span, the search jumps to the first aligned subnet after that span, so the
    cost is bounded by the number of taken prefixes, not by the (possibly
    huge) number of subnets a base splits into.
    """
    taken = [n for n in taken if n.version == version]
    starts, ends = _merged_spans(taken)
    for pool in defaults:
        base = pool.base
        if base.version != version:
            continue
        step = 1 << (base.max_prefixlen - pool.size)
        candidate = int(base.network_address)
        last = int(base.broadcast_address)
        while candidate + step - 1 <= last:
            i = bisect.bisect_left(ends, candidate)
            if i == len(ends) or starts[i] > candidate + step - 1:
                return ipaddress.ip_network((candidate, pool.size))
            # Jump past the blocking span, to the next aligned candidate.
            candidate = (ends[i] // step + 1) * step
    return None
