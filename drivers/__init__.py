"""The driver registry: driver name -> factory, explicit, no import-time
registration.  Factories are called lazily, once, by the controller, so a
driver whose kernel feature is missing costs nothing until it is used."""

from __future__ import annotations

from typing import Callable

from netstack.driverapi import NetworkDriver


def _bridge() -> NetworkDriver:
    from netstack.drivers.bridge import BridgeDriver

    return BridgeDriver()


def _host() -> NetworkDriver:
    from netstack.drivers.host import HostDriver

    return HostDriver()


def _null() -> NetworkDriver:
    from netstack.drivers.null import NullDriver

    return NullDriver()


def _macvlan() -> NetworkDriver:
    from netstack.drivers.macvlan import MacvlanDriver

    return MacvlanDriver()


def _overlay() -> NetworkDriver:
    from netstack.drivers.overlay import OverlayDriver

    return OverlayDriver()


BUILTIN: dict[str, Callable[[], NetworkDriver]] = {
    "bridge": _bridge,
    "host": _host,
    "macvlan": _macvlan,
    "null": _null,
    "overlay": _overlay,
}


class Registry:
    def __init__(self, factories: dict[str, Callable[[], NetworkDriver]] | None = None) -> None:
        self._factories = dict(BUILTIN if factories is None else factories)
        self._drivers: dict[str, NetworkDriver] = {}

    def register(self, name: str, factory: Callable[[], NetworkDriver]) -> None:
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def known(self, name: str) -> bool:
        return name in self._factories

    def loaded(self) -> list[NetworkDriver]:
        """The drivers made so far (factories run lazily, on first use)."""
        return list(self._drivers.values())

    def get(self, name: str) -> NetworkDriver:
        driver = self._drivers.get(name)
        if driver is None:
            driver = self._drivers[name] = self._factories[name]()
        return driver
