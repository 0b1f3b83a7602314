"""The embedded DNS as a container sees it: `dig` inside sandboxes made by a
real pynetd, against 127.0.0.11:53, with an upstream resolver (dnsmasq) in
a namespace of the test's own standing for the host's resolver."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from netstack.testing.hosts import Daemon, NetnsHost, veth_between
from tests.conftest import need_tool

pytestmark = pytest.mark.privileged

UPSTREAM = "198.18.1.2"


@pytest.fixture
def dns_lab(host, tmp_path):
    need_tool("dig", "dnsmasq", "busybox")
    up = NetnsHost("pnu")
    dnsmasq = None
    d = None
    try:
        veth_between(host, "up0", "198.18.1.1/24", up, "up0", f"{UPSTREAM}/24")
        dnsmasq = subprocess.Popen(up.nsenter([
            "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--port=53", f"--listen-address={UPSTREAM}",
            "--bind-interfaces", "--address=/outside.test/198.18.7.7", f"--pid-file={tmp_path}/dnsmasq.pid",
        ]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        resolv = tmp_path / "resolv.conf"
        resolv.write_text(f"nameserver {UPSTREAM}\nsearch corp.test\noptions attempts:2\n")
        d = Daemon(host, extra_args=["--resolv-conf", str(resolv)])
        d.start()
        yield d
    except BaseException:
        if d is not None:
            print(d.log())
        raise
    finally:
        if d is not None:
            d.close()
        if dnsmasq is not None:
            dnsmasq.kill()
            dnsmasq.wait()
        up.close()


def dig(key: str, *args: str, server: str = "127.0.0.11") -> list[str]:
    """dig inside a namespace, always naming its server: the machine's own
    /etc/resolv.conf must never be used from a test namespace."""
    out = subprocess.run(["nsenter", f"--net={key}", "dig", f"@{server}", "+short", "+time=2", "+tries=1", *args],
                         capture_output=True, text=True, timeout=15)
    return [l for l in out.stdout.splitlines() if l and not l.startswith(";")]


def status(key: str, *args: str, server: str = "127.0.0.11") -> str:
    out = subprocess.run(["nsenter", f"--net={key}", "dig", f"@{server}", "+time=2", "+tries=1", *args],
                         capture_output=True, text=True, timeout=15).stdout
    return out.split("status: ")[1].split(",")[0] if "status: " in out else "no answer"


def test_names_aliases_round_robin_ptr_and_scoping(dns_lab):
    c = dns_lab.client()
    c.network_create({"Name": "front", "IPAM": {"Config": [{"Subnet": "10.82.0.0/24"}]}})
    c.network_create({"Name": "back", "IPAM": {"Config": [{"Subnet": "10.83.0.0/24"}]}})
    for name in ("web1", "web2"):
        c.sandbox_create({"Name": name, "Networks": [{"Network": "front", "Aliases": ["web"]}]})
    c.sandbox_create({"Name": "cli", "Hostname": "clihost", "Networks": [{"Network": "front"}]})
    c.sandbox_create({"Name": "db", "Networks": [{"Network": "back", "Aliases": ["database"]}]})
    cli = c.sandbox_inspect("cli")
    key = cli["Key"]
    ips = {n: c.sandbox_inspect(n)["Networks"]["front"]["IPAddress"] for n in ("web1", "web2")}
    resolv = Path(cli["ResolvConfPath"]).read_text()
    assert "nameserver 127.0.0.11" in resolv and "search corp.test" in resolv and "attempts:2" in resolv
    assert dig(key, "web1") == [ips["web1"]]
    assert dig(key, "WEB2") == [ips["web2"]]                     # case-insensitive
    assert dig(key, "web1.front") == [ips["web1"]]
    assert dig(key, "clihost") == [cli["Networks"]["front"]["IPAddress"]]
    first = dig(key, "web")
    assert sorted(first) == sorted(ips.values())
    assert dig(key, "web") != first or dig(key, "web") != first  # rotated per query
    assert dig(key, "-x", ips["web2"]) == ["web2.front."]
    assert dig(key, "+tcp", "web1") == [ips["web1"]]
    # Names of a network the sandbox does not share do not exist for it.
    assert status(key, "db") == "NXDOMAIN"
    assert status(key, "database") == "NXDOMAIN"
    assert dig(key, "db.back") == []     # forwarded: the upstream does not know it either
    db = c.sandbox_inspect("db")["Key"]
    assert dig(db, "database") == [c.sandbox_inspect("db")["Networks"]["back"]["IPAddress"]]
    # Other names go to the host's upstream, reached from the host namespace.
    assert dig(key, "www.outside.test") == ["198.18.7.7"]


def test_records_follow_connect_and_disconnect_and_survive_restart(dns_lab):
    c = dns_lab.client()
    c.network_create({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.84.0.0/24"}]}})
    c.sandbox_create({"Name": "a", "Networks": [{"Network": "n"}]})
    c.sandbox_create({"Name": "b"})
    c.network_connect("n", {"Container": "b", "EndpointConfig": {"Aliases": ["bee"]}})
    a = c.sandbox_inspect("a")["Key"]
    assert dig(a, "bee") == ["10.84.0.3"]
    c.network_disconnect("n", {"Container": "b"})
    assert status(a, "bee") == "NXDOMAIN"
    c.network_connect("n", {"Container": "b", "EndpointConfig": {"Aliases": ["bee"]}})
    dns_lab.stop()
    dns_lab.start()
    assert dig(a, "bee") == [dns_lab.client().sandbox_inspect("b")["Networks"]["n"]["IPAddress"]]


def test_internal_network_does_not_forward(dns_lab):
    c = dns_lab.client()
    c.network_create({"Name": "sealed", "Internal": True, "IPAM": {"Config": [{"Subnet": "10.85.0.0/24"}]}})
    c.sandbox_create({"Name": "s1", "Networks": [{"Network": "sealed"}]})
    c.sandbox_create({"Name": "s2", "Networks": [{"Network": "sealed"}]})
    key = c.sandbox_inspect("s1")["Key"]
    assert dig(key, "s2") == [c.sandbox_inspect("s2")["Networks"]["sealed"]["IPAddress"]]
    assert status(key, "www.outside.test") in ("NXDOMAIN", "REFUSED", "SERVFAIL")
    assert dig(key, "www.outside.test") == []


def test_a_container_process_can_bind_port_53_beside_the_resolver(dns_lab):
    c = dns_lab.client()
    c.network_create({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.86.0.0/24"}]}})
    c.sandbox_create({"Name": "own", "Networks": [{"Network": "n"}]})
    key = c.sandbox_inspect("own")["Key"]
    bind = ("import socket;u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);u.bind(('0.0.0.0',53));"
            "t=socket.socket();t.bind(('0.0.0.0',53));t.listen();print('bound')")
    out = subprocess.run(["nsenter", f"--net={key}", "python3", "-c", bind], capture_output=True, text=True, timeout=10)
    assert out.stdout.strip() == "bound", out.stderr
    assert dig(key, "own") == [c.sandbox_inspect("own")["Networks"]["n"]["IPAddress"]]


def test_resolver_is_not_open_to_other_namespaces(dns_lab):
    c = dns_lab.client()
    c.network_create({"Name": "n", "IPAM": {"Config": [{"Subnet": "10.87.0.0/24"}]}})
    c.sandbox_create({"Name": "x", "Networks": [{"Network": "n"}]})
    # From the host namespace, and to the sandbox's own address, nothing answers.
    assert status(dns_lab.host.path, "x") == "no answer"
    assert status(dns_lab.host.path, "x", server="10.87.0.2") == "no answer"
