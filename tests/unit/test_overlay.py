"""The overlay driver's pure parts: options and the FDB/neighbour plan."""

from __future__ import annotations

import pytest

from netstack.drivers.overlay import driver as ov
from netstack.drivers.overlay.options import OPT_MTU, OPT_VNI, parse_options
from netstack.drivers.overlay.peers import Peer, plan
from netstack.errors import InvalidParameter
from netstack.network import Network

A = Peer("ep-a", "02:00:00:00:00:0a", "10.199.0.12", "10.210.0.2")
B = Peer("ep-b", "02:00:00:00:00:0b", "10.199.0.13", "10.210.0.3", "fd00::3")


def net(**options: str) -> Network:
    return Network(id="ab" * 32, name="ov", driver="overlay", scope="global", options=dict(options))


def test_plan_from_empty_programs_fdb_and_neighbours():
    p = plan([A, B], set(), set())
    assert p.fdb_add == {(A.mac, A.vtep), (B.mac, B.vtep)}
    assert p.neigh_replace == {("10.210.0.2", A.mac), ("10.210.0.3", B.mac), ("fd00::3", B.mac)}
    assert not p.fdb_delete and not p.neigh_delete


def test_plan_in_sync_is_empty_and_case_insensitive():
    fdb = {(A.mac.upper(), A.vtep)}
    neigh = {("10.210.0.2", A.mac.upper())}
    assert not plan([A], fdb, neigh)


def test_plan_removes_a_gone_peer_and_repairs_a_moved_one():
    moved = Peer("ep-a", "02:00:00:00:00:0c", "10.199.0.14", "10.210.0.2")  # address reused by a new MAC elsewhere
    fdb = {(A.mac, A.vtep), (B.mac, B.vtep)}
    neigh = {("10.210.0.2", A.mac), ("10.210.0.3", B.mac)}
    p = plan([moved], fdb, neigh)
    assert p.fdb_delete == {(A.mac, A.vtep), (B.mac, B.vtep)}
    assert p.fdb_add == {(moved.mac, moved.vtep)}
    assert p.neigh_replace == {("10.210.0.2", moved.mac)}
    assert p.neigh_delete == {"10.210.0.3"}   # 10.210.0.2 is replaced, not deleted


def test_options_parse_vni_and_mtu():
    cfg = parse_options(net(**{OPT_VNI: "4097", OPT_MTU: "1400"}))
    assert (cfg.vni, cfg.mtu) == (4097, 1400)
    assert parse_options(net()).vni is None


@pytest.mark.parametrize("options, text", [
    ({OPT_VNI: "0"}, "between 1 and"),
    ({OPT_VNI: "16777216"}, "between 1 and"),
    ({OPT_VNI: "x"}, "expected a VXLAN id"),
    ({OPT_VNI: "4096,4097"}, "one VNI"),
    ({OPT_MTU: "20"}, "MTU"),
    ({"com.docker.network.bridge.name": "x"}, "unknown option"),
])
def test_bad_options_are_refused(options, text):
    with pytest.raises(InvalidParameter, match=text):
        parse_options(net(**options))


def test_names_fit_ifnamsiz_and_are_deterministic():
    nid, eid = "0123456789abcdef" * 4, "fedcba9876543210" * 4
    for name in (ov.bridge_name(nid), ov.vxlan_name(nid), ov.host_ifname(eid)):
        assert len(name) <= 15
    assert ov.bridge_name(nid) != ov.vxlan_name(nid)
    assert ov.bridge_name(nid) == ov.bridge_name(nid)
