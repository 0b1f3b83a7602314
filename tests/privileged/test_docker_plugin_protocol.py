"""pynetd's Docker plugin protocols (remote NetworkDriver + IpamDriver), called
the way libnetwork calls them, in the order `docker network create` and
`docker run` do; and every error in each protocol's own form."""

from __future__ import annotations

import http.client
import json
import os
import socket

import pytest

from netstack.testing.hosts import Daemon, running

pytestmark = pytest.mark.privileged

NID = "a1" * 32
EID = "b2" * 32
CT = "application/vnd.docker.plugins.v1.2+json"


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("plugin", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


@pytest.fixture
def plugin(host):
    d = Daemon(host)
    d.extra_args = ["--plugin-socket", os.path.join(d.root, "plugins", "pynet.sock")]
    with running(d):
        yield d


def post(d, path: str, body: object = None, raw: bytes | None = None) -> tuple[int, dict]:
    conn = UnixHTTP(os.path.join(d.root, "plugins", "pynet.sock"))
    try:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        conn.request("POST", path, data, {"Accept": CT, "Content-Type": CT})
        resp = conn.getresponse()
        assert resp.getheader("Content-Type", "").startswith(CT)
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def ok(d, path: str, body: object = None) -> dict:
    status, out = post(d, path, body)
    assert status == 200 and not out.get("Err") and not out.get("Error"), (path, out)
    return out


def host_links(host) -> dict[str, dict]:
    return {l["ifname"]: l for l in json.loads(host.exec(["ip", "-j", "-d", "link", "show"]).stdout)}


def test_network_endpoint_lifecycle_as_libnetwork_drives_it(host, plugin):
    assert ok(plugin, "/Plugin.Activate") == {"Implements": ["NetworkDriver", "IpamDriver"]}
    assert ok(plugin, "/NetworkDriver.GetCapabilities")["Scope"] == "local"
    assert ok(plugin, "/IpamDriver.GetDefaultAddressSpaces")["LocalDefaultAddressSpace"] == "local"
    # docker network create --ipam-driver pynet (no --subnet): a pool, its gateway
    pool = ok(plugin, "/IpamDriver.RequestPool", {"AddressSpace": "local", "Pool": "", "SubPool": "", "Options": {}, "V6": False})
    gw = ok(plugin, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "",
                                                   "Options": {"RequestAddressType": "com.docker.network.gateway"}})
    ok(plugin, "/NetworkDriver.CreateNetwork", {"NetworkID": NID, "Options": {"com.docker.network.generic": {}},
                                                "IPv4Data": [{"AddressSpace": "local", "Pool": pool["Pool"], "Gateway": gw["Address"]}],
                                                "IPv6Data": []})
    c = plugin.client()
    net = c.network_inspect(f"dk-{NID[:12]}")
    assert net["IPAM"]["Config"] == [{"Subnet": pool["Pool"], "Gateway": gw["Address"].split("/")[0]}]
    assert net["Labels"] == {"com.docker.network.id": NID}
    # docker run: an address, the endpoint, join
    addr = ok(plugin, "/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "", "Options": {}})["Address"]
    out = ok(plugin, "/NetworkDriver.CreateEndpoint", {"NetworkID": NID, "EndpointID": EID, "Options": {},
                                                       "Interface": {"Address": addr, "AddressIPv6": "", "MacAddress": ""}})
    assert set(out["Interface"]) == {"MacAddress"}
    join = ok(plugin, "/NetworkDriver.Join", {"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/var/run/docker/netns/x",
                                              "Options": {}})
    assert join["InterfaceName"] == {"SrcName": f"pnd{EID[:12]}", "DstPrefix": "eth"}
    assert join["Gateway"] == gw["Address"].split("/")[0]
    links = host_links(host)
    peer = links[f"pnd{EID[:12]}"]                 # left in the host namespace for docker to move
    assert peer["address"] == out["Interface"]["MacAddress"] and peer["linkinfo"]["info_kind"] == "veth"
    assert c.network_inspect(f"dk-{NID[:12]}")["Containers"][c.sandbox_inspect(f"dk-{EID[:12]}")["Id"]]["IPv4Address"] == addr
    ok(plugin, "/NetworkDriver.ProgramExternalConnectivity", {"NetworkID": NID, "EndpointID": EID, "Options": {}})
    # and back
    ok(plugin, "/NetworkDriver.Leave", {"NetworkID": NID, "EndpointID": EID})
    ok(plugin, "/NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID})
    ok(plugin, "/NetworkDriver.DeleteEndpoint", {"NetworkID": NID, "EndpointID": EID})      # idempotent
    ok(plugin, "/IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"], "Address": addr})
    ok(plugin, "/NetworkDriver.DeleteNetwork", {"NetworkID": NID})
    ok(plugin, "/IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"], "Address": gw["Address"]})
    ok(plugin, "/IpamDriver.ReleasePool", {"PoolID": pool["PoolID"]})
    assert c.sandboxes() == []
    assert sorted(n["Name"] for n in c.networks()) == ["host", "none"]
    assert not [n for n in host_links(host) if n.startswith(("pnd", "pnv", "br-"))]
    # the pool is free again
    again = ok(plugin, "/IpamDriver.RequestPool", {"AddressSpace": "local", "Pool": pool["Pool"], "V6": False})
    assert again["Pool"] == pool["Pool"]


def test_errors_in_each_protocols_form(host, plugin):
    c = plugin.client()
    c.network_create({"Name": "mine", "IPAM": {"Config": [{"Subnet": "10.77.0.0/24"}]}})
    cases = [
        ("/NetworkDriver.CreateNetwork", {"NetworkID": NID, "Options": {"com.docker.network.generic": {"bogus": "1"}},
                                          "IPv4Data": [{"Pool": "10.78.0.0/24", "Gateway": "10.78.0.1/24"}]}, "Err", "bogus"),
        ("/NetworkDriver.CreateNetwork", {"NetworkID": NID, "IPv4Data": [{"Pool": "10.77.0.0/25", "Gateway": ""}]},
         "Err", "10.77.0.0"),
        ("/NetworkDriver.CreateEndpoint", {"NetworkID": "ff" * 32, "EndpointID": EID, "Interface": {}}, "Err", "not found"),
        ("/NetworkDriver.Join", {"NetworkID": NID, "EndpointID": "cc" * 32}, "Err", "not found"),
        ("/IpamDriver.RequestPool", {"Pool": "10.77.0.0/16"}, "Error", "10.77.0.0/24"),
        ("/IpamDriver.RequestPool", {"Pool": "10.79.0.0/33"}, "Error", "10.79.0.0/33"),
        ("/IpamDriver.RequestAddress", {"PoolID": "nosuch"}, "Error", "nosuch"),
    ]
    for path, body, key, text in cases:
        status, out = post(plugin, path, body)
        assert status == 200 and text in out.get(key, ""), (path, out)
    for path, key in (("/NetworkDriver.CreateNetwork", "Err"), ("/IpamDriver.RequestPool", "Error")):
        status, out = post(plugin, path, raw=b"{nope")
        assert status == 400 and out[key]
        status, out = post(plugin, path, raw=b"[1]")
        assert status == 400 and out[key]
    status, out = post(plugin, "/NetworkDriver.NoSuchThing", {})
    assert status == 404 and out["Err"]
    status, out = post(plugin, "/IpamDriver.NoSuchThing", {})
    assert status == 404 and out["Error"]
    assert sorted(n["Name"] for n in c.networks()) == ["host", "mine", "none"]
    assert c.sandboxes() == []
    assert "Traceback" not in plugin.log()
