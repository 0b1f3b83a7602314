"""Endpoint: one sandbox's attachment to one network (a veth, a macvlan)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PortBinding:
    """One published port (or range, when the ends differ)."""

    proto: str                # tcp | udp | sctp
    container_port: int
    host_port: int
    host_ip: str = ""         # "" = every address of the host
    container_port_end: int = 0   # 0 = single port
    host_port_end: int = 0

    def spec(self) -> str:
        cp = f"{self.container_port}" + (f"-{self.container_port_end}" if self.container_port_end else "")
        hp = f"{self.host_port}" + (f"-{self.host_port_end}" if self.host_port_end else "")
        hip = f"{self.host_ip}:" if self.host_ip else ""
        return f"{hip}{hp}:{cp}/{self.proto}"


@dataclass(slots=True)
class Endpoint:
    id: str                          # 64 hex
    name: str                        # the sandbox's name, as Docker names it
    network_id: str
    sandbox_id: str = ""
    ipv4: str = ""                   # CIDR (address/prefix) or ""
    ipv6: str = ""
    mac: str = ""
    aliases: list[str] = field(default_factory=list)
    ports: list[PortBinding] = field(default_factory=list)
    ifname: str = ""                 # name inside the sandbox (eth0, eth1, ...)
    gw_priority: int = 0
    driver_state: dict[str, object] = field(default_factory=dict)
    state: str = "ready"             # creating | ready | deleting
