"""pynet: a container networking stack for Linux (Docker's CNM in Python).

Layers, bottom up:  kernel/ (netlink, netns, firewall)  <-  drivers, ipam,
dns  <-  controller (the CNM model: networks, sandboxes, endpoints)  <-
api/ (pynetd's HTTP API, and a client)  <-  cli/.

The public names below load lazily, so that `import netstack` (which the
CLI's entry point does) costs nothing until one is used.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time (pynet-cni, the CLI); annotations are strings
    from typing import Any

__version__ = "0.1.0"

__all__ = [
    "Client",
    "Controller",
    "Conflict",
    "EndpointConfig",
    "Forbidden",
    "Internal",
    "InvalidParameter",
    "NetworkCreate",
    "NotFound",
    "PynetError",
    "SandboxCreate",
    "SubnetRequest",
    "Unavailable",
    "__version__",
]

_LAZY = {
    "Client": "netstack.api.client",
    "Controller": "netstack.controller",
    "Conflict": "netstack.errors",
    "Forbidden": "netstack.errors",
    "Internal": "netstack.errors",
    "InvalidParameter": "netstack.errors",
    "NotFound": "netstack.errors",
    "PynetError": "netstack.errors",
    "Unavailable": "netstack.errors",
    "EndpointConfig": "netstack.requests",
    "NetworkCreate": "netstack.requests",
    "SandboxCreate": "netstack.requests",
    "SubnetRequest": "netstack.requests",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'netstack' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
