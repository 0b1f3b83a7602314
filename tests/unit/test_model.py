"""Pure logic of the core: validation, port specs, wire shapes, filters,
the store, sandbox files and the public API surface.  No root needed."""

from __future__ import annotations

import json
import os
import time

import pytest

import netstack
from netstack import ports, sandbox_files, validation
from netstack.api import filters, wire
from netstack.endpoint import Endpoint, PortBinding
from netstack.errors import BY_STATUS, Conflict, Forbidden, Internal, InvalidParameter, NotFound, Unavailable, from_status
from netstack.network import IpamConfig, Network
from netstack.requests import SubnetRequest
from netstack.sandbox import Sandbox
from netstack.store import Store


def test_public_api_is_exactly_what_all_says():
    assert sorted(netstack.__all__) == sorted(set(netstack.__all__))
    for name in netstack.__all__:
        assert getattr(netstack, name) is not None
    public = {n for n in dir(netstack) if not n.startswith("_")}
    assert public == set(netstack.__all__) - {"__version__"}


def test_error_kinds_map_to_statuses_once():
    assert {cls: cls.http_status for cls in BY_STATUS.values()} == {
        InvalidParameter: 400, Forbidden: 403, NotFound: 404, Conflict: 409, Unavailable: 503, Internal: 500,
    }
    assert isinstance(from_status(409, "x"), Conflict)
    assert isinstance(from_status(418, "x"), Internal)
    assert all(cls.exit_code == 1 for cls in BY_STATUS.values())


@pytest.mark.parametrize("name", ["a", "web-1", "my_net.v2", "X" * 128])
def test_good_names(name):
    validation.check_name(name)


@pytest.mark.parametrize("name", ["", "-x", ".x", "a b", "a/b", "é", "X" * 129])
def test_bad_names_are_named_in_the_error(name):
    with pytest.raises(InvalidParameter) as err:
        validation.check_name(name)
    assert (repr(name) in str(err.value)) or not name


@pytest.mark.parametrize("req,text", [
    (SubnetRequest(subnet="10.0.0.0/33"), "10.0.0.0/33"),
    (SubnetRequest(subnet="10.0.0.1/24"), "host bits"),
    (SubnetRequest(subnet="nope"), "nope"),
    (SubnetRequest(subnet="10.0.0.0/24", gateway="10.0.1.1"), "10.0.1.1"),
    (SubnetRequest(subnet="10.0.0.0/24", gateway="10.0.0.255"), "broadcast"),
    (SubnetRequest(subnet="10.0.0.0/24", ip_range="10.0.0.0/23"), "10.0.0.0/23"),
    (SubnetRequest(subnet="10.0.0.0/24", ip_range="fd00::/64"), "fd00::/64"),
    (SubnetRequest(subnet="10.0.0.0/24", aux_addresses=(("r", "10.9.0.1"),)), "r=10.9.0.1"),
    (SubnetRequest(gateway="10.0.0.1"), "need a --subnet"),
])
def test_subnet_requests_are_checked_before_anything(req, text):
    with pytest.raises(InvalidParameter, match=text):
        validation.check_subnet_request(req)


def test_good_subnet_request():
    validation.check_subnet_request(SubnetRequest(subnet="fd00:1::/64", gateway="fd00:1::1", ip_range="fd00:1::/80"))


@pytest.mark.parametrize("spec,want", [
    ("80", PortBinding("tcp", 80, 0)),
    ("8080:80", PortBinding("tcp", 80, 8080)),
    ("8080:80/udp", PortBinding("udp", 80, 8080)),
    ("127.0.0.1:8080:80", PortBinding("tcp", 80, 8080, "127.0.0.1")),
    ("[::1]:8080:80/sctp", PortBinding("sctp", 80, 8080, "::1")),
    ("8000-8010:80-90", PortBinding("tcp", 80, 8000, "", 90, 8010)),
    ("127.0.0.1::80", PortBinding("tcp", 80, 0, "127.0.0.1")),
])
def test_port_specs(spec, want):
    assert ports.parse(spec) == want


@pytest.mark.parametrize("spec,text", [
    ("0", "1-65535"), ("70000:80", "70000"), ("80/icmp", "icmp"), ("a:80", "'a'"),
    ("8000-8002:80-81", "differ"), ("80-90", "host port range"), ("1.2.3:8080:80", "1.2.3"),
    ("90-80:90-80", "end before start"),
])
def test_bad_port_specs(spec, text):
    with pytest.raises(InvalidParameter, match=text):
        ports.parse(spec)


def test_port_clashes_and_ephemeral_ports():
    taken = [ports.parse("8080:80"), ports.parse("127.0.0.1:9000:90"), ports.parse("7000-7010:7000-7010/udp")]
    with pytest.raises(Conflict, match="8080"):
        ports.check_clashes([ports.parse("8080:81")], taken)
    with pytest.raises(Conflict):
        ports.check_clashes([ports.parse("7005:53/udp")], taken)
    ports.check_clashes([ports.parse("8080:80/udp"), ports.parse("10.0.0.1:9000:90")], taken)
    with pytest.raises(Conflict):
        ports.check_clashes([ports.parse("9000:90")], taken)  # any-address clashes with 127.0.0.1
    with pytest.raises(Conflict):
        ports.check_clashes([ports.parse("5000:1"), ports.parse("5000:2")], [])
    lo, hi = ports.local_port_range()
    got = ports.assign_host_ports([ports.parse("80"), ports.parse("81")], taken)
    assert got[0].host_port != got[1].host_port and all(lo <= b.host_port <= hi for b in got)


def test_network_create_wire_parsing():
    req = wire.network_create({
        "Name": "n", "Driver": "", "Internal": True, "EnableIPv6": True,
        "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.1.0.0/24", "Gateway": "10.1.0.9",
                                                   "AuxiliaryAddresses": {"b": "10.1.0.2", "a": "10.1.0.3"}}]},
        "Options": {"com.docker.network.driver.mtu": "1400"}, "Labels": {"k": "v"}, "Unknown": 1,
    })
    assert req.driver == "bridge" and req.internal and req.enable_ipv6
    assert req.subnets == (SubnetRequest("10.1.0.0/24", "", "10.1.0.9", (("a", "10.1.0.3"), ("b", "10.1.0.2"))),)
    assert req.options == (("com.docker.network.driver.mtu", "1400"),)


@pytest.mark.parametrize("body,text", [
    ([], "JSON object"), ({"Name": 5}, "Name"), ({"Name": "n", "Internal": "yes"}, "Internal"),
    ({"Name": "n", "IPAM": {"Config": [5]}}, "IPAM.Config"), ({"Name": "n", "Labels": {"a": 1}}, "Labels"),
])
def test_network_create_wire_rejects_wrong_types(body, text):
    with pytest.raises(InvalidParameter, match=text):
        wire.network_create(body)


def test_sandbox_and_connect_wire():
    sc = wire.sandbox_create({"Name": "s", "Networks": ["a", {"Network": "b", "IPv4Address": "10.0.0.5", "Aliases": ["x"]}],
                              "Ports": ["80"], "Pid": 42})
    assert [a.network for a in sc.networks] == ["a", "b"]
    assert sc.networks[1].config.ipv4 == "10.0.0.5" and sc.networks[1].config.aliases == ("x",)
    assert sc.pid == 42
    with pytest.raises(InvalidParameter, match="Ports"):
        wire.sandbox_create({"Ports": [80]})
    with pytest.raises(InvalidParameter, match="Container"):
        wire.connect({"EndpointConfig": {}})
    name, cfg = wire.connect({"Container": "s", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "10.0.0.7"}, "GwPriority": 3}})
    assert (name, cfg.ipv4, cfg.gw_priority) == ("s", "10.0.0.7", 3)
    assert wire.disconnect({"Container": "s", "Force": True}) == ("s", True)


def test_network_json_has_docker_shape():
    net = Network(id="a" * 64, name="n", driver="bridge", created="2026-01-01T00:00:00.000000000Z",
                  ipv4=[IpamConfig(subnet="10.0.0.0/24", gateway="10.0.0.1", ip_range="10.0.0.0/25")],
                  labels={"k": "v"})
    ep = Endpoint(id="e" * 64, name="s", network_id=net.id, sandbox_id="s" * 64, ipv4="10.0.0.2/24", mac="02:00:00:00:00:01")
    out = wire.network(net, [ep], {})
    assert list(out) == ["Name", "Id", "Created", "Scope", "Driver", "EnableIPv4", "EnableIPv6", "IPAM", "Internal",
                         "Attachable", "Ingress", "ConfigFrom", "ConfigOnly", "Containers", "Options", "Labels"]
    assert out["IPAM"]["Config"] == [{"Subnet": "10.0.0.0/24", "IPRange": "10.0.0.0/25", "Gateway": "10.0.0.1"}]
    assert out["Containers"]["s" * 64]["IPv4Address"] == "10.0.0.2/24"
    json.dumps(out)


def test_filters_parse_both_wire_forms_and_match():
    assert filters.parse('{"name": ["a"]}') == {"name": ["a"]}
    assert filters.parse('{"name": {"a": true, "b": false}}') == {"name": ["a"]}
    with pytest.raises(InvalidParameter):
        filters.parse("{bad")
    with pytest.raises(InvalidParameter, match="'colour'"):
        filters.check({"colour": ["x"]}, filters.NETWORK_FILTERS)

    class Ctrl:
        @staticmethod
        def endpoints_of_network(_: str) -> list:
            return []

    net = Network(id="abc" + "0" * 61, name="frontend", driver="bridge", labels={"team": "a"})
    assert filters.match_network(net, {"name": ["front"], "label": ["team=a"], "type": ["custom"]}, Ctrl)
    assert not filters.match_network(net, {"label": ["team=b"]}, Ctrl)
    assert filters.match_network(net, {"dangling": ["true"], "id": ["abc"]}, Ctrl)
    with pytest.raises(InvalidParameter):
        filters.match_network(net, {"type": ["weird"]}, Ctrl)


def test_prune_filters_keep_by_label_and_age():
    old = Network(id="1" * 64, name="old", driver="bridge", labels={"keep": "1"}, created="2020-01-01T00:00:00.000000000Z")
    new = Network(id="2" * 64, name="new", driver="bridge", created=time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()))
    keep = filters.prune_keep({"until": ["1h"]})
    assert keep(new) and not keep(old)
    assert filters.prune_keep({"label!": ["keep"]})(old)
    assert filters.prune_keep({"label": ["keep=1"]})(new)


def test_store_round_trips_and_survives_reopen(tmp_path):
    store = Store(str(tmp_path))
    net = Network(id="n" * 64, name="n", driver="bridge", ipv4=[IpamConfig("10.0.0.0/24", "10.0.0.1", None, {"r": "10.0.0.9"}, "local/10.0.0.0/24")],
                  driver_state={"bridge": "br-x", "mtu": 1500})
    sb = Sandbox(id="s" * 64, name="s", key="/run/x", ports=[PortBinding("tcp", 80, 8080)])
    ep = Endpoint(id="e" * 64, name="s", network_id=net.id, sandbox_id=sb.id, ipv4="10.0.0.2/24",
                  ports=[PortBinding("udp", 53, 5353, "127.0.0.1")])
    with store.transaction() as tx:
        tx.put_network(net)
        tx.put_sandbox(sb)
        tx.put_endpoint(ep)
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.delete_network(net.id)
            raise RuntimeError("rolled back")
    store.close()
    nets, sbs, eps = Store(str(tmp_path)).load()
    assert nets == [net] and sbs == [sb] and eps == [ep]


def test_resolv_conf_for_sandboxes():
    host = "nameserver 127.0.0.53\nnameserver 10.1.1.1\nsearch corp.test\noptions edns0\n"
    embedded = sandbox_files.resolv_conf(host, embedded_dns=True)
    assert "nameserver 127.0.0.11" in embedded and "search corp.test" in embedded and "ndots:0" in embedded
    plain = sandbox_files.resolv_conf(host, embedded_dns=False)
    assert "127.0.0.53" not in plain and "nameserver 10.1.1.1" in plain
    hosts = sandbox_files.hosts_content([("10.0.0.2", ["web", "www"])])
    assert hosts.startswith("127.0.0.1\tlocalhost") and "10.0.0.2\tweb www\n" in hosts


def test_sandbox_files_are_rewritten_in_place(tmp_path):
    """A runtime bind-mounts the file: updates must land in the same inode."""
    path = tmp_path / "sb" / "hosts"
    sandbox_files.write_in_place(str(path), "10.0.0.2\tweb a-long-alias\n")
    inode = path.stat().st_ino
    sandbox_files.write_in_place(str(path), "10.0.0.3\tweb\n")
    assert path.read_text() == "10.0.0.3\tweb\n" and path.stat().st_ino == inode
    os.utime(path, (0, 0))
    sandbox_files.write_in_place(str(path), "10.0.0.3\tweb\n")
    assert path.stat().st_mtime == 0, "unchanged content is not rewritten"
    sandbox_files.write_in_place(str(path), "10.0.0.3\tweb\n10.0.0.4\tdb\n")
    assert path.read_text() == "10.0.0.3\tweb\n10.0.0.4\tdb\n"


@pytest.mark.parametrize("text", ["{bad", "[1,", '{"a":}', "", "nul", '{"a": 1} x'])
def test_client_json_decoder_rejects_garbage_with_value_error(text):
    from netstack.api.client import loads

    with pytest.raises(ValueError):
        loads(text)
