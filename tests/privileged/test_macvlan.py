"""macvlan networks in the kernel, through a real pynetd in a namespace.

The LAN is a veth pair: `lan0` in the daemon's namespace is the parent (with
the host's own address 10.77.0.1/24 on it, as a real host has), `eth0` in a
"LAN host" namespace has 10.77.0.100/24.  Sandboxes get 10.77.0.0/24
addresses from pynet and are reached with busybox ping/nc inside their
namespace (the sandbox's `Key`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from netstack.errors import Conflict, InvalidParameter, NotFound, Unavailable
from netstack.kernel import links as klinks
from netstack.testing.hosts import NetnsHost, run
from tests.conftest import need_tool

pytestmark = pytest.mark.privileged

SUBNET = "10.77.0.0/24"
LAN_HOST = "10.77.0.100"


@pytest.fixture
def lan(host):
    need_tool("busybox", "nsenter")
    lanhost = NetnsHost("pnl")
    try:
        run(["ip", "link", "add", "lan0", "netns", host.name, "type", "veth", "peer", "eth0", "netns", lanhost.name])
        host.exec(["ip", "addr", "add", "10.77.0.1/24", "dev", "lan0"])
        host.exec(["ip", "link", "set", "lan0", "up"])
        lanhost.exec(["ip", "addr", "add", f"{LAN_HOST}/24", "dev", "eth0"])
        lanhost.exec(["ip", "link", "set", "eth0", "up"])
        yield lanhost
    finally:
        lanhost.close()


def link_names(host) -> list[str]:
    return sorted(l["ifname"] for l in json.loads(host.exec(["ip", "-j", "link", "show"]).stdout))


def create(c, name: str, *, subnet: str | None = SUBNET, internal: bool = False, **opts: str) -> str:
    body: dict = {"Name": name, "Driver": "macvlan", "Options": opts, "Internal": internal}
    if subnet:
        body["IPAM"] = {"Config": [{"Subnet": subnet}]}
    return c.network_create(body)["Id"]


def sandbox(c, name: str, net: str, ip: str = "") -> dict:
    c.sandbox_create({"Name": name})
    c.network_connect(net, {"Container": name, "EndpointConfig": {"IPAMConfig": {"IPv4Address": ip}} if ip else {}})
    return c.sandbox_inspect(name)


def in_ns(key: str, cmd: list[str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return run(["nsenter", f"--net={key}", *cmd], check=False, timeout=timeout)


def ping(key: str, ip: str) -> bool:
    return in_ns(key, ["busybox", "ping", "-c", "1", "-W", "1", ip]).returncode == 0


# Listens, says "ready" once the socket accepts, then prints what one client sends.
ONE_SHOT_SERVER = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(1); print('ready', flush=True)\n"
    "s.settimeout(8); c, _ = s.accept(); c.settimeout(5); print(c.recv(100).decode(), flush=True)\n")


def tcp_ok(server_key: str, client_key: str, ip: str, port: int = 7777) -> bool:
    """A TCP connection from `client_key` to a listener in `server_key`."""
    srv = subprocess.Popen(["nsenter", f"--net={server_key}", sys.executable, "-c", ONE_SHOT_SERVER, str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        in_ns(client_key, ["busybox", "sh", "-c", f"echo hello | busybox nc -w 2 {ip} {port}"])
        out, _ = srv.communicate(timeout=10)
        return "hello" in out
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


def addr(sb: dict, net: str) -> str:
    return sb["Networks"][net]["IPAddress"]


def sb_links(key: str) -> dict:
    return {l["ifname"]: l for l in json.loads(in_ns(key, ["ip", "-d", "-j", "link", "show"]).stdout)}


def routes(key: str) -> list[str]:
    return [r["dst"] for r in json.loads(in_ns(key, ["ip", "-j", "route", "show"]).stdout)]


def test_bridge_mode_reaches_peers_and_lan_but_not_host(host, lan, daemon):
    c = daemon.client()
    host.exec(["ip", "link", "set", "lan0", "mtu", "1400"])
    create(c, "lan", parent="lan0")
    a, b = sandbox(c, "a", "lan"), sandbox(c, "b", "lan")
    ka, kb = a["Key"], b["Key"]
    eth0 = sb_links(ka)["eth0"]
    assert eth0["linkinfo"]["info_kind"] == "macvlan" and eth0["linkinfo"]["info_data"]["mode"] == "bridge"
    assert eth0["mtu"] == 1400, "MTU follows the parent"
    assert eth0["address"] == a["Networks"]["lan"]["MacAddress"]
    assert a["Networks"]["lan"]["Gateway"] == "" and "default" not in routes(ka), "no invented gateway"
    assert a["Networks"]["lan"]["LinkState"] == "up"
    assert "10.77.0.1" not in (addr(a, "lan"), addr(b, "lan")), "the parent's own address is never given out"
    assert c.network_inspect("lan")["IPAM"]["Config"][0]["AuxiliaryAddresses"] == {"pynet-parent": "10.77.0.1"}
    assert ping(ka, addr(b, "lan")) and ping(kb, addr(a, "lan"))
    assert ping(ka, LAN_HOST) and ping(lan.path, addr(b, "lan"))
    assert tcp_ok(lan.path, ka, LAN_HOST) and tcp_ok(kb, ka, addr(b, "lan"))
    # The kernel's macvlan isolation: the host's own namespace cannot reach them.
    assert not ping(host.path, addr(a, "lan"))
    assert "10.77.0" not in host.exec(["iptables-legacy-save"], check=False).stdout, "no NAT, no port rules"


def test_host_access_reaches_sandboxes_and_goes_with_the_network(host, lan, daemon):
    c = daemon.client()
    net_id = create(c, "lan", parent="lan0", host_access="true")
    aux = c.network_inspect("lan")["IPAM"]["Config"][0]["AuxiliaryAddresses"]["pynet-host"]
    hostif = f"pmh{net_id[:12]}"
    info = json.loads(host.exec(["ip", "-d", "-j", "addr", "show", "dev", hostif]).stdout)[0]
    assert info["linkinfo"]["info_kind"] == "macvlan" and info["linkinfo"]["info_data"]["mode"] == "bridge"
    assert [f"{x['local']}/{x['prefixlen']}" for x in info["addr_info"] if x["scope"] == "global"] == [f"{aux}/32"]
    a, b = sandbox(c, "a", "lan"), sandbox(c, "b", "lan")
    for sb in (a, b):
        assert addr(sb, "lan") != aux
        assert ping(host.path, addr(sb, "lan")), "host reaches its macvlan sandboxes"
        assert ping(sb["Key"], aux)
    assert tcp_ok(a["Key"], host.path, addr(a, "lan"))
    # the parent's own connected route is untouched; the /32s win
    assert "10.77.0.0/24" in host.exec(["ip", "route", "show", "dev", "lan0"]).stdout
    assert addr(a, "lan") in host.exec(["ip", "route", "show", "dev", hostif]).stdout
    c.network_disconnect("lan", {"Container": "a"})
    assert addr(a, "lan") not in host.exec(["ip", "route", "show"]).stdout
    c.network_disconnect("lan", {"Container": "b"})
    c.network_remove("lan")
    assert hostif not in link_names(host)


def test_private_mode_isolates_sandboxes_from_each_other(host, lan, daemon):
    c = daemon.client()
    create(c, "lan", parent="lan0", macvlan_mode="private")
    a, b = sandbox(c, "a", "lan"), sandbox(c, "b", "lan")
    assert sb_links(a["Key"])["eth0"]["linkinfo"]["info_data"]["mode"] == "private"
    assert not ping(a["Key"], addr(b, "lan"))
    assert ping(a["Key"], LAN_HOST) and ping(b["Key"], LAN_HOST)


def test_vepa_and_passthru_modes(host, lan, daemon):
    c = daemon.client()
    create(c, "v", parent="lan0", macvlan_mode="vepa")
    a = sandbox(c, "a", "v")
    assert sb_links(a["Key"])["eth0"]["linkinfo"]["info_data"]["mode"] == "vepa"
    assert ping(a["Key"], LAN_HOST)
    c.network_disconnect("v", {"Container": "a"})
    c.network_remove("v")
    create(c, "p", parent="lan0", macvlan_mode="passthru")
    c.network_connect("p", {"Container": "a"})
    assert ping(a["Key"], LAN_HOST)
    c.sandbox_create({"Name": "b"})
    with pytest.raises(Conflict, match="passthru"):
        c.network_connect("p", {"Container": "b"})


def test_gateway_route_only_when_given(host, lan, daemon):
    c = daemon.client()
    c.network_create({"Name": "lan", "Driver": "macvlan", "Options": {"parent": "lan0"},
                      "IPAM": {"Config": [{"Subnet": SUBNET, "Gateway": LAN_HOST}]}})
    a = sandbox(c, "a", "lan")
    assert a["Networks"]["lan"]["Gateway"] == LAN_HOST
    assert "default" in routes(a["Key"])


def test_no_parent_network_is_internal_on_a_link_of_its_own(host, daemon):
    need_tool("busybox", "nsenter")
    c = daemon.client()
    before = link_names(host)
    net_id = create(c, "iso", subnet="10.78.0.0/24")
    own = f"pmv{net_id[:12]}"
    info = json.loads(host.exec(["ip", "-d", "-j", "link", "show", own]).stdout)[0]
    assert info["linkinfo"]["info_kind"] == "veth" and "UP" in info["flags"]
    a, b = sandbox(c, "a", "iso"), sandbox(c, "b", "iso")
    assert ping(a["Key"], addr(b, "iso"))
    c.network_disconnect("iso", {"Container": "a"})
    c.network_disconnect("iso", {"Container": "b"})
    c.network_remove("iso")
    assert link_names(host) == before


def test_internal_flag_ignores_parent_and_sets_no_route(host, lan, daemon):
    c = daemon.client()
    c.network_create({"Name": "int", "Driver": "macvlan", "Internal": True, "Options": {"parent": "lan0"},
                      "IPAM": {"Config": [{"Subnet": SUBNET, "Gateway": LAN_HOST}]}})
    a = sandbox(c, "a", "int")
    assert "default" not in routes(a["Key"])
    assert not ping(a["Key"], LAN_HOST), "internal: not on the LAN"
    # the parent is free for a LAN network
    create(c, "lan", parent="lan0", subnet="10.79.0.0/24")


def test_vlan_parent_refused_without_8021q_and_leaves_nothing(host, lan, daemon):
    if klinks.vlan_supported():
        pytest.skip("this kernel has 802.1Q (8021q) support: the refusal cannot be shown here")
    c = daemon.client()
    before = link_names(host)
    with pytest.raises(Unavailable, match="8021q"):
        create(c, "v10", parent="lan0.10")
    assert link_names(host) == before
    assert [n["Name"] for n in c.networks() if n["Driver"] == "macvlan"] == []
    # the subnet went back to IPAM
    create(c, "lan", parent="lan0")


def test_vlan_parent_made_tagged_and_removed(host, lan, daemon):
    if not klinks.vlan_supported():
        pytest.skip("this kernel has no 802.1Q VLAN (8021q) support")
    pytest.importorskip("scapy")
    c = daemon.client()
    lan.exec(["ip", "link", "add", "link", "eth0", "name", "eth0.10", "type", "vlan", "id", "10"])
    lan.exec(["ip", "addr", "add", "10.80.0.100/24", "dev", "eth0.10"])
    lan.exec(["ip", "link", "set", "eth0.10", "up"])
    create(c, "v10", parent="lan0.10", subnet="10.80.0.0/24")
    assert "lan0.10" in link_names(host)
    cap = subprocess.Popen(
        ["ip", "netns", "exec", lan.name, sys.executable, "-c",
         "from scapy.all import sniff, Dot1Q; p = sniff(iface='eth0', count=1, timeout=8, "
         "started_callback=lambda: print('ready', flush=True), "
         "lfilter=lambda p: p.haslayer(Dot1Q)); print(p[0][Dot1Q].vlan if p else 'none')"],
        stdout=subprocess.PIPE, text=True)
    assert cap.stdout is not None and cap.stdout.readline().strip() == "ready"
    a = sandbox(c, "a", "v10")
    assert ping(a["Key"], "10.80.0.100")
    assert cap.communicate(timeout=15)[0].strip() == "10"
    c.network_disconnect("v10", {"Container": "a"})
    c.network_remove("v10")
    assert "lan0.10" not in link_names(host)


def test_bad_input_changes_nothing(host, lan, daemon):
    c = daemon.client()
    create(c, "lan", parent="lan0")
    before = link_names(host)
    cases = [
        ({"parent": "nosuch0"}, NotFound, "nosuch0"),
        ({"parent": "lan0"}, Conflict, "already used"),
        ({"parent": "lan0", "macvlan_mode": "weird"}, InvalidParameter, "weird"),
        ({"parent": "lan0.0"}, InvalidParameter, "out of range"),
        ({"parent": "lan0.4095"}, InvalidParameter, "out of range"),
        ({"parent": "lan0.x"}, InvalidParameter, "VLAN id"),
        ({"parent": "nosuch.10"}, NotFound, "nosuch"),
        ({"parent": "lan0", "bogus": "1"}, InvalidParameter, "bogus"),
        ({"parent": "lan0", "host_access": "maybe"}, InvalidParameter, "host_access"),
        ({"parent": "lan0", "host_access": "true", "macvlan_mode": "private"}, InvalidParameter, "bridge"),
    ]
    for opts, kind, text in cases:
        with pytest.raises(kind) as err:
            create(c, "x", subnet="10.81.0.0/24", **opts)
        assert text in str(err.value), (opts, str(err.value))
    host.exec(["ip", "link", "add", "lan1", "type", "veth", "peer", "lan1p"])
    before = link_names(host)
    # host access with no subnet to take the host's address from
    with pytest.raises(InvalidParameter, match="subnet"):
        create(c, "x", subnet=None, parent="lan1", host_access="true")
    with pytest.raises(InvalidParameter, match="IPv6"):
        c.network_create({"Name": "x", "Driver": "macvlan", "EnableIPv6": True, "Options": {"parent": "lan1"},
                          "IPAM": {"Config": [{"Subnet": "10.81.0.0/24"}]}})
    assert link_names(host) == before
    assert {n["Name"] for n in c.networks()} == {"host", "none", "lan"}
    create(c, "x", subnet="10.81.0.0/24", parent="lan1", host_access="true")


def test_parent_deleted_and_recreated_heals_without_restart(host, lan, daemon):
    c = daemon.client()
    net_id = create(c, "lan", parent="lan0", host_access="true")
    a, b = sandbox(c, "a", "lan"), sandbox(c, "b", "lan")
    ip_a, ip_b = addr(a, "lan"), addr(b, "lan")
    host.exec(["ip", "link", "set", "lan0", "down"])
    assert c.sandbox_inspect("a")["Networks"]["lan"]["LinkState"] == "down"
    host.exec(["ip", "link", "set", "lan0", "up"])
    assert c.sandbox_inspect("a")["Networks"]["lan"]["LinkState"] == "up"
    # The parent goes away: the kernel takes every macvlan on it.
    host.exec(["ip", "link", "del", "lan0"])
    assert c.sandbox_inspect("a")["Networks"]["lan"]["LinkState"] == "missing"
    assert c.network_inspect("lan")["Containers"][a["Id"]]["LinkState"] == "missing"
    c.sandbox_create({"Name": "c"})
    with pytest.raises(NotFound, match="lan0"):
        c.network_connect("lan", {"Container": "c"})
    # ... and comes back (a new veth to the same LAN host).
    run(["ip", "link", "add", "lan0", "netns", host.name, "type", "veth", "peer", "eth1", "netns", lan.name])
    host.exec(["ip", "link", "set", "lan0", "up"])
    lan.exec(["ip", "addr", "add", f"{LAN_HOST}/24", "dev", "eth1"])
    lan.exec(["ip", "link", "set", "eth1", "up"])
    c.network_connect("lan", {"Container": "c"})
    a, b, sc = (c.sandbox_inspect(n) for n in ("a", "b", "c"))
    assert (addr(a, "lan"), addr(b, "lan")) == (ip_a, ip_b), "same addresses after the repair"
    assert {s["Networks"]["lan"]["LinkState"] for s in (a, b, sc)} == {"up"}
    assert ping(a["Key"], addr(sc, "lan")) and ping(b["Key"], LAN_HOST)
    assert ping(host.path, ip_a), "host access re-made too"
    for n in ("a", "b", "c"):
        c.network_disconnect("lan", {"Container": n})
    c.network_remove("lan")
    assert f"pmh{net_id[:12]}" not in link_names(host)


def test_parent_recreated_under_the_same_name_heals_without_host_access(host, lan, daemon):
    """Without host access nothing of the network itself is missing once the
    parent is back under its old name: the new parent's ifindex is what tells
    the next connect to look for the endpoints the old one took."""
    c = daemon.client()
    create(c, "lan", parent="lan0")
    a, b = sandbox(c, "a", "lan"), sandbox(c, "b", "lan")
    ip_a = addr(a, "lan")
    sandbox(c, "warm", "lan")  # a connect with nothing to heal: endpoints found on this parent
    host.exec(["ip", "link", "del", "lan0"])
    run(["ip", "link", "add", "lan0", "netns", host.name, "type", "veth", "peer", "eth1", "netns", lan.name])
    host.exec(["ip", "link", "set", "lan0", "up"])
    lan.exec(["ip", "addr", "add", f"{LAN_HOST}/24", "dev", "eth1"])
    lan.exec(["ip", "link", "set", "eth1", "up"])
    assert c.sandbox_inspect("a")["Networks"]["lan"]["LinkState"] == "missing"
    sandbox(c, "c", "lan")
    a, b = c.sandbox_inspect("a"), c.sandbox_inspect("b")
    assert addr(a, "lan") == ip_a
    assert {s["Networks"]["lan"]["LinkState"] for s in (a, b)} == {"up"}
    assert ping(b["Key"], ip_a) and ping(a["Key"], LAN_HOST)


def test_detach_cuts_off_at_once_and_reattach_right_away(host, lan, daemon):
    """A detach removes the interface's addresses before it returns (the
    link itself is deleted in the background); a connect straight after,
    into the same sandbox under the same name, waits for that deletion."""
    c = daemon.client()
    create(c, "lan", parent="lan0")
    a = sandbox(c, "a", "lan")
    key, mac = a["Key"], a["Networks"]["lan"]["MacAddress"]
    for _ in range(3):
        c.network_disconnect("lan", {"Container": "a"})
        left = sb_links(key).get("eth0")
        assert left is None or not in_ns(key, ["ip", "-4", "addr", "show", "dev", "eth0"]).stdout.strip()
        c.network_connect("lan", {"Container": "a", "EndpointConfig": {"MacAddress": mac}})
        a = c.sandbox_inspect("a")
        assert a["Networks"]["lan"]["MacAddress"] == mac and a["Networks"]["lan"]["LinkState"] == "up"
        assert sorted(sb_links(key)) == ["eth0", "lo"]
        assert ping(key, LAN_HOST)
    c.network_disconnect("lan", {"Container": "a"})
    c.sandbox_remove("a")


def test_a_retired_link_left_by_a_crash_gives_its_name_up(host, lan, daemon):
    """pynetd killed between a detach and the background deletion leaves a
    link marked retired in the sandbox: the next join under that name
    deletes it; a link of anybody else under the name is a conflict."""
    from netstack.drivers.macvlan import RETIRED_ALIAS

    c = daemon.client()
    create(c, "lan", parent="lan0")
    for name in ("a", "b"):
        c.sandbox_create({"Name": name})
    key_a, key_b = (c.sandbox_inspect(n)["Key"] for n in ("a", "b"))
    for key in (key_a, key_b):
        in_ns(key, ["ip", "link", "add", "eth0", "type", "veth", "peer", "x0"])
    in_ns(key_a, ["ip", "link", "set", "eth0", "alias", RETIRED_ALIAS])
    c.network_connect("lan", {"Container": "a"})
    assert sb_links(key_a)["eth0"]["linkinfo"]["info_kind"] == "macvlan"
    assert ping(key_a, LAN_HOST)
    with pytest.raises(Conflict):
        c.network_connect("lan", {"Container": "b"})
    assert sb_links(key_b)["eth0"]["linkinfo"]["info_kind"] == "veth"


def test_a_retired_link_left_by_a_crash_is_removed_at_start(host, lan, daemon):
    """The same leftover in a sandbox that never joins again: start-up
    removes it (an orphan link is an invariant violation), and only it."""
    from netstack import invariants
    from netstack.drivers.macvlan import RETIRED_ALIAS

    c = daemon.client()
    create(c, "lan", parent="lan0")
    a = sandbox(c, "a", "lan")
    in_ns(a["Key"], ["ip", "link", "add", "old0", "type", "veth", "peer", "keep0"])
    in_ns(a["Key"], ["ip", "link", "set", "old0", "alias", RETIRED_ALIAS])
    assert any("retired interface old0" in v for v in invariants.check(daemon.data_root, daemon.exec_root, host.path))
    daemon.kill9()
    daemon.start()
    names = set(sb_links(a["Key"]))
    assert "old0" not in names and "keep0" not in names, "the veth pair went with its retired end"
    assert "eth0" in names and ping(a["Key"], LAN_HOST)
    assert "retired interface old0 left in sandbox a removed" in daemon.log()
    assert invariants.check(daemon.data_root, daemon.exec_root, host.path) == []
