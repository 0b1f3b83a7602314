"""Sandbox: a container's network namespace with its endpoints, routes,
resolv.conf and hosts content.  `key` is the path of the namespace."""

from __future__ import annotations

from dataclasses import dataclass, field

from netstack.endpoint import PortBinding


#: The key of a sandbox whose namespace is not pynet's to enter: a container
#: engine (Docker, through the remote driver protocol) moves each interface
#: into its container itself.  Joins leave both veth ends in pynetd's
#: namespace (the peer named as the endpoint's IfName, unconfigured, down);
#: the controller then configures nothing inside (no addresses, routes or
#: embedded DNS) and the engine does.  Only the bridge driver supports it.
HANDOFF = "handoff"


@dataclass(slots=True)
class Sandbox:
    id: str                          # 64 hex
    name: str
    key: str                         # netns path (/run/pynet/netns/<id12>, /proc/PID/ns/net, ...)
    hostname: str = ""
    owned: bool = True               # pynet made the namespace and removes it
    created: str = ""
    dns_port: int = 0                # the resolver's real port inside the namespace
    labels: dict[str, str] = field(default_factory=dict)
    # Published ports, host ports resolved; programmed on the gateway endpoint.
    ports: list[PortBinding] = field(default_factory=list)
    state: str = "ready"

    @property
    def short_id(self) -> str:
        return self.id[:12]
