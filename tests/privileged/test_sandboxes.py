"""Containers (sandboxes) on bridge networks, with real packets: who reaches
whom, NAT, published ports, and what is left after teardown and restarts.

Topology per test: `host` runs pynetd; `external` stands for another
machine on the host's LAN (198.18.0.0/24, a benchmarking range, only ever
inside these namespaces)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from netstack.errors import Conflict, Forbidden, InvalidParameter, NotFound
from netstack.testing.hosts import Daemon, NetnsHost, running, veth_between
from tests.conftest import need_tool

pytestmark = pytest.mark.privileged

HOST_LAN, EXT_LAN = "198.18.0.1", "198.18.0.2"

SERVER = r"""
import socket, sys
proto, port = sys.argv[1], int(sys.argv[2])
if proto in ("tcp", "tcp6"):
    s = socket.create_server(("::", port), family=socket.AF_INET6) if proto == "tcp6" else socket.create_server(("0.0.0.0", port))
    print("ready", flush=True)
    s.settimeout(8)
    c, a = s.accept()
    c.sendall(("%s %s\n" % (sys.argv[3], a[0])).encode())
    c.close()
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    print("ready", flush=True)
    s.settimeout(8)
    d, a = s.recvfrom(100)
    s.sendto(("%s %s\n" % (sys.argv[3], a[0])).encode(), a)
"""

CLIENT = r"""
import socket, sys
proto, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if proto in ("tcp", "tcp6"):
        c = socket.create_connection((addr, port), timeout=2)
        print(c.recv(100).decode().strip())
    else:
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(2)
        c.sendto(b"hi", (addr, port))
        print(c.recv(100).decode().strip())
except OSError as e:
    print("FAIL", e)
    sys.exit(1)
"""


def ns_cmd(ns: str, cmd: list[str]) -> list[str]:
    """`ns` is a netns path (sandbox key) or an `ip netns` name."""
    return ["nsenter", f"--net={ns if ns.startswith('/') else '/run/netns/' + ns}", *cmd]


class Server:
    """A one-shot TCP or UDP server inside a namespace that answers with
    its tag and the address the client came from."""

    def __init__(self, ns: str, proto: str, port: int, tag: str = "hello") -> None:
        self.proc = subprocess.Popen(ns_cmd(ns, [sys.executable, "-c", SERVER, proto, str(port), tag]),
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()  # type: ignore[union-attr]


def talk(ns: str, proto: str, addr: str, port: int) -> str:
    out = subprocess.run(ns_cmd(ns, [sys.executable, "-c", CLIENT, proto, addr, str(port)]),
                         capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


def reply(ns_server: str, ns_client: str, proto: str, addr: str, port: int, tag: str = "hello",
          *, listen: int = 0) -> str:
    """Start a server on `listen` (default: `port`) in one namespace, talk
    to addr:port from another, return what came back."""
    srv = Server(ns_server, proto, listen or port, tag)
    try:
        return talk(ns_client, proto, addr, port)
    finally:
        srv.close()


def ping(ns: str, addr: str) -> bool:
    return subprocess.run(ns_cmd(ns, ["busybox", "ping", "-c", "1", "-W", "1", addr]),
                          capture_output=True).returncode == 0


@pytest.fixture
def lab(host):
    need_tool("busybox", "nsenter")
    ext = NetnsHost("pnx")
    try:
        veth_between(host, "lan0", f"{HOST_LAN}/24", ext, "lan0", f"{EXT_LAN}/24")
        with running(Daemon(host, extra_args=["--dns-upstream", f"{EXT_LAN}:53"])) as d:
            yield host, ext, d
    finally:
        ext.close()


def make(c, name: str, *nets: str, ports: list[str] | None = None, **net_opts) -> dict:
    c.sandbox_create({"Name": name, "Networks": [{"Network": n, **net_opts} for n in nets], "Ports": ports or []})
    return c.sandbox_inspect(name)


def ip_of(sb: dict, net: str) -> str:
    return sb["Networks"][net]["IPAddress"]


def pynet_rules(host) -> list[str]:
    return [l for l in host.exec(["iptables-legacy-save"]).stdout.splitlines() if "PYNET" in l]


def test_same_network_talks_other_network_does_not(lab):
    host, ext, d = lab
    c = d.client()
    c.network_create({"Name": "n1", "IPAM": {"Config": [{"Subnet": "10.70.0.0/24"}]}})
    c.network_create({"Name": "n2", "IPAM": {"Config": [{"Subnet": "10.71.0.0/24"}]}})
    a, b, o = make(c, "a", "n1"), make(c, "b", "n1"), make(c, "o", "n2")
    assert a["Networks"]["n1"]["IfName"] == "eth0"
    assert ping(b["Key"], ip_of(a, "n1"))
    assert reply(a["Key"], b["Key"], "tcp", ip_of(a, "n1"), 7000) == f"hello {ip_of(b, 'n1')}"
    assert reply(a["Key"], b["Key"], "udp", ip_of(a, "n1"), 7001) == f"hello {ip_of(b, 'n1')}"
    assert not ping(o["Key"], ip_of(a, "n1"))
    assert reply(a["Key"], o["Key"], "tcp", ip_of(a, "n1"), 7002).startswith("FAIL")


def test_outbound_nat_uses_host_address_and_internal_has_no_way_out(lab):
    host, ext, d = lab
    c = d.client()
    c.network_create({"Name": "out", "IPAM": {"Config": [{"Subnet": "10.72.0.0/24"}]}})
    c.network_create({"Name": "sealed", "Internal": True, "IPAM": {"Config": [{"Subnet": "10.73.0.0/24"}]}})
    a = make(c, "a", "out")
    s = make(c, "s", "sealed")
    assert reply(ext.name, a["Key"], "tcp", EXT_LAN, 7010) == f"hello {HOST_LAN}"
    assert reply(ext.name, s["Key"], "tcp", EXT_LAN, 7011).startswith("FAIL")
    # Even a hand-made route through the bridge's address gets nowhere.
    gw = c.network_inspect("sealed")["IPAM"]["Config"][0]["Gateway"]
    subprocess.run(ns_cmd(s["Key"], ["ip", "route", "add", "default", "via", gw]), check=True)
    assert not ping(s["Key"], EXT_LAN)


def test_dual_stack_sandboxes_talk_over_ipv6_and_resolve_aaaa(lab):
    host, ext, d = lab
    need_tool("dig")
    c = d.client()
    for name, n in (("v6a", 74), ("v6b", 75)):
        c.network_create({"Name": name, "EnableIPv6": True, "IPAM": {"Config": [
            {"Subnet": f"10.{n}.0.0/24"}, {"Subnet": f"fd00:{n}::/64"}]}})
    a, b, o = make(c, "a", "v6a"), make(c, "b", "v6a"), make(c, "o", "v6b")
    a6, b6 = (sb["Networks"]["v6a"]["GlobalIPv6Address"] for sb in (a, b))
    assert a6.startswith("fd00:74::") and b6.startswith("fd00:74::") and a6 != b6
    assert b["Networks"]["v6a"]["IPv6Gateway"] == "fd00:74::1"
    routes = subprocess.run(ns_cmd(b["Key"], ["ip", "-6", "route", "show", "default"]), capture_output=True, text=True).stdout
    assert "via fd00:74::1" in routes
    assert subprocess.run(ns_cmd(b["Key"], ["busybox", "ping", "-6", "-c", "1", "-W", "2", a6]),
                          capture_output=True).returncode == 0
    assert reply(a["Key"], b["Key"], "tcp6", a6, 7100) == f"hello {b6}"
    assert reply(a["Key"], o["Key"], "tcp6", a6, 7101).startswith("FAIL"), "no IPv6 path between networks"
    aaaa = subprocess.run(ns_cmd(b["Key"], ["dig", "@127.0.0.11", "+short", "+tries=1", "+time=2", "-t", "AAAA", "-q", "a"]),
                          capture_output=True, text=True).stdout.split()
    assert aaaa == [a6]


def test_published_ports_from_outside_localhost_and_hairpin(lab):
    host, ext, d = lab
    c = d.client()
    c.network_create({"Name": "web", "IPAM": {"Config": [{"Subnet": "10.74.0.0/24"}]}})
    w = make(c, "w", "web", ports=["8080:80/tcp", "5353:53/udp", "127.0.0.1:9090:90", "91"])
    peer = make(c, "peer", "web")
    assert w["Ports"]["80/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": "8080"}]
    ephemeral = int(w["Ports"]["91/tcp"][0]["HostPort"])
    assert ephemeral >= 1024
    assert reply(w["Key"], ext.name, "tcp", HOST_LAN, 8080, "web", listen=80) == f"web {EXT_LAN}"
    assert reply(w["Key"], ext.name, "udp", HOST_LAN, 5353, "dns", listen=53).startswith("dns ")
    assert reply(w["Key"], host.name, "tcp", "127.0.0.1", 8080, "web", listen=80).startswith("web ")
    assert reply(w["Key"], host.name, "tcp", HOST_LAN, 8080, "web", listen=80).startswith("web ")
    assert reply(w["Key"], host.name, "tcp", "127.0.0.1", 9090, "lo", listen=90).startswith("lo ")
    assert reply(w["Key"], ext.name, "tcp", HOST_LAN, 9090, "lo", listen=90).startswith("FAIL")  # bound to 127.0.0.1 only
    assert reply(w["Key"], host.name, "tcp", "127.0.0.1", ephemeral, "eph", listen=91).startswith("eph ")
    assert reply(w["Key"], w["Key"], "tcp", HOST_LAN, 8080, "self", listen=80).startswith("self ")      # hairpin
    assert reply(w["Key"], peer["Key"], "tcp", HOST_LAN, 8080, "nb", listen=80).startswith("nb ")
    # A second sandbox cannot take the same host port.
    with pytest.raises(Conflict, match="8080"):
        make(c, "clash", "web", ports=["8080:81"])
    c.sandbox_remove("w", force=True)
    assert reply(peer["Key"], ext.name, "tcp", HOST_LAN, 8080, listen=80).startswith("FAIL")
    assert not [r for r in pynet_rules(host) if "8080" in r or "10.74.0.2" in r]


def test_teardown_leaves_nothing(lab):
    host, ext, d = lab
    c = d.client()
    before = pynet_rules(host)
    c.network_create({"Name": "tmp", "IPAM": {"Config": [{"Subnet": "10.75.0.0/24"}]}})
    a = make(c, "a", "tmp", ports=["8081:80"])
    make(c, "b", "tmp")
    c.network_disconnect("tmp", {"Container": "b"})
    c.sandbox_remove("a", force=True)
    c.sandbox_remove("b")
    c.network_remove("tmp")
    links = [l["ifname"] for l in json.loads(host.exec(["ip", "-j", "link"]).stdout)]
    assert not [l for l in links if l.startswith(("pnv", "br-"))]
    assert pynet_rules(host) == before
    assert c.sandboxes() == []


def test_restart_keeps_connectivity_and_ports(lab):
    host, ext, d = lab
    c = d.client()
    c.network_create({"Name": "keep", "IPAM": {"Config": [{"Subnet": "10.76.0.0/24"}]}})
    a, b = make(c, "a", "keep", ports=["8082:80"]), make(c, "b", "keep")
    rules = sorted(pynet_rules(host))
    d.stop()
    d.start()
    c = d.client()
    assert sorted(pynet_rules(host)) == rules
    assert ping(b["Key"], ip_of(a, "keep"))
    assert reply(a["Key"], ext.name, "tcp", HOST_LAN, 8082, listen=80).startswith("hello")
    assert c.sandbox_inspect("a")["Networks"]["keep"]["IPAddress"] == ip_of(a, "keep")
    # An address handed out before the restart is not handed out again.
    c2 = make(c, "c", "keep")
    assert ip_of(c2, "keep") not in (ip_of(a, "keep"), ip_of(b, "keep"))


def test_kill9_mid_connect_is_cleaned_at_restart(host):
    d = Daemon(host, env={"PYNET_CRASH_AT": "connect:joined"})
    try:
        d.start()
        c = d.client()
        c.network_create({"Name": "k", "IPAM": {"Config": [{"Subnet": "10.77.0.0/24"}]}})
        with pytest.raises(Exception):
            c.sandbox_create({"Name": "half", "Networks": [{"Network": "k"}]})
        d.proc.wait(10)
        d.proc = None
        d.env = {}
        d.start()
        c = d.client()
        assert c.sandboxes() == []
        links = [l["ifname"] for l in json.loads(host.exec(["ip", "-j", "link"]).stdout)]
        assert not [l for l in links if l.startswith("pnv")]
        ok = make(c, "ok", "k")
        assert ip_of(ok, "k") == "10.77.0.2"   # the half-made endpoint's address was released
    finally:
        d.close()


def test_two_networks_gateway_and_default_route(lab):
    host, ext, d = lab
    c = d.client()
    c.network_create({"Name": "zeta", "IPAM": {"Config": [{"Subnet": "10.78.0.0/24"}]}})
    c.network_create({"Name": "alpha", "IPAM": {"Config": [{"Subnet": "10.79.0.0/24"}]}})
    sb = make(c, "m", "zeta")
    c.network_connect("alpha", {"Container": "m"})
    sb = c.sandbox_inspect("m")
    assert sb["Networks"]["alpha"]["IfName"] == "eth1"
    route = subprocess.run(ns_cmd(sb["Key"], ["ip", "-j", "route", "show", "default"]), capture_output=True, text=True).stdout
    assert json.loads(route)[0]["gateway"] == "10.79.0.1"           # by name: alpha before zeta
    c.network_disconnect("alpha", {"Container": "m"})
    route = subprocess.run(ns_cmd(sb["Key"], ["ip", "-j", "route", "show", "default"]), capture_output=True, text=True).stdout
    assert json.loads(route)[0]["gateway"] == "10.78.0.1"
    c.network_connect("alpha", {"Container": "m", "EndpointConfig": {"GwPriority": -1}})
    route = subprocess.run(ns_cmd(sb["Key"], ["ip", "-j", "route", "show", "default"]), capture_output=True, text=True).stdout
    assert json.loads(route)[0]["gateway"] == "10.78.0.1"


def test_bad_input_leaves_nothing_half_made(lab):
    host, ext, d = lab
    c = d.client()
    c.network_create({"Name": "v", "IPAM": {"Config": [{"Subnet": "10.80.0.0/24"}]}})
    make(c, "a", "v", IPv4Address="10.80.0.50")
    links_before = sorted(l["ifname"] for l in json.loads(host.exec(["ip", "-j", "link"]).stdout))
    rules_before = pynet_rules(host)
    cases = [
        (lambda: c.network_connect("nosuch", {"Container": "a"}), NotFound, "nosuch"),
        (lambda: c.network_connect("v", {"Container": "ghost"}), NotFound, "ghost"),
        (lambda: c.network_connect("v", {"Container": "a"}), Forbidden, "already exists"),
        (lambda: make(c, "b", "v", IPv4Address="10.80.0.50"), Conflict, "10.80.0.50"),
        (lambda: make(c, "b", "v", IPv4Address="10.99.0.5"), InvalidParameter, "10.99.0.5"),
        (lambda: make(c, "b", "v", IPv4Address="not-an-ip"), InvalidParameter, "not-an-ip"),
        (lambda: make(c, "b", "v", ports=["80:99999"]), InvalidParameter, "99999"),
        (lambda: make(c, "b", "v", ports=["8000-8002:80-81"]), InvalidParameter, "differ"),
        (lambda: make(c, "b", "v", ports=["80/icmp"]), InvalidParameter, "icmp"),
        (lambda: make(c, "a", "v"), Conflict, "already in use"),
        (lambda: c.network_remove("v"), Forbidden, "active endpoints"),
        (lambda: c.sandbox_create({"Name": "b", "Key": "/tmp"}), InvalidParameter, "/tmp"),
        (lambda: c.sandbox_create({"Name": "b", "Key": "/run/netns/no-such-ns"}), InvalidParameter, "no-such-ns"),
        (lambda: c.network_connect("host", {"Container": "a"}), Forbidden, "host network"),
        (lambda: c.sandbox_create({"Name": "b", "Networks": ["none", "v"]}), Forbidden, "none network"),
        (lambda: c.sandbox_create({"Name": "b", "Pid": 999999}), NotFound, "999999"),
        # pynetd's own namespace (here the test's host): its eth0 and default route would be the host's
        (lambda: c.sandbox_create({"Name": "b", "Pid": d.proc.pid, "Networks": ["v"]}), InvalidParameter,
         "own network namespace"),
        (lambda: c.sandbox_create({"Name": "b", "Key": host.path, "Networks": ["v"]}), InvalidParameter,
         "own network namespace"),
    ]
    for call, kind, text in cases:
        with pytest.raises(kind) as err:
            call()
        assert text in str(err.value), str(err.value)
    assert sorted(l["ifname"] for l in json.loads(host.exec(["ip", "-j", "link"]).stdout)) == links_before
    assert pynet_rules(host) == rules_before
    assert [s["Name"] for s in c.sandboxes()] == ["a"]


def test_runc_container_attached_by_pid_reaches_a_sandbox(lab, tmp_path):
    need_tool("runc", "busybox")
    host, ext, d = lab
    c = d.client()
    c.network_create({"Name": "rt", "IPAM": {"Config": [{"Subnet": "10.81.0.0/24"}]}})
    target = make(c, "target", "rt")
    bundle = tmp_path / "bundle"
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy(shutil.which("busybox"), rootfs / "bin" / "busybox")
    for tool in ("sh", "sleep", "ping", "nc"):
        (rootfs / "bin" / tool).symlink_to("busybox")
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/sleep", "30"]
    config["root"]["readonly"] = False
    for kind in ("bounding", "effective", "permitted"):
        config["process"]["capabilities"][kind].append("CAP_NET_RAW")   # for ping
    (bundle / "config.json").write_text(json.dumps(config))
    cid = f"pynet-test-{int(time.time() * 1000) % 100000}"
    runc = host.nsenter(["runc", "--root", str(tmp_path / "runc-state")])
    # Detached: the container keeps runc's stdio, so give it nothing to hold open.
    subprocess.run([*runc, "run", "-d", "--bundle", str(bundle), cid], check=True, timeout=30,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        state = json.loads(subprocess.run([*runc, "state", cid], capture_output=True, text=True, check=True).stdout)
        c.sandbox_create({"Name": "ctr", "Pid": state["pid"], "Networks": [{"Network": "rt"}]})
        got = subprocess.run([*runc, "exec", cid, "/bin/ping", "-c", "1", "-W", "2", ip_of(target, "rt")],
                             capture_output=True, text=True, timeout=20)
        assert got.returncode == 0, got.stdout + got.stderr
        c.sandbox_remove("ctr", force=True)
        got = subprocess.run([*runc, "exec", cid, "/bin/ping", "-c", "1", "-W", "1", ip_of(target, "rt")],
                             capture_output=True, text=True, timeout=20)
        assert got.returncode != 0
    finally:
        subprocess.run([*runc, "delete", "-f", cid], capture_output=True, timeout=30)


def test_same_namespace_rejoins_at_once_after_removal(lab):
    """A sandbox removed returns before its veth is deleted (that is done in
    the background); a new sandbox on the same process's namespace, made at
    once under another path (a new bind mount), must still get eth0 rather
    than collide with the dying one, and reach the network."""
    host, ext, d = lab
    c = d.client()
    c.network_create({"Name": "re", "IPAM": {"Config": [{"Subnet": "10.74.0.0/24"}]}})
    peer = make(c, "peer", "re")
    proc = subprocess.Popen(host.nsenter(["unshare", "--net", "sleep", "60"]))
    try:
        deadline = time.monotonic() + 10
        while not os.readlink(f"/proc/{proc.pid}/exe").endswith("sleep") and time.monotonic() < deadline:
            time.sleep(0.01)
        for round_ in range(5):
            c.sandbox_create({"Name": f"r{round_}", "Networks": ["re"], "Pid": proc.pid})
            sb = c.sandbox_inspect(f"r{round_}")
            assert sb["Networks"]["re"]["IfName"] == "eth0"
            assert ping(f"/proc/{proc.pid}/ns/net", ip_of(peer, "re"))
            c.sandbox_remove(f"r{round_}", force=True)
    finally:
        proc.kill()
        proc.wait()


def ipv6_addresses(key: str, ifname: str) -> list[str]:
    out = subprocess.run(ns_cmd(key, ["ip", "-j", "-6", "addr", "show", "dev", ifname]),
                         capture_output=True, text=True, check=True).stdout
    return sorted(a["local"] for link in json.loads(out) for a in link.get("addr_info", []))


def test_ipv4_only_network_gives_the_interface_no_ipv6_chatter(lab):
    """On a network without IPv6 the container's interface gets no IPv6
    link-local address (so it sends no DAD probes or router solicitations,
    which the bridge would flood to every member), as Docker up to 25 had
    it; IPv6 itself stays on, so an address added by hand works.  On a
    dual-stack network the interface has its link-local and its global
    address."""
    host, ext, d = lab
    c = d.client()
    c.network_create({"Name": "v4", "IPAM": {"Config": [{"Subnet": "10.73.0.0/24"}]}})
    c.network_create({"Name": "v46", "EnableIPv6": True, "IPAM": {"Config": [
        {"Subnet": "10.72.0.0/24"}, {"Subnet": "fd00:72::/64"}]}})
    a, b = make(c, "a", "v4"), make(c, "b", "v4")
    dual = make(c, "dual", "v46")
    time.sleep(0.3)  # a link-local address would be there by now (tentative or not)
    assert ipv6_addresses(a["Key"], "eth0") == []
    got = ipv6_addresses(dual["Key"], "eth0")
    assert dual["Networks"]["v46"]["GlobalIPv6Address"] in got
    assert any(x.startswith("fe80:") for x in got)
    assert ping(b["Key"], ip_of(a, "v4"))
    for key, addr in ((a["Key"], "fd00:99::1/64"), (b["Key"], "fd00:99::2/64")):
        subprocess.run(ns_cmd(key, ["ip", "addr", "add", addr, "dev", "eth0", "nodad"]), check=True)
    assert subprocess.run(ns_cmd(b["Key"], ["busybox", "ping", "-6", "-c", "1", "-W", "2", "fd00:99::1"]),
                          capture_output=True).returncode == 0


def test_gateway_mac_stays_as_members_join_and_ports_have_no_ipv6(lab):
    """The bridge has a MAC of its own (a bridge left to itself takes the
    lowest of its ports' and changes it when a port with a lower one joins:
    containers' ARP entries for the gateway then point nowhere).  Its
    ports, the host ends of the veths, carry no IPv6 address."""
    host, ext, d = lab
    c = d.client()
    net = c.network_create({"Name": "mac", "IPAM": {"Config": [{"Subnet": "10.71.0.0/24"}]}})
    bridge = f"br-{net['Id'][:12]}"

    def link(name: str) -> dict:
        return json.loads(host.exec(["ip", "-j", "-d", "addr", "show", "dev", name]).stdout)[0]

    mac = link(bridge)["address"]
    assert mac != "00:00:00:00:00:00"
    sbs = [make(c, f"m{i}", "mac") for i in range(6)]
    time.sleep(0.3)
    assert link(bridge)["address"] == mac
    ports = [l["ifname"] for l in json.loads(host.exec(["ip", "-j", "link", "show", "master", bridge]).stdout)]
    assert len(ports) == 6
    assert all(a["family"] != "inet6" for p in ports for a in link(p).get("addr_info", []))
    neigh = subprocess.run(ns_cmd(sbs[0]["Key"], ["ip", "-j", "neigh"]), capture_output=True, text=True).stdout
    assert ping(sbs[0]["Key"], ip_of(sbs[-1], "mac"))
    assert ping(sbs[0]["Key"], "10.71.0.1")
    gw = [n for n in json.loads(subprocess.run(ns_cmd(sbs[0]["Key"], ["ip", "-j", "neigh"]),
                                               capture_output=True, text=True).stdout) if n["dst"] == "10.71.0.1"]
    assert gw and gw[0]["lladdr"] == mac, neigh
