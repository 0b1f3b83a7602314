"""A real dockerd uses pynet as its network driver and IPAM plugin.

dockerd (Debian's docker.io) runs inside the test's own namespace host with
a data root, exec root, pidfile, socket and config of its own, vfs storage,
no bridge and no iptables of its own; pynetd runs there too and serves the
plugin protocols on /run/docker/plugins/pynet-<random>.sock (dockerd's
plugin directory is the machine's, so the name is unique per run and the
socket goes with pynetd).  The image is imported from a busybox-static
rootfs the test builds."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import tarfile
import tempfile
import time

import pytest

from netstack.testing.hosts import Daemon
from tests.conftest import need, need_tool

pytestmark = pytest.mark.e2e

BUSYBOX = "/bin/busybox"
IMAGE = "pynet-busybox:test"


class Dockerd:
    def __init__(self, host) -> None:
        self.host = host
        self.root = tempfile.mkdtemp(prefix="pynet-dockerd-")   # short: the socket path has a length limit
        self.socket = os.path.join(self.root, "docker.sock")
        self.log_path = os.path.join(self.root, "dockerd.log")
        with open(os.path.join(self.root, "daemon.json"), "w") as f:
            f.write("{}")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")
        # nsenter --net only (ip netns exec remounts /sys, which dockerd does not survive)
        self.proc = subprocess.Popen(self.host.nsenter([
            "dockerd", "--data-root", os.path.join(self.root, "data"), "--exec-root", os.path.join(self.root, "exec"),
            "--pidfile", os.path.join(self.root, "docker.pid"), "-H", f"unix://{self.socket}",
            "--config-file", os.path.join(self.root, "daemon.json"), "--storage-driver", "vfs",
            "--bridge", "none", "--iptables=false",
        ]), stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.proc.returncode}:\n{self.log()}")
            if self.docker("version", check=False).returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"dockerd did not answer within 60s:\n{self.log()}")

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(["docker", "-H", f"unix://{self.socket}", *args], capture_output=True, text=True,
                             timeout=timeout)
        if check and out.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {out.stderr}")
        return out

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-5000:]
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)          # dockerd stops its containers and its containerd
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f if line.split()[1].startswith(self.root)]
        for m in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def stack(host, tmp_path):
    need_tool("dockerd", "docker")
    need(os.access(BUSYBOX, os.X_OK), f"{BUSYBOX} (busybox-static) is not installed")
    name = f"pynet-{secrets.token_hex(4)}"
    plugin_socket = f"/run/docker/plugins/{name}.sock"
    pynetd = Daemon(host, extra_args=["--plugin-socket", plugin_socket])
    dockerd = Dockerd(host)
    try:
        pynetd.start()
        dockerd.start()
        yield name, pynetd, dockerd
    except BaseException:
        print(pynetd.log())
        print(dockerd.log())
        raise
    finally:
        dockerd.close()
        pynetd.close()
        if os.path.exists(plugin_socket):
            os.unlink(plugin_socket)


def import_image(dockerd: Dockerd, tmp_path) -> None:
    rootfs = tmp_path / "rootfs"
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp"):
        (rootfs / d).mkdir(parents=True)
    shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in ("sh", "ping", "sleep", "ip", "cat", "nslookup"):
        os.symlink("busybox", rootfs / "bin" / applet)
    tar = tmp_path / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        t.add(rootfs, arcname=".")
    dockerd.docker("import", str(tar), IMAGE)


def host_links(host) -> list[str]:
    return sorted(l["ifname"] for l in json.loads(host.exec(["ip", "-j", "link", "show"]).stdout))


def firewall_rules(host) -> list[str]:
    """Every iptables rule and chain in the namespace, both families, without counters."""
    out = []
    for tool in ("iptables-legacy-save", "ip6tables-legacy-save"):
        for line in host.exec([tool]).stdout.splitlines():
            if not line.startswith("#"):
                out.append(line.split(" [")[0] if line.startswith(":") else line)
    return out


def plugin_rows(pynetd) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The plugin's IPAM state as pynet's store holds it: (pool id, body), (pool id, address)."""
    db = sqlite3.connect(f"file:{os.path.join(pynetd.data_root, 'pynet.db')}?mode=ro", uri=True)
    try:
        return (db.execute("SELECT id, body FROM plugin_pools ORDER BY id").fetchall(),
                db.execute("SELECT pool_id, address FROM plugin_addresses ORDER BY address").fetchall())
    finally:
        db.close()


def test_dockerd_runs_containers_on_a_pynet_network(host, stack, tmp_path):
    name, pynetd, dockerd = stack
    import_image(dockerd, tmp_path)
    c = pynetd.client()
    net_id = dockerd.docker("network", "create", "-d", name, "--ipam-driver", name,
                            "--subnet", "10.76.0.0/24", "pnet").stdout.strip()
    mine = c.network_inspect(f"dk-{net_id[:12]}")
    assert mine["Driver"] == "bridge" and mine["IPAM"]["Config"][0]["Subnet"] == "10.76.0.0/24"
    assert json.loads(dockerd.docker("network", "inspect", "pnet").stdout)[0]["Driver"] == name

    dockerd.docker("run", "-d", "--name", "box1", "--network", "pnet", IMAGE, "sleep", "300")
    box1 = json.loads(dockerd.docker("inspect", "box1").stdout)[0]["NetworkSettings"]["Networks"]["pnet"]
    assert box1["IPAddress"].startswith("10.76.0.")
    # A second container reaches the first by name (docker's DNS) and by address.
    out = dockerd.docker("run", "--rm", "--network", "pnet", IMAGE, "sh", "-c",
                         f"ip -o -4 addr show eth0 && ping -c 1 -W 2 box1 && ping -c 1 -W 2 {box1['IPAddress']}")
    assert "10.76.0." in out.stdout and out.stdout.count("1 packets received") == 2, out.stdout
    # pynet sees box1's endpoint, with docker's address and MAC
    [sb] = c.sandboxes()
    ep = sb["Networks"][f"dk-{net_id[:12]}"]
    assert (ep["IPAddress"], ep["MacAddress"]) == (box1["IPAddress"], box1["MacAddress"])

    dockerd.docker("rm", "-f", "box1")
    dockerd.docker("network", "rm", "pnet")
    assert c.sandboxes() == []
    assert sorted(n["Name"] for n in c.networks()) == ["host", "none"]
    assert host_links(host) == ["lo"]


def test_dockerd_default_pool_and_errors(host, stack):
    name, pynetd, dockerd = stack
    c = pynetd.client()
    c.network_create({"Name": "mine", "IPAM": {"Config": [{"Subnet": "172.17.0.0/16"}]}})
    # No --subnet: pynet's IPAM picks a pool that skips pynet's own networks.
    dockerd.docker("network", "create", "-d", name, "--ipam-driver", name, "auto")
    subnet = json.loads(dockerd.docker("network", "inspect", "auto").stdout)[0]["IPAM"]["Config"][0]["Subnet"]
    assert subnet not in ("", "172.17.0.0/16")
    dockerd.docker("network", "rm", "auto")
    for args, text in (
        (["-d", name, "-o", "bogus=1", "bad1"], "bogus"),
        (["-d", name, "--ipam-driver", name, "--subnet", "172.17.5.0/24", "bad2"], "172.17.0.0/16"),
        (["-d", name, "--subnet", "172.17.6.0/24", "bad3"], "172.17"),    # docker's IPAM, pynet's driver refuses
    ):
        out = dockerd.docker("network", "create", *args, check=False)
        assert out.returncode != 0 and text in out.stderr, (args, out.stderr)
    assert sorted(n["Name"] for n in c.networks()) == ["host", "mine", "none"]
    assert "Traceback" not in pynetd.log()


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "kill9"])
def test_dockerd_networks_survive_a_pynetd_restart(host, stack, tmp_path, how):
    """pynetd restarts (stopped, or killed) with the same data root under a running container: the
    container keeps its interface, docker's next container gets a fresh
    address from the pool docker already holds, both reach each other, an
    address released after the restart is free again, and rm leaves nothing."""
    name, pynetd, dockerd = stack
    import_image(dockerd, tmp_path)
    rules_before = firewall_rules(host)
    net_id = dockerd.docker("network", "create", "-d", name, "--ipam-driver", name,
                            "--subnet", "10.77.0.0/24", "pnet").stdout.strip()
    dockerd.docker("run", "-d", "--name", "box1", "--network", "pnet", IMAGE, "sleep", "600")

    def address(box: str) -> str:
        return json.loads(dockerd.docker("inspect", box).stdout)[0]["NetworkSettings"]["Networks"]["pnet"]["IPAddress"]

    ip1 = address("box1")
    pools, addrs = plugin_rows(pynetd)
    assert [p for p, _ in pools] == ["local/10.77.0.0/24"]
    assert sorted(a for _, a in addrs) == sorted(["10.77.0.1", ip1])

    pynetd.stop(how)
    pynetd.start()
    c = pynetd.client()
    assert "removed" not in pynetd.log(), pynetd.log()          # start-up repaired nothing away
    [sb] = c.sandboxes()
    assert sb["Networks"][f"dk-{net_id[:12]}"]["IPAddress"] == ip1
    # and `pynet system repair` on the live daemon agrees: nothing to repair, nothing remaining.
    rep = c.system_repair()
    assert rep["Repairs"] == [] and rep["Remaining"] == [], rep
    # box1's interface survived: it reaches its gateway (the bridge in pynetd's namespace)
    out = dockerd.docker("exec", "box1", "ping", "-c", "1", "-W", "2", "10.77.0.1", check=False)
    assert "1 packets received" in out.stdout, out.stdout + out.stderr

    dockerd.docker("run", "-d", "--name", "box2", "--network", "pnet", IMAGE, "sleep", "600")
    ip2 = address("box2")
    assert ip2.startswith("10.77.0.") and ip2 not in (ip1, "10.77.0.1")
    out = dockerd.docker("exec", "box2", "sh", "-c", f"ping -c 1 -W 2 box1 && ping -c 1 -W 2 {ip1}", check=False)
    assert out.stdout.count("1 packets received") == 2, out.stdout + out.stderr
    out = dockerd.docker("exec", "box1", "ping", "-c", "1", "-W", "2", ip2, check=False)
    assert "1 packets received" in out.stdout, out.stdout + out.stderr
    assert sorted(s["Networks"][f"dk-{net_id[:12]}"]["IPAddress"] for s in c.sandboxes()) == sorted([ip1, ip2])

    # box1's address, given before the restart, is released after it: free again.
    dockerd.docker("rm", "-f", "box1")
    assert sorted(a for _, a in plugin_rows(pynetd)[1]) == sorted(["10.77.0.1", ip2])
    out = dockerd.docker("run", "--rm", "--network", "pnet", "--ip", ip1, IMAGE, "ping", "-c", "1", "-W", "2", ip2)
    assert "1 packets received" in out.stdout, out.stdout

    dockerd.docker("rm", "-f", "box2")
    dockerd.docker("network", "rm", "pnet")
    assert c.sandboxes() == []
    assert sorted(n["Name"] for n in c.networks()) == ["host", "none"]
    assert host_links(host) == ["lo"]
    assert firewall_rules(host) == rules_before
    assert plugin_rows(pynetd) == ([], [])
    # and the pool is docker's to ask for again
    dockerd.docker("network", "create", "-d", name, "--ipam-driver", name, "--subnet", "10.77.0.0/24", "again")
    dockerd.docker("network", "rm", "again")
    assert plugin_rows(pynetd) == ([], [])
    assert "Traceback" not in pynetd.log()
