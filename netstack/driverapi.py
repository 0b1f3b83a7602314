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
    sandbox_ifindex: int = 0         # the interface's index in the sandbox, 0 = look it up


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


@runtime_checkable
class Repairing(Protocol):
    """Drivers whose network's kernel objects can drift while they exist
    (an address flushed, a link set down by hand)."""

    def repair_network(self, network: Network) -> list[str]:
        """Put back what drifted; says what (empty: nothing had)."""


@runtime_checkable
class HostAddressing(Protocol):
    """Drivers that take addresses of the network's subnets for the host:
    macvlan's host access, and the parent's own addresses, which no
    container may be given."""

    def reserved_addresses(self, network: Network) -> Mapping[str, str]:
        """Called after IPAM has the network's pools, before create_network.
        Returns auxiliary-address name -> address, "" meaning any free one
        (then one per subnet).  The controller reserves them in IPAM and
        records them in the subnet's aux addresses (so they show in inspect,
        are replayed on restart and go with the pool); an address already
        taken (the gateway, a user's aux address) is left as it is."""


@runtime_checkable
class LowerLinked(Protocol):
    """Drivers whose endpoints sit on a link pynet does not own (a macvlan
    parent), which may be deleted and come back; the kernel deletes the
    endpoints' interfaces with it.  Before a connect the controller re-makes
    the network (Reconciling.network_exists) and the endpoints reported
    "missing", so a network heals on its next use, without a restart."""

    def endpoint_state(self, network: Network, endpoint: Endpoint, sandbox_key: str) -> str:
        """"up", "down" (the interface exists, its lower link is down) or
        "missing".  Reads only; called on inspect and before connect."""
