"""Network: a group of endpoints that can talk directly (a Linux bridge,
a VXLAN segment, a macvlan parent).  Plain data; the controller owns it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class IpamConfig:
    """One subnet of a network, as Docker's IPAM.Config entry."""

    subnet: str                      # CIDR, canonical
    gateway: str | None = None       # plain address
    ip_range: str | None = None      # CIDR inside subnet
    aux_addresses: dict[str, str] = field(default_factory=dict)
    pool_id: str = ""                # the allocator's id of this pool


@dataclass(slots=True)
class Network:
    id: str                          # 64 hex
    name: str
    driver: str
    scope: str = "local"
    created: str = ""                # RFC 3339 with nanoseconds, UTC
    ipam_driver: str = "default"
    ipam_options: dict[str, str] = field(default_factory=dict)
    ipv4: list[IpamConfig] = field(default_factory=list)
    ipv6: list[IpamConfig] = field(default_factory=list)
    enable_ipv4: bool = True
    enable_ipv6: bool = False
    internal: bool = False
    attachable: bool = False
    ingress: bool = False
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    # What the driver made of it (e.g. {"bridge": "br-0123456789ab", "mtu": 1500});
    # recorded so that restart and teardown need no guessing.
    driver_state: dict[str, object] = field(default_factory=dict)
    # "creating" and "deleting" mark operations in flight: a crash leaves
    # them behind and start-up finishes or undoes them.
    state: str = "ready"

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def predefined(self) -> bool:
        return self.name in PREDEFINED


PREDEFINED = ("bridge", "host", "none")
