"""The macvlan driver's pure parts: options, VLAN parents, netlink requests."""

from __future__ import annotations

import pytest

from netstack.drivers import Registry
from netstack.drivers.macvlan import (
    HOST_AUX, MacvlanConfig, MacvlanDriver, VlanParent, parse_options, parse_vlan,
)
from netstack.errors import InvalidParameter
from netstack.kernel import links


def test_defaults_and_docker_option_names():
    assert parse_options({"parent": "eth1"}) == MacvlanConfig(parent="eth1", mode="bridge", host_access=False)
    assert parse_options({}) == MacvlanConfig(parent="")
    assert parse_options({"parent": "eth1", "macvlan_mode": "private"}).mode == "private"
    assert parse_options({"parent": "eth1", "host_access": "true"}).host_access


@pytest.mark.parametrize("mode", ["bridge", "private", "vepa", "passthru"])
def test_every_kernel_mode_is_accepted(mode):
    assert parse_options({"parent": "eth1", "macvlan_mode": mode}).mode == mode


@pytest.mark.parametrize("opts, text", [
    ({"macvlan_mode": "source"}, "invalid macvlan_mode 'source'"),
    ({"macvlan_mode": "Bridge"}, "invalid macvlan_mode"),
    ({"parent": "eth1", "mtu": "9000"}, "unknown option 'mtu'"),
    ({"parent": "a" * 16}, "invalid parent interface name"),
    ({"parent": "eth1", "host_access": "maybe"}, "host_access"),
    ({"parent": "eth1", "host_access": "true", "macvlan_mode": "vepa"}, "needs macvlan_mode bridge"),
    ({"host_access": "true"}, "needs a parent"),
])
def test_bad_options(opts, text):
    with pytest.raises(InvalidParameter, match=text):
        parse_options(opts)


def test_internal_ignores_the_parent_as_docker_does():
    assert parse_options({"parent": "eth1"}, internal=True).parent == ""


def test_vlan_parents():
    assert parse_vlan("eth0.10") == VlanParent("eth0", 10)
    assert parse_vlan("bond0.4094") == VlanParent("bond0", 4094)
    assert parse_vlan("eth0.1") == VlanParent("eth0", 1)
    assert parse_vlan("eth0") is None
    assert parse_vlan(".10") is None
    assert parse_vlan("br.lan.7") == VlanParent("br.lan", 7)


@pytest.mark.parametrize("parent, text", [
    ("eth0.0", "out of range"), ("eth0.4095", "out of range"), ("eth0.99999", "out of range"),
    ("eth0.x", "VLAN id"), ("eth0.", "VLAN id"), ("eth0.-1", "VLAN id"),
])
def test_bad_vlan_parents(parent, text):
    with pytest.raises(InvalidParameter, match=text):
        parse_vlan(parent)


def test_vlan_request_is_ip_link_add_type_vlan():
    assert links.vlan_request("eth0.10", base_index=7, vlan_id=10) == {
        "ifname": "eth0.10", "kind": "vlan", "link": 7, "vlan_id": 10,
    }
    for bad in (0, 4095, -3):
        with pytest.raises(InvalidParameter, match="out of range"):
            links.vlan_request("eth0.x", base_index=7, vlan_id=bad)
    with pytest.raises(InvalidParameter):
        links.vlan_request("averyveryverylongname.10", base_index=7, vlan_id=10)


def _wire(request: dict) -> "object":
    """Encode a request as pyroute2 sends it (its own argument filters, then
    an RTM_NEWLINK ifinfmsg) and decode the bytes back."""
    from pyroute2.iproute.linux import get_arguments_processor
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    args = dict(get_arguments_processor("link", "add", dict(request)))
    msg = ifinfmsg()
    msg["attrs"] = [["IFLA_IFNAME", args["ifname"]], ["IFLA_LINK", args["link"]],
                    ["IFLA_LINKINFO", args["IFLA_LINKINFO"]]]
    msg.encode()
    back = ifinfmsg(msg.data)
    back.decode()
    return back


def test_vlan_request_on_the_wire_is_802_1q_id_10_on_the_base():
    msg = _wire(links.vlan_request("eth0.10", base_index=7, vlan_id=10))
    info = msg.get_attr("IFLA_LINKINFO")
    assert (msg.get_attr("IFLA_IFNAME"), msg.get_attr("IFLA_LINK")) == ("eth0.10", 7)
    assert info.get_attr("IFLA_INFO_KIND") == "vlan"
    assert info.get_attr("IFLA_INFO_DATA").get_attr("IFLA_VLAN_ID") == 10
    # no IFLA_VLAN_PROTOCOL: the kernel's default, 802.1Q (not 802.1ad)
    assert info.get_attr("IFLA_INFO_DATA").get_attr("IFLA_VLAN_PROTOCOL") is None


def test_macvlan_request_on_the_wire_carries_the_mode():
    msg = _wire(links.macvlan_request("eth0", parent_index=3, mode="private", mtu=1500))
    data = msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    assert msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "macvlan"
    assert data.get_attr("IFLA_MACVLAN_MODE") in ("private", 1)  # MACVLAN_MODE_PRIVATE


def test_macvlan_request():
    assert links.macvlan_request("eth0", parent_index=3, mode="bridge", mtu=1400, mac="02:00:00:00:00:01",
                                 net_ns_fd=9) == {
        "ifname": "eth0", "kind": "macvlan", "link": 3, "macvlan_mode": "bridge", "mtu": 1400,
        "address": "02:00:00:00:00:01", "net_ns_fd": 9,
    }
    assert "net_ns_fd" not in links.macvlan_request("pmh0", parent_index=3, mode="private", mtu=1500)
    with pytest.raises(InvalidParameter, match="invalid macvlan mode"):
        links.macvlan_request("eth0", parent_index=3, mode="source", mtu=1500)


def test_registered_and_capabilities():
    assert "macvlan" in Registry().names()
    cap = MacvlanDriver.capability
    assert not cap.needs_gateway and not cap.publishes_ports and not cap.masquerades
    for method in ("validate", "create_network", "delete_network", "create_endpoint", "delete_endpoint",
                   "join", "leave", "network_exists", "owned_links", "reserved_addresses", "endpoint_state"):
        assert callable(getattr(MacvlanDriver, method))
    assert HOST_AUX == "pynet-host"
