"""Test tiers: tests/unit need nothing; tests/privileged and tests/e2e need
root and real tools.  Outside CI a missing privilege or tool skips; with
CI=true it fails, since CI always has both (DESIGN.md: the one allowed skip
is a kernel feature the machine lacks, found by probing and named)."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def need(condition: bool, reason: str) -> None:
    """Skip (or, in CI, fail) when a precondition other than a kernel feature is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def need_tool(*names: str) -> None:
    for name in names:
        need(shutil.which(name) is not None, f"{name} is not installed")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("privileged") or item.get_closest_marker("e2e"):
        need(os.geteuid() == 0, "needs root")


@pytest.fixture
def host():
    """A fresh namespace standing for the machine pynetd runs on."""
    from netstack.testing.hosts import NetnsHost

    h = NetnsHost("pnt")
    try:
        yield h
    finally:
        h.close()


@pytest.fixture
def daemon(host):
    """A real pynetd inside `host`, with a data root of its own."""
    from netstack.testing.hosts import Daemon, running

    with running(Daemon(host)) as d:
        yield d
