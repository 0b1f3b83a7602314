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


def test_link_state_and_addresses_match_what_ip_lists(host):
    from netstack.kernel.rtnl import Rtnl

    host.exec(["ip", "link", "add", "rbr0", "type", "bridge"])
    host.exec(["ip", "link", "set", "rbr0", "alias", "pynet:test"])
    host.exec(["ip", "link", "add", "rdum0", "type", "veth", "peer", "name", "rdum1"])
    host.exec(["ip", "link", "set", "rdum0", "master", "rbr0"])
    host.exec(["ip", "addr", "add", "10.9.8.1/24", "dev", "rbr0"])
    host.exec(["ip", "addr", "add", "fd00:98::1/64", "dev", "rbr0", "nodad"])
    host.exec(["ip", "addr", "add", "10.9.9.1/24", "dev", "rdum1"])  # another link's: not listed

    def look() -> tuple:
        r = Rtnl()
        try:
            return r.link_state("rbr0"), r.link_state("rdum0"), r.link_state("nothere"), r.addresses(
                r.link_state("rbr0").index)
        finally:
            r.close()

    br, port, missing, addrs = run_in_netns(host.path, look)
    [shown] = json.loads(host.exec(["ip", "-j", "link", "show", "rbr0"]).stdout)
    assert br.index == shown["ifindex"] and br.alias == "pynet:test" and not br.up and br.master == 0
    assert port.master == br.index and missing is None
    assert sorted(addrs) == ["10.9.8.1", "fd00:98::1"]  # global scope only: no fe80::
    host.exec(["ip", "link", "set", "rbr0", "up"])
    assert run_in_netns(host.path, look)[0].up


def test_vxlan_fdb_and_neighbour_dumps_match_what_bridge_and_ip_list(host):
    """The reconcile loop's view of a VXLAN device: only that device's
    remote FDB entries and permanent neighbours, IPv4 and IPv6."""
    from netstack.drivers.overlay import neigh
    from netstack.kernel.rtnl import Rtnl

    host.exec(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"])
    host.exec(["ip", "addr", "add", "192.0.2.1/24", "dev", "eth0"])
    for name, vni in (("rvx0", 42), ("rvx1", 43)):
        host.exec(["ip", "link", "add", name, "type", "vxlan", "id", str(vni), "local", "192.0.2.1", "dstport", "4789",
                   "nolearning", "proxy"])
    host.exec(["bridge", "fdb", "append", "02:00:00:00:00:01", "dev", "rvx0", "dst", "192.0.2.2", "self", "permanent"])
    host.exec(["bridge", "fdb", "append", "02:00:00:00:00:02", "dev", "rvx0", "dst", "192.0.2.3", "self", "permanent"])
    host.exec(["bridge", "fdb", "append", "02:00:00:00:00:09", "dev", "rvx1", "dst", "192.0.2.9", "self", "permanent"])
    host.exec(["ip", "neigh", "replace", "10.0.0.2", "lladdr", "02:00:00:00:00:01", "dev", "rvx0", "nud", "permanent"])
    host.exec(["ip", "neigh", "replace", "fd00::2", "lladdr", "02:00:00:00:00:01", "dev", "rvx0", "nud", "permanent"])
    host.exec(["ip", "neigh", "replace", "10.0.0.9", "lladdr", "02:00:00:00:00:09", "dev", "rvx1", "nud", "permanent"])
    host.exec(["ip", "neigh", "replace", "10.0.0.7", "lladdr", "02:00:00:00:00:07", "dev", "rvx0", "nud", "reachable"])

    def dump() -> tuple:
        r = Rtnl()
        try:
            vx = r.link_index("rvx0")
            return neigh.fdb_entries(r, vx), neigh.entries(r, vx)
        finally:
            r.close()

    fdb, neighbours = run_in_netns(host.path, dump)
    listed = json.loads(host.exec(["bridge", "-j", "fdb", "show", "dev", "rvx0"]).stdout)
    assert fdb == {(e["mac"], e["dst"]) for e in listed if "dst" in e}
    assert fdb == {("02:00:00:00:00:01", "192.0.2.2"), ("02:00:00:00:00:02", "192.0.2.3")}
    assert neighbours == {("10.0.0.2", "02:00:00:00:00:01"), ("fd00::2", "02:00:00:00:00:01")}
