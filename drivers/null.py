"""The `null` driver behind the predefined network `none`: a sandbox with
only its loopback.  Nothing to create; joining adds no interface."""

from __future__ import annotations

from typing import Mapping

from netstack.driverapi import Capability, JoinResult
from netstack.endpoint import Endpoint
from netstack.errors import Forbidden, InvalidParameter
from netstack.network import Network

NAME = "null"


class NullDriver:
    name = NAME
    capability = Capability(needs_gateway=False)

    def validate(self, network: Network, networks: list[Network]) -> None:
        if network.options:
            raise InvalidParameter(f"the {self.name} driver takes no options, got {sorted(network.options)}")
        if any(n.driver == self.name for n in networks):
            raise Forbidden(f"only one instance of \"{self.name}\" network is allowed")

    def create_network(self, network: Network) -> Mapping[str, object]:
        return {}

    def delete_network(self, network: Network) -> None:
        pass

    def create_endpoint(self, network: Network, endpoint: Endpoint) -> Mapping[str, object]:
        return {}

    def delete_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        pass

    def join(self, network: Network, endpoint: Endpoint, sandbox_key: str, ifname: str) -> JoinResult:
        return JoinResult(host_ifname="", sandbox_ifname="")

    def leave(self, network: Network, endpoint: Endpoint, sandbox_key: str) -> None:
        pass
