"""pynet-cni's pure parts: config -> pynetd bodies, pynetd answers -> the CNI
result, errors; and that it starts light (no json, argparse, re, aiohttp or
controller on the ADD path)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from netstack import cni

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_network_body_bridge_and_macvlan():
    body = cni.network_body({"name": "n", "subnet": "10.1.0.0/24", "gateway": "10.1.0.254", "mtu": 1400,
                             "ipMasq": False, "bridge": "cni0"}, "n")
    assert body["Driver"] == "bridge"
    assert body["IPAM"]["Config"] == [{"Subnet": "10.1.0.0/24", "Gateway": "10.1.0.254"}]
    assert body["Options"] == {"com.docker.network.bridge.name": "cni0", "com.docker.network.driver.mtu": "1400",
                               "com.docker.network.bridge.enable_ip_masquerade": "false"}
    mv = cni.network_body({"driver": "macvlan", "master": "eth0", "mode": "vepa",
                           "ipam": {"type": "pynet", "subnet": "10.2.0.0/24", "ipv6Subnet": "fd00:2::/64"}}, "m")
    assert mv["Options"] == {"parent": "eth0", "macvlan_mode": "vepa"}
    assert mv["EnableIPv6"] and [c["Subnet"] for c in mv["IPAM"]["Config"]] == ["10.2.0.0/24", "fd00:2::/64"]


@pytest.mark.parametrize("conf, code", [
    ({"ipam": {"type": "host-local"}}, 7),
    ({"driver": "ipvlan"}, 7),
    ({"options": {"a": 1}}, 7),
    ({"ipam": "x"}, 7),
])
def test_network_body_errors(conf, code):
    with pytest.raises(cni.CniError) as err:
        cni.network_body(conf, "n")
    assert err.value.code == code


def test_attachment_from_runtime_config():
    entry = cni.attachment({"runtimeConfig": {"ips": ["10.1.0.9/24", "fd00::9"], "mac": "02:00:00:00:00:09",
                                              "aliases": ["web"]}}, "n", "net1")
    assert entry == {"Network": "n", "IfName": "net1", "IPv4Address": "10.1.0.9", "IPv6Address": "fd00::9",
                     "MacAddress": "02:00:00:00:00:09", "Aliases": ["web"]}


def sandbox(gateway=True):
    return {"Networks": {"n": {
        "EndpointID": "e" * 64, "MacAddress": "02:aa:bb:cc:dd:ee", "IPAddress": "10.1.0.2", "IPPrefixLen": 24,
        "Gateway": "10.1.0.1", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPv6Gateway": "",
        "IsGateway": gateway}}, "ResolvConfPath": "/nonexistent"}


def test_result_shapes_per_version():
    net = {"Name": "n", "Id": "f" * 64, "Driver": "bridge", "Options": {}}
    r = cni.build_result({}, "1.1.0", net, sandbox(), "/run/netns/x", "eth0")
    assert r["interfaces"] == [{"name": "br-ffffffffffff"}, {"name": "pnveeeeeeeeeeee"},
                               {"name": "eth0", "mac": "02:aa:bb:cc:dd:ee", "sandbox": "/run/netns/x"}]
    assert r["ips"] == [{"address": "10.1.0.2/24", "interface": 2, "gateway": "10.1.0.1"}]
    assert r["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]
    old = cni.build_result({"dns": {"nameservers": ["9.9.9.9"]}}, "0.4.0", dict(net, Driver="macvlan"),
                           sandbox(gateway=False), "/run/netns/x", "eth0")
    assert old["ips"] == [{"address": "10.1.0.2/24", "interface": 0, "version": "4", "gateway": "10.1.0.1"}]
    assert "routes" not in old and old["dns"] == {"nameservers": ["9.9.9.9"]}


def run_main(monkeypatch, env: dict, stdin: str) -> tuple[int, dict]:
    for k in list(os.environ):
        if k.startswith("CNI_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    rc = cni.main()
    return rc, json.loads(out.getvalue())


@pytest.mark.parametrize("env, stdin, code", [
    ({"CNI_COMMAND": "ADD"}, "", 6),
    ({"CNI_COMMAND": "ADD"}, "{bad", 6),
    ({"CNI_COMMAND": "ADD"}, "[]", 6),
    ({"CNI_COMMAND": "ADD"}, '{"name": "n"}', 7),
    ({"CNI_COMMAND": "ADD"}, '{"cniVersion": "0.2.0", "name": "n"}', 1),
    ({"CNI_COMMAND": "ADD"}, '{"cniVersion": "1.1.0", "name": "n"}', 4),
    ({}, '{"cniVersion": "1.1.0", "name": "n"}', 4),
    ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"},
     '{"cniVersion": "1.1.0", "name": "n", "pynetHost": "unix:///nonexistent/sock"}', 11),
    ({"CNI_COMMAND": "CHECK", "CNI_CONTAINERID": "c", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"},
     '{"cniVersion": "1.1.0", "name": "n", "pynetHost": "unix:///nonexistent/sock"}', 7),
    ({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"},
     '{"cniVersion": "1.1.0", "name": "n", "pynetHost": "tcp://1.2.3.4:5"}', 7),
])
def test_errors_are_cni_errors(monkeypatch, env, stdin, code):
    rc, body = run_main(monkeypatch, env, stdin)
    assert rc == 1 and body["code"] == code and body["msg"]


def test_version_needs_no_config(monkeypatch):
    rc, body = run_main(monkeypatch, {"CNI_COMMAND": "VERSION"}, "")
    assert rc == 0 and body["supportedVersions"][-1] == "1.1.0"


def test_starts_light():
    code = ("import sys; sys.path.insert(0, %r); import netstack.cni; "
            "print(sorted(m for m in ('json', 'argparse', 're', 'typing', 'aiohttp', 'netstack.controller', "
            "'pyroute2', 'http.client') if m in sys.modules))" % os.path.abspath(ROOT))
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
