"""The resolver inside a real namespace at 127.0.0.11, queried with dig."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from dnslib import DNSRecord

from netstack.dns.records import RecordTable
from netstack.dns.server import DnsServer, open_sandbox_sockets

pytestmark = pytest.mark.privileged

CI = os.environ.get("CI") == "true"


def _require() -> None:
    missing = [] if os.geteuid() == 0 else ["root"]
    missing += [tool for tool in ("ip", "dig") if shutil.which(tool) is None]
    if missing:
        if CI:
            pytest.fail(f"privileged DNS tests need {', '.join(missing)} (CI=true never skips)")
        pytest.skip(f"needs {', '.join(missing)}")


@pytest.fixture
def netns() -> Iterator[str]:
    _require()
    name = f"pynet-dns-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def dig(ns: str, port: int, *args: str) -> str:
    out = subprocess.run(["ip", "netns", "exec", ns, "dig", "@127.0.0.11", "-p", str(port),
                          "+time=2", "+tries=1", *args],
                         capture_output=True, text=True, timeout=15)
    return out.stdout


def test_dig_in_sandbox_namespace(netns: str) -> None:
    table = RecordTable()
    table.add_endpoint("n1", "front", "e1", ["web"], "10.0.0.2", None)
    table.add_endpoint("n1", "front", "e2", ["www"], "10.0.0.3", None)
    table.add_endpoint("n1", "front", "e3", ["www"], "10.0.0.4", None)
    table.add_endpoint("n2", "back", "e4", ["db"], "10.1.0.2", None)
    table.set_sandbox_networks("sb", ["n1"])
    server = DnsServer(table, upstreams=[])
    server.start()
    try:
        udp, tcp, udp_port, tcp_port = open_sandbox_sockets(f"/var/run/netns/{netns}")
        assert udp.getsockname() == ("127.0.0.11", udp_port)
        server.add_sandbox("sb", udp, tcp)
        # The sockets live in the sandbox: the host's 127.0.0.11 has nothing there.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.settimeout(0.5)
            probe.connect(("127.0.0.11", udp_port))
            probe.send(bytes(DNSRecord.question("web").pack()))
            with pytest.raises(OSError):  # refused or timed out: never answered
                probe.recv(512)
        assert dig(netns, udp_port, "+short", "WEB").split() == ["10.0.0.2"]
        assert dig(netns, udp_port, "+short", "web.front").split() == ["10.0.0.2"]
        assert sorted(dig(netns, udp_port, "+short", "www").split()) == ["10.0.0.3", "10.0.0.4"]
        assert "status: NXDOMAIN" in dig(netns, udp_port, "db")
        assert dig(netns, udp_port, "+short", "-x", "10.0.0.2").split() == ["web.front."]
        assert dig(netns, tcp_port, "+tcp", "+short", "web").split() == ["10.0.0.2"]
        firsts = {dig(netns, udp_port, "+short", "www").split()[0] for _ in range(6)}
        assert firsts == {"10.0.0.3", "10.0.0.4"}
        # A container process can still bind 0.0.0.0:53 beside the resolver.
        bind = subprocess.run(["ip", "netns", "exec", netns, "python3", "-c",
                               "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
                               "s.bind(('0.0.0.0', 53)); print('bound')"],
                              capture_output=True, text=True, timeout=10)
        assert bind.stdout.strip() == "bound", bind.stderr
    finally:
        server.stop()
