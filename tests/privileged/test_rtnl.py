"""The raw rtnetlink client and the background link reaper, against the
kernel, inside a namespace host of the test's own."""

from __future__ import annotations

import json
import os

import pytest

from netstack.kernel.netns import run_in_netns
from netstack.testing.hosts import NetnsHost

pytestmark = pytest.mark.privileged


def link_names(host: NetnsHost) -> set[str]:
    return {l["ifname"] for l in json.loads(host.exec(["ip", "-j", "link", "show"]).stdout)}


def test_new_veth_echoes_its_peer_index_and_carries_its_alias(host):
    from netstack.kernel.rtnl import Rtnl

    sandbox = NetnsHost("pnr")
    try:
        def make() -> int:
            r = Rtnl()
            fd = os.open(sandbox.path, os.O_RDONLY)
            try:
                return r.create_veth("pnvtest0", "eth3", peer_netns_fd=fd, peer_mac="02:42:0a:00:00:09", mtu=1400,
                                     master=0, alias="pynet:endpoint:test")
            finally:
                os.close(fd)
                r.close()

        peer_index = run_in_netns(host.path, make)
        [peer] = json.loads(sandbox.exec(["ip", "-j", "link", "show", "eth3"]).stdout)
        assert peer_index == peer["ifindex"] and peer["address"] == "02:42:0a:00:00:09" and peer["mtu"] == 1400
        [mine] = json.loads(host.exec(["ip", "-j", "link", "show", "pnvtest0"]).stdout)
        assert mine["ifalias"] == "pynet:endpoint:test"
        def dump() -> list:
            r = Rtnl()
            try:
                return r.links()
            finally:
                r.close()

        links = run_in_netns(host.path, dump)
        assert (mine["ifindex"], "pnvtest0", "pynet:endpoint:test", "veth") in links
    finally:
        sandbox.close()


def test_reaper_flushes_one_sandbox_or_all(host):
    """flush(group) returns once that group's retired links are gone (the
    others may still be dying); flush() once all are."""
    from netstack.kernel.rtnl import LinkReaper

    for i in range(4):
        host.exec(["ip", "link", "add", f"ra{i}", "type", "veth", "peer", "name", f"rb{i}"])

    def reap() -> None:
        reaper = LinkReaper()
        for i in range(4):
            reaper.retire(f"ra{i}", group="x" if i < 2 else "y")
        reaper.flush("x")
        assert not {"ra0", "ra1"} & link_names(host)
        reaper.flush()
        assert not {"ra0", "ra1", "ra2", "ra3"} & link_names(host)
        reaper.flush("nothing-pending")  # returns at once

    run_in_netns(host.path, reap)
