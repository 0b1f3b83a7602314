"""End to end: a real pynetd started with ``--firewall nftables`` inside a
namespace host; a sandbox's published port is reachable from an external
namespace, survives a daemon restart (sync), and leaves nothing behind."""

from __future__ import annotations

import pytest

from netstack.kernel import nft
from netstack.testing.hosts import Daemon, NetnsHost, veth_between
from tests.conftest import need, need_tool
from tests.privileged.test_sandboxes import EXT_LAN, HOST_LAN, make, reply

pytestmark = pytest.mark.privileged


def test_published_port_through_pynetd_with_nftables(host: NetnsHost) -> None:
    need_tool("nsenter", "nft")
    need(nft.available(), "needs libnftables")
    ext = NetnsHost("pnx")
    try:
        veth_between(host, "lan0", f"{HOST_LAN}/24", ext, "lan0", f"{EXT_LAN}/24")
        d = Daemon(host, extra_args=["--firewall", "nftables", "--dns-upstream", f"{EXT_LAN}:53"])
        try:
            d.start()
            c = d.client()
            c.network_create({"Name": "web", "IPAM": {"Config": [{"Subnet": "10.74.0.0/24"}]}})
            w = make(c, "w", "web", ports=["8080:80/tcp"])
            assert reply(w["Key"], ext.name, "tcp", HOST_LAN, 8080, "web", listen=80) == f"web {EXT_LAN}"
            rs = host.exec(["nft", "list", "table", "ip", "pynet"]).stdout
            assert "tcp . 8080 : 10.74.0.2 . 80" in rs
            assert "PYNET" not in host.exec(["iptables-legacy-save"], check=False).stdout  # no iptables rules
            d.stop()
            d.start()  # start-up sync rebuilds the table from the store
            assert reply(w["Key"], ext.name, "tcp", HOST_LAN, 8080, "web", listen=80) == f"web {EXT_LAN}"
            c = d.client()
            c.sandbox_remove("w", force=True)
            c.network_remove("web")
            rs = host.exec(["nft", "list", "table", "ip", "pynet"]).stdout
            assert "8080" not in rs and "10.74.0" not in rs
        except BaseException:
            print(d.log())
            raise
        finally:
            d.close()
    finally:
        ext.close()
