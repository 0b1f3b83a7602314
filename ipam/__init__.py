"""netstack.ipam: the default IP address manager.

Layering: ``_pools`` (pure prefix helpers and Docker's default pools) and
``_addresses`` (the taken addresses of one pool) know nothing of each other;
``_allocator`` combines them into DefaultIpam, which implements
netstack.ipamapi.Ipam.  Only the names below are public.
"""

from ._allocator import DefaultIpam
from ._pools import DEFAULT_GLOBAL_POOLS, DEFAULT_LOCAL_POOLS, overlaps, parse_default_pools

__all__ = [
    "DEFAULT_GLOBAL_POOLS",
    "DEFAULT_LOCAL_POOLS",
    "DefaultIpam",
    "overlaps",
    "parse_default_pools",
]
