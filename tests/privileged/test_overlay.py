"""Overlay networks end to end: the lab scenarios on three namespace hosts
with their own pynetd, joined by an underlay bridge, etcd in a namespace of
its own (real VXLAN packets between the hosts), plus bad input and the
kernel state the driver programs.  Nothing is left afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from labs import scenarios
from netstack.errors import Conflict, Unavailable
from tests.conftest import need_tool

pytestmark = pytest.mark.privileged


@pytest.fixture(scope="module")
def lab():
    from labs.netns_lab import NetnsLab

    if os.geteuid() != 0:
        pytest.skip("needs root")
    need_tool("etcd", "busybox", "bridge", "nsenter")
    lab = NetnsLab.up(3, ttl=3)
    try:
        yield lab
    except BaseException:
        for h in lab.hosts:
            print(f"--- {h.name}\n{h.log()[-4000:]}")
        raise
    finally:
        problems = lab.down()
        assert problems == [] and lab.leftovers() == []


def test_reachability_icmp_and_tcp_by_name_and_address(lab):
    scenarios.reach(lab)


def test_address_uniqueness_under_concurrent_attaches(lab):
    scenarios.concurrent(lab, per_host=6)


def test_host_killed_and_restarted(lab):
    figures = scenarios.host_restart(lab)
    assert figures["dead_host_endpoints_removed_s"] < lab.state.ttl + 4


def test_etcd_restart(lab):
    scenarios.etcd_restart(lab)


def test_vxlan_device_and_reconcile_repairs_drift(lab):
    h1, h2 = lab.hosts[0], lab.hosts[1]
    try:
        scenarios.create_network(lab, "ov-kern", "10.210.9.0/24")
        scenarios.pynet(h2, "sandbox", "create", "--name", "kk", "--network", "ov-kern")
        info = json.loads(scenarios.pynet(h1, "network", "inspect", "ov-kern").stdout)[0]
        vx = f"pox-{info['Id'][:11]}"
        link = json.loads(scenarios.run(h1.argv(["ip", "-d", "-j", "link", "show", vx])).stdout)[0]
        data = link["linkinfo"]["info_data"]
        assert data["id"] == int(info["Options"]["com.docker.network.driver.overlay.vxlanid_list"]) >= 4096
        assert data["port"] == 4789 and data["local"] == h1.addr
        assert data["learning"] is False and data["proxy"] is True
        assert link["mtu"] == 1450
        fdb = scenarios.run(h1.argv(["bridge", "fdb", "show", "dev", vx])).stdout
        entry = next(line for line in fdb.splitlines() if f"dst {h2.addr}" in line)
        mac = entry.split()[0]
        scenarios.run(h1.argv(["bridge", "fdb", "del", mac, "dev", vx, "dst", h2.addr]))
        scenarios.wait_until("reconcile restores the deleted FDB entry", lambda: f"{mac} dst {h2.addr}" in
                             scenarios.run(h1.argv(["bridge", "fdb", "show", "dev", vx])).stdout, 15, 0.2)
        # The anycast gateway, flushed by hand, and the VXLAN device set down: both put back.
        br = f"pob-{info['Id'][:11]}"
        scenarios.run(h1.argv(["ip", "addr", "flush", "dev", br, "scope", "global"]))
        scenarios.run(h1.argv(["ip", "link", "set", vx, "down"]))
        scenarios.wait_until("reconcile puts back the gateway address and the VXLAN device's up state", lambda: (
            "10.210.9.1/24" in scenarios.run(h1.argv(["ip", "-o", "addr", "show", "dev", br])).stdout
            and "UP" in json.loads(scenarios.run(h1.argv(["ip", "-j", "link", "show", vx])).stdout)[0]["flags"]),
            15, 0.2)
    finally:
        scenarios.remove(lab, "ov-kern", [(h2, "kk")])


def test_bad_input_leaves_nothing_half_made(lab):
    h1, h2 = lab.hosts[0], lab.hosts[1]

    def links(h):
        return sorted(l["ifname"] for l in json.loads(scenarios.run(h.argv(["ip", "-j", "link"])).stdout))

    scenarios.create_network(lab, "ov-bad", "10.210.8.0/24")
    try:
        vni = json.loads(scenarios.pynet(h1, "network", "inspect", "ov-bad").stdout)[0]["Options"][
            "com.docker.network.driver.overlay.vxlanid_list"]
        before = [links(h) for h in lab.hosts]
        cases = [
            (["-o", f"com.docker.network.driver.overlay.vxlanid_list={vni}", "--subnet", "10.210.7.0/24", "x"], f"VNI {vni}"),
            (["--subnet", "10.210.8.128/25", "x"], "10.210.8.0/24"),
            (["--subnet", "10.210.7.0/24", "ov-bad"], "already exists"),
            (["-o", "com.docker.network.bridge.name=x", "x"], "unknown option"),
        ]
        for args, text in cases:
            r = scenarios.pynet(h2, "network", "create", "-d", "overlay", *args, check=False)
            assert r.returncode != 0 and text in r.stderr, (args, r.stderr)
        # Local and global networks share each host's routing table (both
        # hold their gateway on a bridge there): their subnets may not overlap.
        scenarios.pynet(h2, "network", "create", "--subnet", "10.210.9.0/24", "lb")
        before = [links(h) for h in lab.hosts]
        r = scenarios.pynet(h2, "network", "create", "-d", "overlay", "--subnet", "10.210.9.0/25", "x", check=False)
        assert r.returncode != 0 and "overlaps 10.210.9.0/24 of network lb" in r.stderr, r.stderr
        r = scenarios.pynet(h2, "network", "create", "--subnet", "10.210.8.64/26", "x", check=False)
        assert r.returncode != 0 and "overlaps 10.210.8.0/24 of network ov-bad" in r.stderr, r.stderr
        time.sleep(0.3)
        assert [links(h) for h in lab.hosts] == before
        assert all("x" not in scenarios.pynet(h, "network", "ls", "--format", "{{.Name}}").stdout.split()
                   for h in lab.hosts)
        # Made on h1, where nothing clashes: every host but h2 takes it.
        scenarios.pynet(h1, "network", "create", "-d", "overlay", "--subnet", "10.210.9.0/25", "ov-clash")
        scenarios.wait_until("ov-clash on h3", lambda: scenarios.network_visible(lab.hosts[2], "ov-clash"), 5)
        assert not scenarios.network_visible(h2, "ov-clash")
        assert "not adopted: subnet 10.210.9.0/25 overlaps 10.210.9.0/24 of network lb" in h2.log()
    finally:
        scenarios.pynet(h1, "network", "rm", "ov-clash", check=False)
        scenarios.pynet(h2, "network", "rm", "lb", check=False)
        scenarios.pynet(h1, "network", "rm", "ov-bad", check=False)


ETCD_KEYS = """
import json, sys
sys.path.insert(0, %r)
from netstack.etcd import EtcdClient
kvs, _ = EtcdClient([("10.199.0.2", 2379)]).get_prefix(sys.argv[1])
print(json.dumps({k.key: k.value for k in kvs}))
"""


def etcd_keys(h, prefix: str) -> dict[str, str]:
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return json.loads(scenarios.run(h.argv([sys.executable, "-c", ETCD_KEYS % root, prefix])).stdout)


def test_a_failed_attach_undoes_its_claim_record_and_links(lab):
    """The claim + record txn is in flight while the sandbox's interface
    is made; here the overlay's veth (eth0) clashes with one made by hand:
    the attach fails and leaves no address claim, no endpoint record, no
    link; the next attach works."""
    h1, h2 = lab.hosts[0], lab.hosts[1]

    def links(h):
        return sorted(l["ifname"] for l in json.loads(scenarios.run(h.argv(["ip", "-j", "link"])).stdout))

    scenarios.create_network(lab, "ov-undo", "10.210.6.0/24")
    boxes = [(h2, "u0"), (h2, "u1")]
    try:
        net_id = json.loads(scenarios.pynet(h1, "network", "inspect", "ov-undo").stdout)[0]["Id"]
        scenarios.pynet(h2, "sandbox", "create", "--name", "u0", "--network", "ov-undo")
        scenarios.pynet(h2, "sandbox", "create", "--name", "u1")
        r = scenarios.in_sandbox(h2, "u1", ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "x1"])
        assert r.returncode == 0, r.stderr
        claims, records = etcd_keys(h2, "/pynet/ipam/10.210.6.0_24/"), etcd_keys(h2, f"/pynet/endpoints/{h2.addr}/{net_id}/")
        before = links(h2)
        r = scenarios.pynet(h2, "network", "connect", "ov-undo", "u1", check=False)
        assert r.returncode != 0 and "eth0" in r.stderr, r.stderr
        scenarios.wait_until("the failed attach's links are gone", lambda: links(h2) == before, 5)
        after = etcd_keys(h2, "/pynet/ipam/10.210.6.0_24/")
        assert {k: v for k, v in after.items() if not k.endswith("~next")} == \
            {k: v for k, v in claims.items() if not k.endswith("~next")}
        assert etcd_keys(h2, f"/pynet/endpoints/{h2.addr}/{net_id}/") == records
        scenarios.in_sandbox(h2, "u1", ["ip", "link", "del", "eth0"])
        scenarios.pynet(h2, "network", "connect", "ov-undo", "u1")
        assert len(etcd_keys(h2, f"/pynet/endpoints/{h2.addr}/{net_id}/")) == len(records) + 1
        scenarios.wait_until("u0 pings u1", lambda: scenarios.ping(h2, "u0", "u1"), 5)
    finally:
        scenarios.remove(lab, "ov-undo", boxes)


def test_a_sandbox_refused_its_overlay_address_leaves_nothing(lab):
    """A new sandbox whose first network is an overlay makes its namespace
    while the etcd txn is in flight; when etcd refuses the address (held by
    a sandbox on another host), the namespace, the sandbox and the veth go
    again, and etcd holds nothing new."""
    h1, h2 = lab.hosts[0], lab.hosts[1]

    def links(h):
        return sorted(l["ifname"] for l in json.loads(scenarios.run(h.argv(["ip", "-j", "link"])).stdout))

    def namespaces(h):
        return sorted(os.listdir(os.path.join(h.st.root, "run", "netns")))

    scenarios.create_network(lab, "ov-held", "10.210.5.0/24")
    boxes = [(h2, "held")]
    try:
        scenarios.pynet(h2, "sandbox", "create", "--name", "held", "--network", "ov-held", "--ip", "10.210.5.20")
        scenarios.pynet(h1, "sandbox", "create", "--name", "warm")   # h1's sandbox directory exists
        boxes.append((h1, "warm"))
        keys = etcd_keys(h1, "/pynet/")
        before = (links(h1), namespaces(h1))
        r = scenarios.pynet(h1, "sandbox", "create", "--name", "dup", "--network", "ov-held", "--ip", "10.210.5.20",
                            check=False)
        assert r.returncode != 0 and "10.210.5.20 is already in use" in r.stderr, r.stderr
        scenarios.wait_until("the refused sandbox's links are gone", lambda: links(h1) == before[0], 5)
        assert namespaces(h1) == before[1]
        assert "dup" not in scenarios.pynet(h1, "sandbox", "ls", "--format", "{{.Name}}").stdout.split()
        assert etcd_keys(h1, "/pynet/") == keys
        scenarios.pynet(h1, "sandbox", "create", "--name", "dup", "--network", "ov-held")   # the name is free again
        boxes.append((h1, "dup"))
        scenarios.wait_until("dup pings held", lambda: scenarios.ping(h1, "dup", "10.210.5.20"), 5)
    finally:
        scenarios.remove(lab, "ov-held", boxes)


def test_overlay_without_cluster_store_is_refused(host, daemon):
    with pytest.raises(Unavailable, match="--cluster-store"):
        daemon.client().network_create({"Name": "ov", "Driver": "overlay"})
    assert [n["Name"] for n in daemon.client().networks() if n["Name"] == "ov"] == []


def test_advertising_an_address_the_host_lacks_is_refused(host):
    from netstack.testing.hosts import Daemon

    d = Daemon(host, extra_args=["--cluster-store", "etcd://10.199.0.2:2379", "--cluster-advertise", "10.99.99.99"])
    try:
        with pytest.raises(RuntimeError, match="this host has no such address"):
            d.start(timeout=10)
    finally:
        d.close()
    assert Conflict  # the clash with another live host is covered in tests/unit/test_etcd_cluster.py


PEER_ECHO = ("import socket,sys;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
             "s.bind((sys.argv[1],{port}));s.listen();s.settimeout(20);c,a=s.accept();c.sendall(a[0].encode());c.close()")


def test_egress_ports_and_isolation_through_the_local_anycast_gateway(lab):
    """An overlay sandbox has one interface; its default route is the
    network's gateway address, held by its own host's overlay bridge (every
    host holds the same address).  Through it: traffic to another machine
    (h2's underlay address) leaves as h1's address (masqueraded); a port
    published by the sandbox answers on h1's address from h2; a sandbox on
    another overlay is unreachable, by address and by name."""
    h1, h2 = lab.hosts[0], lab.hosts[1]
    boxes = [(h1, "na1"), (h1, "na2"), (h1, "nb1")]
    try:
        scenarios.create_network(lab, "ov-na", "10.210.11.0/24")
        scenarios.create_network(lab, "ov-nb", "10.210.12.0/24")
        scenarios.pynet(h1, "sandbox", "create", "--name", "na1", "--network", "ov-na", "-p", "18080:7070")
        scenarios.pynet(h1, "sandbox", "create", "--name", "na2", "--network", "ov-na")
        scenarios.pynet(h1, "sandbox", "create", "--name", "nb1", "--network", "ov-nb")
        links = scenarios.in_sandbox(h1, "na1", ["ip", "-o", "link", "show"]).stdout
        assert [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()] == ["lo", "eth0"], links
        route = scenarios.in_sandbox(h1, "na1", ["ip", "route", "show", "default"]).stdout
        assert route.split()[:5] == ["default", "via", "10.210.11.1", "dev", "eth0"], route
        for h in (h1, h2):
            addrs = scenarios.run(h.argv(["ip", "-4", "-o", "addr", "show"])).stdout
            assert "inet 10.210.11.1/24" in addrs, f"no gateway address on {h.name}'s overlay bridge:\n{addrs}"

        # Egress: h2 sees h1's underlay address, not the sandbox's.
        port = 17070
        srv = subprocess.Popen(h2.argv(["python3", "-c", PEER_ECHO.format(port=port), h2.addr]),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            r = scenarios.in_sandbox(h1, "na1", ["python3", "-c", scenarios.TCP_CLIENT.format(port=port), h2.addr])
            assert r.returncode == 0, f"na1 -> {h2.addr}:{port} failed: {r.stderr.strip()}"
            assert r.stdout.strip() == h1.addr, f"h2 saw {r.stdout.strip()!r}, expected h1's address {h1.addr}"
        finally:
            srv.kill()
            srv.wait()

        # A published port, from another machine.
        srv = subprocess.Popen(h1.pynet_argv("sandbox", "exec", "na1", "--", "python3", "-c",
                                             scenarios.TCP_SERVER.format(port=7070), "na1"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            r = scenarios.run(h2.argv(["python3", "-c", scenarios.TCP_CLIENT.format(port=18080), h1.addr]), check=False)
            assert r.stdout.strip() == "pong from na1", f"published port 18080 on {h1.addr}: {r.stdout!r} {r.stderr!r}"
        finally:
            srv.kill()
            srv.wait()

        # Isolation: overlays are networks of their own, as bridges are.
        nb1 = scenarios.in_sandbox(h1, "nb1", ["ip", "-4", "-o", "addr", "show", "eth0"]).stdout.split()[3].split("/")[0]
        assert scenarios.ping(h1, "na1", "na2")
        assert not scenarios.ping(h1, "na1", nb1), "a sandbox reached another overlay through the gateway"
        assert scenarios._resolves(h1, "na1", "na2")
        assert not scenarios._resolves(h1, "na1", "nb1")
        assert not scenarios._resolves(h1, "nb1", "na1")
    finally:
        scenarios.remove(lab, "ov-na", boxes[:2])
        scenarios.remove(lab, "ov-nb", boxes[2:])
    nat = scenarios.run(h1.argv(["iptables-save"])).stdout
    assert "10.210.11.0/24" not in nat and "10.210.12.0/24" not in nat, f"rules of removed overlays remain:\n{nat}"
