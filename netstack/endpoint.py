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


class EndpointTable(dict[str, Endpoint]):
    """Endpoints by id, also indexed by sandbox and by network, so that an
    attach costs the same with 500 sandboxes as with 5.  An endpoint's
    sandbox and network never change, so the indexes follow insert/remove."""

    def __init__(self, endpoints: "dict[str, Endpoint] | None" = None) -> None:
        super().__init__()
        self._by_sandbox: dict[str, dict[str, Endpoint]] = {}
        self._by_network: dict[str, dict[str, Endpoint]] = {}
        for ep in (endpoints or {}).values():
            self[ep.id] = ep

    def __setitem__(self, key: str, ep: Endpoint) -> None:
        self._unindex(key)
        super().__setitem__(key, ep)
        self._by_sandbox.setdefault(ep.sandbox_id, {})[key] = ep
        self._by_network.setdefault(ep.network_id, {})[key] = ep

    def __delitem__(self, key: str) -> None:
        self._unindex(key)
        super().__delitem__(key)

    def pop(self, key: str, *default: object) -> object:  # type: ignore[override]
        self._unindex(key)
        return super().pop(key, *default)

    def _unindex(self, key: str) -> None:
        old = self.get(key)
        if old is not None:
            for index, owner in ((self._by_sandbox, old.sandbox_id), (self._by_network, old.network_id)):
                group = index.get(owner, {})
                group.pop(key, None)
                if not group:
                    index.pop(owner, None)

    def of_sandbox(self, sandbox_id: str) -> list[Endpoint]:
        return list(self._by_sandbox.get(sandbox_id, {}).values())

    def of_network(self, network_id: str) -> list[Endpoint]:
        return list(self._by_network.get(network_id, {}).values())


def dns_names(sandbox_name: str, hostname: str, aliases: list[str]) -> list[str]:
    """The names an endpoint answers to on its network's embedded DNS: the
    sandbox's name, the endpoint's aliases and the hostname."""
    names = [sandbox_name, *aliases]
    if hostname and hostname not in names:
        names.append(hostname)
    return names
