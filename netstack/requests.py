"""Typed requests: what the API layer parses a wire body into, and what the
controller validates and acts on.  No `dict[str, Any]` past this point."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SubnetRequest:
    subnet: str = ""                 # "" = pick a default pool
    ip_range: str = ""
    gateway: str = ""
    aux_addresses: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class NetworkCreate:
    name: str
    driver: str = "bridge"
    scope: str = ""
    internal: bool = False
    attachable: bool = False
    ingress: bool = False
    enable_ipv4: bool = True
    enable_ipv6: bool = False
    ipam_driver: str = "default"
    ipam_options: tuple[tuple[str, str], ...] = ()
    subnets: tuple[SubnetRequest, ...] = ()
    options: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """How one sandbox joins one network (Docker's EndpointSettings subset)."""

    ipv4: str = ""
    ipv6: str = ""
    aliases: tuple[str, ...] = ()
    mac: str = ""
    gw_priority: int = 0
    ifname: str = ""                 # name inside the sandbox; "" = next free ethN (CNI asks for one)


@dataclass(frozen=True, slots=True)
class Attachment:
    network: str
    config: EndpointConfig = field(default_factory=EndpointConfig)


@dataclass(frozen=True, slots=True)
class SandboxCreate:
    name: str = ""
    hostname: str = ""
    key: str = ""                    # an existing netns path, given by a runtime
    pid: int = 0                     # or a process whose netns to use
    networks: tuple[Attachment, ...] = ()
    ports: tuple[str, ...] = ()      # -p specs
    labels: tuple[tuple[str, str], ...] = ()
