"""The `host` driver behind the predefined network `host`: the sandbox is
the host's own namespace, so, as for `null`, there is nothing to create."""

from __future__ import annotations

from netstack.drivers.null import NullDriver

NAME = "host"


class HostDriver(NullDriver):
    name = NAME
