"""pynet-cni driven the way a CNI runtime drives it: CNI_* in the
environment, the config on stdin, run in the runtime's (the test host's)
namespace, with pynetd running there; chained with the reference plugins."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

from netstack.testing.hosts import run
from tests.conftest import need

pytestmark = pytest.mark.privileged

PLUGIN = os.path.join(os.path.dirname(sys.executable), "pynet-cni")
CNI_DIR = "/usr/lib/cni"


def cni(host, command: str, conf: dict | str, *, container: str = "", netns: str = "", ifname: str = "eth0",
        plugin: str = PLUGIN, env: dict | None = None) -> tuple[int, dict | None, str]:
    """Run one plugin as a runtime does; returns (status, stdout JSON or None, stderr)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    environ.update(CNI_COMMAND=command, CNI_PATH=CNI_DIR, CNI_IFNAME=ifname)
    if container:
        environ["CNI_CONTAINERID"] = container
    if netns:
        environ["CNI_NETNS"] = netns
    environ.update(env or {})
    stdin = conf if isinstance(conf, str) else json.dumps(conf)
    out = subprocess.run(host.nsenter([plugin]), input=stdin, env=environ, capture_output=True, text=True, timeout=60)
    body = json.loads(out.stdout) if out.stdout.strip() else None
    return out.returncode, body, out.stderr


class Netns:
    """A container's namespace, made by the "runtime" before ADD."""

    def __init__(self) -> None:
        self.name = f"pncc-{secrets.token_hex(4)}"
        run(["ip", "netns", "add", self.name])
        self.path = f"/run/netns/{self.name}"
        self.container = secrets.token_hex(32)

    def exec(self, cmd: list[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.name, *cmd], check=check, timeout=timeout)

    def addrs(self, dev: str) -> list[str]:
        out = self.exec(["ip", "-j", "addr", "show", "dev", dev], check=False)
        if out.returncode:
            return []
        return [f"{a['local']}/{a['prefixlen']}" for a in json.loads(out.stdout)[0]["addr_info"] if a["scope"] == "global"]

    def close(self) -> None:
        run(["ip", "netns", "del", self.name], check=False)


@pytest.fixture
def containers():
    made: list[Netns] = []

    def make() -> Netns:
        made.append(Netns())
        return made[-1]

    try:
        yield make
    finally:
        for ns in made:
            ns.close()


def conf(daemon, name: str = "cninet", **extra) -> dict:
    return {"cniVersion": "1.1.0", "name": name, "type": "pynet-cni", "pynetHost": daemon.url,
            "subnet": "10.70.0.0/24", **extra}


def host_links(host) -> list[str]:
    return [l["ifname"] for l in json.loads(host.exec(["ip", "-j", "link", "show"]).stdout)]


def test_add_check_del(host, daemon, containers):
    ns = containers()
    c = conf(daemon, runtimeConfig={"aliases": ["web"]})
    rc, result, err = cni(host, "ADD", c, container=ns.container, netns=ns.path, ifname="net1")
    assert rc == 0, result
    assert err == ""
    assert result["cniVersion"] == "1.1.0"
    iface = result["interfaces"][-1]
    assert iface == {"name": "net1", "mac": iface["mac"], "sandbox": ns.path}
    [ip] = result["ips"]
    assert ip["interface"] == len(result["interfaces"]) - 1
    assert ip["gateway"] == "10.70.0.1" and ip["address"].startswith("10.70.0.")
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.70.0.1"}]
    assert result["dns"]["nameservers"] == ["127.0.0.11"]
    assert ns.addrs("net1") == [ip["address"]]
    mac = json.loads(ns.exec(["ip", "-j", "link", "show", "net1"]).stdout)[0]["address"]
    assert mac == iface["mac"]
    bridge, veth = result["interfaces"][0]["name"], result["interfaces"][1]["name"]
    assert bridge in host_links(host) and veth in host_links(host)
    ns.exec(["busybox", "ping", "-c", "1", "-W", "2", "10.70.0.1"])

    check = dict(c, prevResult=result)
    assert cni(host, "CHECK", check, container=ns.container, netns=ns.path, ifname="net1")[0] == 0
    wrong = json.loads(json.dumps(result))
    wrong["ips"][0]["address"] = "10.70.0.200/24"
    rc, body, _ = cni(host, "CHECK", dict(c, prevResult=wrong), container=ns.container, netns=ns.path, ifname="net1")
    assert rc == 1 and body["code"] == 100 and "10.70.0.200/24" in body["msg"]
    rc, body, _ = cni(host, "CHECK", check, container="nosuch", netns=ns.path, ifname="net1")
    assert rc == 1 and body["code"] == 3

    # A second ADD of the same attachment is an error, and changes nothing.
    rc, body, _ = cni(host, "ADD", c, container=ns.container, netns=ns.path, ifname="net1")
    assert rc == 1 and body["code"] == 100 and "already" in body["msg"]

    assert cni(host, "DEL", dict(c, prevResult=result), container=ns.container, netns=ns.path, ifname="net1")[0] == 0
    assert ns.addrs("net1") == []
    assert veth not in host_links(host)
    assert daemon.client().sandboxes() == []
    # DEL is idempotent, with or without the namespace.
    assert cni(host, "DEL", c, container=ns.container, netns=ns.path, ifname="net1")[:2] == (0, None)
    ns.close()
    assert cni(host, "DEL", c, container=ns.container, netns=ns.path, ifname="net1")[:2] == (0, None)


def test_two_containers_reach_each_other_by_address_and_name(host, daemon, containers):
    a, b = containers(), containers()
    c = conf(daemon)
    ra = cni(host, "ADD", c, container=a.container, netns=a.path)[1]
    rb = cni(host, "ADD", dict(c, runtimeConfig={"aliases": ["web-b"]}), container=b.container, netns=b.path)[1]
    ip_b = rb["ips"][0]["address"].split("/")[0]
    a.exec(["busybox", "ping", "-c", "1", "-W", "2", ip_b])
    # The embedded DNS answers in the container's namespace for the alias
    # the runtime passed (the aliases capability).
    out = a.exec(["busybox", "nslookup", "web-b", "127.0.0.11"], check=False)
    assert ip_b in out.stdout, out.stdout + out.stderr
    for ns, r in ((a, ra), (b, rb)):
        assert cni(host, "DEL", dict(c, prevResult=r), container=ns.container, netns=ns.path)[0] == 0
    assert daemon.client().sandboxes() == []


def test_gc_removes_attachments_not_listed(host, daemon, containers):
    a, b = containers(), containers()
    c = conf(daemon)
    other = conf(daemon, name="othernet", subnet="10.71.0.0/24")
    for ns in (a, b):
        assert cni(host, "ADD", c, container=ns.container, netns=ns.path)[0] == 0
    assert cni(host, "ADD", other, container=a.container, netns=a.path, ifname="eth1")[0] == 0
    gc = dict(c, **{"cni.dev/valid-attachments": [{"containerID": a.container, "ifname": "eth0"}]})
    assert cni(host, "GC", gc)[0] == 0
    names = sorted(s["Name"] for s in daemon.client().sandboxes())
    # b's attachment went; a's, and a's on the other network (not this GC's), stay.
    assert names == sorted([f"cni-{a.container}-eth0", f"cni-{a.container}-eth1"])
    assert b.addrs("eth0") == []


def test_status_version_and_errors_are_cni_errors(host, daemon, tmp_path):
    rc, body, err = cni(host, "VERSION", {"cniVersion": "1.0.0"})
    assert rc == 0 and body == {"cniVersion": "1.0.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
    assert cni(host, "STATUS", conf(daemon))[:2] == (0, None)
    netns = f"/proc/{os.getpid()}/ns/net"
    cases = [
        ("ADD", "{not json", {}, 6),
        ("ADD", conf(daemon), {"CNI_CONTAINERID": ""}, 4),
        ("ADD", dict(conf(daemon), cniVersion="9.9.9"), {}, 1),
        ("ADD", dict(conf(daemon), ipam={"type": "host-local"}), {}, 7),
        ("ADD", dict(conf(daemon), driver="ipvlan"), {}, 7),
        ("ADD", dict(conf(daemon), subnet="10.70.0.0/33"), {}, 7),
        ("ADD", dict(conf(daemon), runtimeConfig={"ips": ["10.99.0.5"]}), {}, 7),
        ("BOGUS", conf(daemon), {}, 4),
        ("ADD", dict(conf(daemon), pynetHost=f"unix://{tmp_path}/none.sock"), {}, 11),
        ("STATUS", dict(conf(daemon), pynetHost=f"unix://{tmp_path}/none.sock"), {}, 50),
    ]
    for command, config, env, code in cases:
        rc, body, err = cni(host, command, config, container="c1", netns=netns, env=env)
        assert (rc, body["code"]) == (1, code), (command, config, body)
        assert body["msg"] and "Traceback" not in err
    assert daemon.client().sandboxes() == []


def test_chain_with_reference_portmap(host, daemon, containers):
    portmap = os.path.join(CNI_DIR, "portmap")
    need(os.access(portmap, os.X_OK), f"{portmap} (containernetworking-plugins) is not installed")
    ns = containers()
    # The runtime's view: a conflist of pynet-cni then portmap.
    conflist = {"cniVersion": "1.0.0", "name": "chain", "plugins": [
        {"type": "pynet-cni", "pynetHost": daemon.url, "subnet": "10.72.0.0/24"},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ]}
    runtime_config = {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]}

    def plugin_conf(i: int, prev: dict | None) -> dict:
        p = dict(conflist["plugins"][i], cniVersion=conflist["cniVersion"], name=conflist["name"])
        if p.get("capabilities"):
            p["runtimeConfig"] = runtime_config
        if prev is not None:
            p["prevResult"] = prev
        return p

    rc, first, _ = cni(host, "ADD", plugin_conf(0, None), container=ns.container, netns=ns.path)
    assert rc == 0, first
    rc, final, err = cni(host, "ADD", plugin_conf(1, first), container=ns.container, netns=ns.path, plugin=portmap)
    assert rc == 0, (final, err)
    assert final["ips"] == first["ips"]
    ip = first["ips"][0]["address"].split("/")[0]
    nat = host.exec(["iptables-save", "-t", "nat"]).stdout
    assert "CNI-HOSTPORT-DNAT" in nat and f"--to-destination {ip}:80" in nat
    # A connection to the host port, from the host, reaches the container.
    server = subprocess.Popen(
        ["ip", "netns", "exec", ns.name, sys.executable, "-c",
         "import socket; s=socket.create_server(('0.0.0.0', 80)); c,_=s.accept(); c.sendall(b'hello from the container')"],
    )
    try:
        out = host.exec([sys.executable, "-c",
                         "import socket,time\n"
                         "for i in range(50):\n"
                         "    try:\n"
                         "        c=socket.create_connection(('10.72.0.1', 18080), timeout=2); break\n"
                         "    except ConnectionRefusedError: time.sleep(0.1)\n"
                         "print(c.recv(100).decode())"])
        assert out.stdout.strip() == "hello from the container"
    finally:
        server.kill()
        server.wait()
    # DEL in reverse order, each with the cached final result.
    for i, plugin in ((1, portmap), (0, PLUGIN)):
        rc, body, err = cni(host, "DEL", plugin_conf(i, final), container=ns.container, netns=ns.path, plugin=plugin)
        assert rc == 0, (body, err)
    nat = host.exec(["iptables-save", "-t", "nat"]).stdout
    assert f"{ip}:80" not in nat
    assert daemon.client().sandboxes() == []


def test_macvlan_network(host, daemon, containers):
    host.exec(["ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p"])
    host.exec(["ip", "link", "set", "lan0", "up"])
    host.exec(["ip", "link", "set", "lan0p", "up"])
    a, b = containers(), containers()
    c = conf(daemon, name="mvnet", driver="macvlan", master="lan0", subnet="10.73.0.0/24", gateway="10.73.0.254")
    results = []
    for ns in (a, b):
        rc, r, _ = cni(host, "ADD", c, container=ns.container, netns=ns.path)
        assert rc == 0, r
        results.append(r)
    assert [i["name"] for i in results[0]["interfaces"]] == ["eth0"]
    assert results[0]["interfaces"][0]["sandbox"] == a.path
    kind = json.loads(a.exec(["ip", "-j", "-d", "link", "show", "eth0"]).stdout)[0]["linkinfo"]["info_kind"]
    assert kind == "macvlan"
    a.exec(["busybox", "ping", "-c", "1", "-W", "2", results[1]["ips"][0]["address"].split("/")[0]])
    for ns, r in zip((a, b), results):
        assert cni(host, "DEL", dict(c, prevResult=r), container=ns.container, netns=ns.path)[0] == 0
    assert daemon.client().sandboxes() == []
