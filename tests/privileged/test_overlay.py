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
        time.sleep(0.3)
        assert [links(h) for h in lab.hosts] == before
        assert all("x" not in scenarios.pynet(h, "network", "ls", "--format", "{{.Name}}").stdout.split()
                   for h in lab.hosts)
    finally:
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
    """The claim + record txn is in flight while the sandbox's interfaces
    are made; here the gateway bridge's interface (eth1) clashes with one
    made by hand, after the overlay's veth: the attach fails and leaves no
    address claim, no endpoint record, no link; the next attach works."""
    h1, h2 = lab.hosts[0], lab.hosts[1]

    def links(h):
        return sorted(l["ifname"] for l in json.loads(scenarios.run(h.argv(["ip", "-j", "link"])).stdout))

    scenarios.create_network(lab, "ov-undo", "10.210.6.0/24")
    boxes = [(h2, "u0"), (h2, "u1")]
    try:
        net_id = json.loads(scenarios.pynet(h1, "network", "inspect", "ov-undo").stdout)[0]["Id"]
        scenarios.pynet(h2, "sandbox", "create", "--name", "u0", "--network", "ov-undo")   # gateway bridge made
        scenarios.pynet(h2, "sandbox", "create", "--name", "u1")
        r = scenarios.in_sandbox(h2, "u1", ["ip", "link", "add", "eth1", "type", "veth", "peer", "name", "x1"])
        assert r.returncode == 0, r.stderr
        claims, records = etcd_keys(h2, "/pynet/ipam/10.210.6.0_24/"), etcd_keys(h2, f"/pynet/endpoints/{net_id}/")
        before = links(h2)
        r = scenarios.pynet(h2, "network", "connect", "ov-undo", "u1", check=False)
        assert r.returncode != 0 and "eth1" in r.stderr, r.stderr
        scenarios.wait_until("the failed attach's links are gone", lambda: links(h2) == before, 5)
        after = etcd_keys(h2, "/pynet/ipam/10.210.6.0_24/")
        assert {k: v for k, v in after.items() if not k.endswith("~next")} == \
            {k: v for k, v in claims.items() if not k.endswith("~next")}
        assert etcd_keys(h2, f"/pynet/endpoints/{net_id}/") == records
        scenarios.in_sandbox(h2, "u1", ["ip", "link", "del", "eth1"])
        scenarios.pynet(h2, "network", "connect", "ov-undo", "u1")
        assert len(etcd_keys(h2, f"/pynet/endpoints/{net_id}/")) == len(records) + 1
        scenarios.wait_until("u0 pings u1", lambda: scenarios.ping(h2, "u0", "u1"), 5)
    finally:
        scenarios.remove(lab, "ov-undo", boxes)


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


def test_names_do_not_leak_across_overlays_through_the_gateway_bridge(lab):
    """Sandboxes on two different (non-internal) overlays both have an
    endpoint on pynet_gwbridge, for egress; that endpoint gives no names
    (Docker's docker_gwbridge endpoints disable resolution), so neither
    resolves the other, while each resolves a peer on its own overlay."""
    h1 = lab.hosts[0]
    try:
        scenarios.create_network(lab, "ov-na", "10.210.11.0/24")
        scenarios.create_network(lab, "ov-nb", "10.210.12.0/24")
        for sb, net in (("na1", "ov-na"), ("na2", "ov-na"), ("nb1", "ov-nb")):
            scenarios.pynet(h1, "sandbox", "create", "--name", sb, "--network", net)
        info = json.loads(scenarios.pynet(h1, "sandbox", "inspect", "nb1").stdout)
        nets = (info[0] if isinstance(info, list) else info)["Networks"]
        assert "pynet_gwbridge" in nets
        assert scenarios._resolves(h1, "na1", "na2")
        assert not scenarios._resolves(h1, "na1", "nb1")
        assert not scenarios._resolves(h1, "nb1", "na1")
    finally:
        scenarios.remove(lab, "ov-na", [(h1, "na1"), (h1, "na2")])
        scenarios.remove(lab, "ov-nb", [(h1, "nb1")])
