"""The Python API a runtime uses: examples/attach_namespace.py, run as
documented in docs/runtimes.md, in process and against a running pynetd."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.privileged

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "attach_namespace.py")


def run_example(host, *args: str) -> dict:
    out = subprocess.run(host.nsenter([sys.executable, EXAMPLE, *args]), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def check(result: dict) -> None:
    [iface] = result["api"]
    assert iface["ifname"] == "eth0" and iface["ipv4"].startswith("10.123.0.")
    assert result["kernel"] == [f"eth0 {iface['ipv4']}"]
    assert result["after"] == []


def test_example_in_process(host, tmp_path):
    check(run_example(host, "--data-root", str(tmp_path / "data")))
    links = json.loads(host.exec(["ip", "-j", "link", "show"]).stdout)
    assert [l["ifname"] for l in links] == ["lo"]          # bridge and veth gone


def test_example_with_client(host, daemon):
    check(run_example(host, "--host", daemon.url))
    c = daemon.client()
    assert c.sandboxes() == []
    assert sorted(n["Name"] for n in c.networks()) == ["host", "none"]


def test_public_names():
    import netstack

    assert netstack.Controller.__module__ == "netstack.controller"
    assert netstack.Client.__module__ == "netstack.api.client"
