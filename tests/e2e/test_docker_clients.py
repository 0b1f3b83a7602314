"""Clients nobody here wrote, pointed at pynetd's socket: the stock docker
CLI and docker-py.  What they print and parse must agree with pynet's own
CLI and API."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import need_tool

pytestmark = pytest.mark.e2e

PYNET = os.path.join(os.path.dirname(sys.executable), "pynet")


def docker(d, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_HOST": d.url, "DOCKER_CONFIG": os.path.join(d.root, "docker-config")}
    return subprocess.run(["docker", *args], capture_output=True, text=True, env=env, timeout=30, check=check)


def pynet(d, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = PYNET if os.path.exists(PYNET) else "pynet"
    return subprocess.run([exe, "-H", d.url, *args], capture_output=True, text=True, timeout=30, check=check)


def test_docker_cli_create_ls_inspect_rm_prune(daemon):
    need_tool("docker")
    d = daemon
    net_id = docker(d, "network", "create", "--subnet", "10.90.0.0/24", "--gateway", "10.90.0.254",
                    "--ip-range", "10.90.0.128/25", "--aux-address", "r=10.90.0.200", "--label", "team=a",
                    "-o", "com.docker.network.driver.mtu=1450", "front").stdout.strip()
    assert len(net_id) == 64
    docker(d, "network", "create", "--internal", "back")
    ls = docker(d, "network", "ls").stdout.splitlines()
    assert ls[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert [l.split()[1] for l in ls[1:]] == ["back", "front", "host", "none"]
    assert docker(d, "network", "ls", "-q", "--filter", "name=front").stdout.strip() == net_id[:12]
    assert docker(d, "network", "ls", "--filter", "label=team=a", "--format", "{{.Name}}").stdout.split() == ["front"]
    assert docker(d, "network", "ls", "--filter", "type=builtin", "--format", "{{.Name}}").stdout.split() == ["host", "none"]
    docker_view = json.loads(docker(d, "network", "inspect", "front").stdout)[0]
    pynet_view = json.loads(pynet(d, "network", "inspect", "front").stdout)[0]
    assert docker_view == pynet_view
    assert docker_view["IPAM"]["Config"] == [{"Subnet": "10.90.0.0/24", "IPRange": "10.90.0.128/25",
                                               "Gateway": "10.90.0.254", "AuxiliaryAddresses": {"r": "10.90.0.200"}}]
    assert docker_view["Options"] == {"com.docker.network.driver.mtu": "1450"}
    assert docker(d, "network", "inspect", "-f", "{{.Internal}}", "back").stdout.strip() == "true"
    assert docker(d, "network", "ls", "--format", "{{.Name}}").stdout.split() == \
        pynet(d, "network", "ls", "--format", "{{.Name}}").stdout.split()
    # Errors as docker prints them, non-zero exit.
    dup = docker(d, "network", "create", "front", check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    rm_host = docker(d, "network", "rm", "host", check=False)
    assert rm_host.returncode != 0 and "pre-defined" in rm_host.stderr
    missing = docker(d, "network", "inspect", "nosuch", check=False)
    assert missing.returncode != 0
    pruned = docker(d, "network", "prune", "-f", "--filter", "label=team=a").stdout
    assert "front" in pruned and "back" not in pruned
    assert docker(d, "network", "rm", "back").stdout.strip() == "back"
    assert docker(d, "network", "ls", "--format", "{{.Name}}").stdout.split() == ["host", "none"]


def test_docker_cli_sees_connected_sandboxes(daemon):
    need_tool("docker")
    d = daemon
    docker(d, "network", "create", "--subnet", "10.91.0.0/24", "n")
    pynet(d, "sandbox", "create", "--name", "box", "--network", "n")
    containers = json.loads(docker(d, "network", "inspect", "n").stdout)[0]["Containers"]
    assert [c["Name"] for c in containers.values()] == ["box"]
    assert list(containers.values())[0]["IPv4Address"] == "10.91.0.2/24"
    docker(d, "network", "disconnect", "n", "box")
    assert json.loads(docker(d, "network", "inspect", "n").stdout)[0]["Containers"] == {}
    docker(d, "network", "connect", "--ip", "10.91.0.77", "--alias", "bx", "n", "box")
    sb = json.loads(pynet(d, "sandbox", "inspect", "box").stdout)[0]
    assert sb["Networks"]["n"]["IPAddress"] == "10.91.0.77" and sb["Networks"]["n"]["Aliases"] == ["bx"]
    busy = docker(d, "network", "rm", "n", check=False)
    assert busy.returncode != 0 and "active endpoints" in busy.stderr


def test_docker_py_against_pynetd(daemon):
    import docker as docker_py
    client = docker_py.DockerClient(base_url=daemon.url)
    try:
        assert client.ping()
        ipam = docker_py.types.IPAMConfig(pool_configs=[docker_py.types.IPAMPool(subnet="10.92.0.0/24")])
        net = client.networks.create("py", driver="bridge", ipam=ipam, labels={"k": "v"})
        assert net.name == "py"
        assert {n.name for n in client.networks.list()} == {"py", "host", "none"}
        got = client.networks.get("py")
        assert got.attrs["IPAM"]["Config"][0]["Subnet"] == "10.92.0.0/24"
        assert got.attrs["Labels"] == {"k": "v"}
        assert client.networks.list(filters={"label": "k=v"})[0].id == net.id
        with pytest.raises(docker_py.errors.APIError) as err:
            client.networks.create("py")
        assert err.value.status_code == 409
        with pytest.raises(docker_py.errors.NotFound):
            client.networks.get("nosuch")
        net.remove()
        assert client.networks.prune()["NetworksDeleted"] in (None, [])
        assert {n.name for n in client.networks.list()} == {"host", "none"}
        with pytest.raises(docker_py.errors.APIError) as err:
            client.api.create_network("bad", ipam={"Config": [{"Subnet": "not-a-cidr"}]})
        assert err.value.status_code == 400
    finally:
        client.close()


def test_malformed_json_is_a_400_and_changes_nothing(daemon):
    import http.client
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(daemon.socket)

    conn = UnixConnection("localhost")
    try:
        for path, body in (("/networks/create", b"{not json"), ("/networks/create", b"[1,2]"),
                           ("/networks/create", b'{"Name": 5}'), ("/sandboxes/create", b'{"Ports": "80"}')):
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = json.loads(resp.read())
            assert resp.status == 400, (path, body, data)
            assert "message" in data and "Traceback" not in data["message"]
        conn.request("GET", "/v1.99/networks")
        resp = conn.getresponse()
        assert resp.status == 400 and "too new" in json.loads(resp.read())["message"]
    finally:
        conn.close()
    assert {n["Name"] for n in daemon.client().networks()} == {"host", "none"}
