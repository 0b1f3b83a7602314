"""Bridge networks in the kernel: what `ip` and `iptables-legacy-save` show
inside the daemon's own namespace, across restarts and crashes."""

from __future__ import annotations

import json

import pytest

from netstack.errors import Conflict, Forbidden, InvalidParameter, NotFound
from netstack.testing.hosts import Daemon

pytestmark = pytest.mark.privileged


def addrs(host, dev: str) -> list[str]:
    out = host.exec(["ip", "-j", "addr", "show", "dev", dev], check=False)
    if out.returncode != 0:
        return []
    return [f"{a['local']}/{a['prefixlen']}" for a in json.loads(out.stdout)[0]["addr_info"] if a["scope"] == "global"]


def links(host) -> list[str]:
    return [l["ifname"] for l in json.loads(host.exec(["ip", "-j", "link", "show"]).stdout)]


def rules(host) -> str:
    """The host's iptables rules, without iptables-save's comment lines
    (their timestamps differ from one second to the next)."""
    out = host.exec(["iptables-legacy-save"]).stdout
    return "".join(l for l in out.splitlines(keepends=True) if not l.startswith("#"))


def test_create_and_remove_leave_bridge_then_nothing(host, daemon):
    c = daemon.client()
    net_id = c.network_create({"Name": "web", "IPAM": {"Config": [{"Subnet": "10.60.0.0/24", "Gateway": "10.60.0.254"}]},
                               "Options": {"com.docker.network.driver.mtu": "1400"}})["Id"]
    bridge = f"br-{net_id[:12]}"
    assert addrs(host, bridge) == ["10.60.0.254/24"]
    mtu = json.loads(host.exec(["ip", "-j", "link", "show", bridge]).stdout)[0]["mtu"]
    assert mtu == 1400
    assert f"-s 10.60.0.0/24 ! -o {bridge} -j MASQUERADE" in rules(host)
    c.network_remove("web")
    assert bridge not in links(host)
    assert bridge not in rules(host)
    assert [n["Name"] for n in c.networks()] == sorted(["host", "none"]) or {n["Name"] for n in c.networks()} == {"host", "none"}


def test_named_bridge_and_default_pool_skip_host_routes(host, daemon):
    # A route for 172.17.0.0/16 already in the host: the default pool must skip it.
    host.exec(["ip", "link", "add", "lanx", "type", "bridge"])
    host.exec(["ip", "addr", "add", "172.17.5.1/16", "dev", "lanx"])
    host.exec(["ip", "link", "set", "lanx", "up"])
    c = daemon.client()
    c.network_create({"Name": "a", "Options": {"com.docker.network.bridge.name": "pynetbr0"}})
    subnet = c.network_inspect("a")["IPAM"]["Config"][0]["Subnet"]
    assert subnet == "172.18.0.0/16"
    assert addrs(host, "pynetbr0") == ["172.18.0.1/16"]


def test_bad_input_changes_nothing(host, daemon):
    c = daemon.client()
    c.network_create({"Name": "one", "IPAM": {"Config": [{"Subnet": "10.61.0.0/24"}]}})
    before_links, before_rules = links(host), rules(host)
    cases = [
        ({"Name": "one"}, Conflict, "already exists"),
        ({"Name": "bad name!"}, InvalidParameter, "invalid network name"),
        ({"Name": "x", "IPAM": {"Config": [{"Subnet": "10.61.0.128/25"}]}}, Conflict, "10.61.0.0/24"),
        ({"Name": "x", "IPAM": {"Config": [{"Subnet": "10.62.0.0/24", "Gateway": "10.63.0.1"}]}}, InvalidParameter, "10.63.0.1"),
        ({"Name": "x", "IPAM": {"Config": [{"Subnet": "10.62.0.0/24", "IPRange": "10.64.0.0/25"}]}}, InvalidParameter, "10.64.0.0/25"),
        ({"Name": "x", "IPAM": {"Config": [{"Subnet": "10.62.0.0/24", "AuxiliaryAddresses": {"r": "10.9.9.9"}}]}}, InvalidParameter, "10.9.9.9"),
        ({"Name": "x", "IPAM": {"Config": [{"Subnet": "10.62.0.0/33"}]}}, InvalidParameter, "10.62.0.0/33"),
        ({"Name": "x", "Driver": "nosuch"}, NotFound, "nosuch"),
        ({"Name": "x", "Options": {"com.docker.network.bridge.bogus": "1"}}, InvalidParameter, "bogus"),
        ({"Name": "x", "EnableIPv6": True}, InvalidParameter, "IPv6"),
        ({"Name": "host"}, Forbidden, "pre-defined"),
    ]
    for body, kind, text in cases:
        with pytest.raises(kind) as err:
            c.network_create(body)
        assert text in str(err.value), (body, str(err.value))
    for name in ("host", "none"):
        with pytest.raises(Forbidden, match="pre-defined"):
            c.network_remove(name)
    with pytest.raises(NotFound):
        c.network_remove("nosuch")
    assert links(host) == before_links
    assert rules(host) == before_rules
    assert sorted(n["Name"] for n in c.networks()) == ["host", "none", "one"]


def test_ipv6_network_gets_both_gateways(host, daemon):
    c = daemon.client()
    net_id = c.network_create({"Name": "dual", "EnableIPv6": True, "IPAM": {"Config": [
        {"Subnet": "10.65.0.0/24"}, {"Subnet": "fd00:65::/64"}]}})["Id"]
    got = addrs(host, f"br-{net_id[:12]}")
    assert "10.65.0.1/24" in got and "fd00:65::1/64" in got


def test_restart_keeps_networks_and_repairs_a_missing_bridge(host, daemon):
    c = daemon.client()
    net_id = c.network_create({"Name": "keep", "IPAM": {"Config": [{"Subnet": "10.66.0.0/24"}]}})["Id"]
    bridge = f"br-{net_id[:12]}"
    daemon.stop()
    host.exec(["ip", "link", "del", bridge])          # someone removed it while we were down
    host.exec(["ip", "link", "add", "br-0123456789ab", "type", "bridge"])
    host.exec(["ip", "link", "set", "br-0123456789ab", "alias", "pynet:bridge:" + "0123456789ab" * 5 + "0123"])
    daemon.start()
    c = daemon.client()
    assert c.network_inspect("keep")["Id"] == net_id
    assert addrs(host, bridge) == ["10.66.0.1/24"]
    assert "br-0123456789ab" not in links(host)          # orphan of ours: removed
    with pytest.raises(Conflict):
        c.network_create({"Name": "again", "IPAM": {"Config": [{"Subnet": "10.66.0.0/24"}]}})


def test_restart_puts_back_a_bridges_flushed_addresses_and_up_state(host, daemon):
    c = daemon.client()
    net_id = c.network_create({"Name": "drift", "EnableIPv6": True, "IPAM": {"Config": [
        {"Subnet": "10.67.0.0/24"}, {"Subnet": "fd00:67::/64"}]}})["Id"]
    bridge = f"br-{net_id[:12]}"
    daemon.stop()
    host.exec(["ip", "addr", "flush", "dev", bridge, "scope", "global"])   # someone's hand while we were down
    host.exec(["ip", "link", "set", bridge, "down"])
    assert addrs(host, bridge) == []
    daemon.start()
    assert sorted(addrs(host, bridge)) == ["10.67.0.1/24", "fd00:67::1/64"]
    link = json.loads(host.exec(["ip", "-j", "link", "show", bridge]).stdout)[0]
    assert "UP" in link["flags"]
    assert any("put back address 10.67.0.1/24" in line for line in daemon.log().splitlines())
    daemon.client().network_remove("drift")


@pytest.mark.parametrize("point", ["network-create:stored", "network-create:kernel"])
def test_kill9_during_create_is_undone_at_restart(host, point):
    crashing = Daemon(host, env={"PYNET_CRASH_AT": point})
    try:
        crashing.start()
        with pytest.raises(Exception):
            crashing.client().network_create({"Name": "half", "IPAM": {"Config": [{"Subnet": "10.67.0.0/24"}]}})
        assert crashing.proc.wait(10) == -9
        crashing.proc = None
        after = Daemon(host, root=crashing.root)
        after.start()
        c = after.client()
        assert "half" not in [n["Name"] for n in c.networks()]
        assert not [l for l in links(host) if l.startswith("br-")]
        assert "PYNET-POSTROUTING -s 10.67.0.0/24" not in rules(host)
        # The subnet was released: it can be used again.
        c.network_create({"Name": "half", "IPAM": {"Config": [{"Subnet": "10.67.0.0/24"}]}})
        after.stop()
    finally:
        crashing.close()


def test_kill9_during_delete_is_finished_at_restart(host):
    d = Daemon(host, env={"PYNET_CRASH_AT": "network-delete:marked"})
    try:
        d.start()
        net_id = d.client().network_create({"Name": "gone", "IPAM": {"Config": [{"Subnet": "10.68.0.0/24"}]}})["Id"]
        with pytest.raises(Exception):
            d.client().network_remove("gone")
        d.proc.wait(10)
        d.proc = None
        d.env = {}
        d.start()
        assert "gone" not in [n["Name"] for n in d.client().networks()]
        assert f"br-{net_id[:12]}" not in links(host)
    finally:
        d.close()


def test_second_daemon_on_same_data_root_refuses(host, daemon):
    twin = Daemon(host, root=daemon.root)
    twin.socket = daemon.socket + "2"
    twin.url = "unix://" + twin.socket
    with pytest.raises(RuntimeError, match="already running"):
        twin.start()
