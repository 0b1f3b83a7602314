"""The network driver contract, modelled on libnetwork's driverapi but small.

The controller calls a driver in a fixed order and undoes completed steps if
a later one fails:

    validate  -> create_network                      (network create)
    create_endpoint -> join                          (connect)
    leave -> delete_endpoint                         (disconnect)
    delete_network                                   (network rm)

Drivers receive plain data and return frozen results; they never touch the
store, the resolver, the firewall or each other.  Optional capabilities are
separate protocols (``Reconciling``), so no driver carries no-op stubs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, runtime_checkable

from netstack.endpoint import Endpoint
from netstack.network import Network

LOCAL = "local"
GLOBAL = "global"


@dataclass(frozen=True, slots=True)
class Capability:
    data_scope: str = LOCAL          # where the network's state lives
    connectivity_scope: str = LOCAL  # how far its endpoints reach
    needs_gateway: bool = True       # False: IPAM must not invent a gateway
    publishes_ports: bool = False    # port publishing rules apply
    masquerades: bool = False        # egress NAT applies (non-internal)


@dataclass(frozen=True, slots=True)
class Route:
    destination: str                 # CIDR
    gateway: str = ""                # "" = on-link


@dataclass(frozen=True, slots=True)
class JoinResult:
    """What the controller must configure inside the sandbox after join."""

    host_ifname: str                 # the host side (veth on the bridge), "" if none
    sandbox_ifname: str              # the interface as created in the sandbox
    gateway4: str = ""
    gateway6: str = ""
    mtu: int = 1500
    routes: tuple[Route, ...] = ()


@runtime_checkable
class NetworkDriver(Protocol):
    name: str
    capability: Capability

    def validate(self, network: Network, networks: list[Network]) -> None:
        """Check the network's options before anything is touched.  Called
        before IPAM; `networks` are the existing ones (for clashes such as
        two networks on one bridge name).  Raises InvalidParameter/Conflict."""

    def create_network(self, network: Network) -> Mapping[str, object]:
        """Make the kernel objects of a network whose IPAM is settled.
        Returns the driver state to store (e.g. the bridge name).  Must
        leave nothing behind when it raises."""

    def delete_network(self, network: Network) -> None:
        """Remove what create_network made.  Tolerates objects already gone."""

    def create_endpoint(self, network: Network, endpoint: Endpoint) -> Mapping[str, object]:
        """Reserve endpoint resources (a MAC if the driver derives one).
        Returns driver state to store with the endpoint."""

    def delete_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        """Free what create_endpoint reserved.  Tolerates missing state."""

    def join(self, network: Network, endpoint: Endpoint, sandbox_key: str, ifname: str) -> JoinResult:
        """Create the endpoint's interface inside the sandbox namespace at
        `sandbox_key`, named `ifname`, with the endpoint's MAC.  Addresses,
        routes and link-up are done by the controller."""

    def leave(self, network: Network, endpoint: Endpoint, sandbox_key: str) -> None:
        """Remove the interface made by join.  Tolerates a vanished sandbox."""


@runtime_checkable
class Reconciling(Protocol):
    """Drivers whose kernel objects outlive the daemon."""

    def network_exists(self, network: Network) -> bool:
        """True when the kernel still has what create_network made."""

    def owned_links(self) -> dict[str, str]:
        """Links in the host namespace this driver made: ifname -> network id
        (from the link's alias), so start-up can remove orphans."""
