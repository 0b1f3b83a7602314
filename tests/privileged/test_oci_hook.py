"""OCI hooks under a real runc, in each form a bundle can name: `pynet
oci-hook` (Python), and the fast forms of `pynet oci-hook --print-hooks`
(curl or a perl one-liner posting the state to pynetd's POST
/oci/hooks/{hook}).  A busybox container attached by its createRuntime
hook reaches a pynet sandbox by name, and after `runc delete` (poststop)
nothing of it is left in pynet; a refusal reaches runc's error message;
AutoRemove, which the hook asks for, removes a sandbox when its process
exits."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time

import pytest

from netstack.testing.hosts import settled
from tests.conftest import need, need_tool

pytestmark = pytest.mark.privileged

PYNET = os.path.join(os.path.dirname(sys.executable), "pynet")
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ping", "nslookup", "ip", "cat", "sleep", "hostname")


FORMS = ("python", "curl", "perl")


def hooks(daemon, form: str) -> dict:
    """config.json's "hooks" for `form`: the fast ones as `pynet oci-hook
    --print-hooks` prints them."""
    if form == "python":
        entry = {"path": PYNET, "args": ["pynet", "oci-hook"], "env": [f"PYNET_HOST={daemon.url}"], "timeout": 30}
        return {"createRuntime": [entry], "poststop": [entry]}
    need_tool(form)
    out = subprocess.run([PYNET, "oci-hook", "--print-hooks", "--socket", daemon.socket, "--form", form],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["hooks"]


def make_bundle(path, daemon, args: list[str], annotations: dict[str, str], *, hook: bool = True,
                form: str = "python") -> str:
    """A runc bundle: a busybox-static rootfs, `runc spec` edited."""
    rootfs = path / "rootfs"
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        os.symlink("busybox", rootfs / "bin" / applet)
    subprocess.run(["runc", "spec"], cwd=path, check=True)
    spec = json.loads((path / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    for kind in ("bounding", "effective", "permitted"):
        spec["process"]["capabilities"][kind].append("CAP_NET_RAW")   # busybox ping
    spec["root"]["readonly"] = False
    spec["hostname"] = "oci-box"
    assert {"type": "network"} in spec["linux"]["namespaces"]        # runc makes a new one
    spec["annotations"] = annotations
    if hook:
        spec["hooks"] = hooks(daemon, form)
    (path / "config.json").write_text(json.dumps(spec))
    return str(path)


def runc(host, state: str, *args: str, **kw) -> subprocess.CompletedProcess[str]:
    # runc runs in the test host's namespace, so the veths land there.
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(host.nsenter(["runc", "--root", state, *args]), text=True, timeout=60, **kw)


@pytest.fixture
def runc_state(tmp_path):
    need_tool("runc")
    need(os.access(BUSYBOX, os.X_OK), f"{BUSYBOX} (busybox-static) is not installed")
    state = tmp_path / "runc-state"
    state.mkdir()
    made: list[str] = []
    yield str(state), made
    for cid in made:  # whatever a failing test left: kill and delete, by id
        subprocess.run(["runc", "--root", str(state), "delete", "--force", cid], capture_output=True, timeout=30)


def host_links(host) -> list[str]:
    return [l["ifname"] for l in json.loads(host.exec(["ip", "-j", "link", "show"]).stdout)]


def wait_status(host, state: str, cid: str, want: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = runc(host, state, "state", cid)
        if out.returncode == 0 and json.loads(out.stdout)["status"] == want:
            return
        time.sleep(0.05)
    raise AssertionError(f"container {cid} not {want} after {timeout}s")


@pytest.mark.parametrize("form", FORMS)
def test_runc_container_reaches_a_sandbox_by_name_and_leaves_nothing(host, daemon, runc_state, tmp_path, form):
    state, made = runc_state
    c = daemon.client()
    c.network_create({"Name": "ocinet", "IPAM": {"Config": [{"Subnet": "10.74.0.0/24"}]}})
    c.sandbox_create({"Name": "peer", "Networks": ["ocinet"]})
    peer_ip = c.sandbox_inspect("peer")["Networks"]["ocinet"]["IPAddress"]
    before = host_links(host)

    cid = f"oci-{secrets.token_hex(4)}"
    script = "nslookup peer && ping -c 1 -W 2 peer && ip -o -4 addr show eth0 && echo done && sleep 60"
    bundle = make_bundle(tmp_path / "bundle", daemon, ["sh", "-c", script],
                         {"pynet.networks": "ocinet", "pynet.aliases": "box", "pynet.resolv_conf": "write"},
                         form=form)
    log = open(tmp_path / "out.log", "w")
    made.append(cid)
    r = runc(host, state, "run", "--detach", "--bundle", bundle, cid, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    assert r.returncode == 0, (tmp_path / "out.log").read_text()
    wait_status(host, state, cid, "running")

    # While it runs: a sandbox named after the container, on its namespace.
    deadline = time.monotonic() + 15
    while "done" not in (tmp_path / "out.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    out = (tmp_path / "out.log").read_text()
    assert "done" in out, out
    assert f"Address: {peer_ip}" in out or f"Address 1: {peer_ip}" in out, out
    assert "1 packets received" in out, out
    sb = c.sandbox_inspect(cid)
    assert sb["Hostname"] == "oci-box"
    assert sb["Networks"]["ocinet"]["IPAddress"] in out
    assert sb["Networks"]["ocinet"]["Aliases"] == ["box"]
    # the peer finds the container by its alias too
    peer_key = c.sandbox_inspect("peer")["Key"]
    lookup = subprocess.run(["nsenter", f"--net={peer_key}", "busybox", "nslookup", "box", "127.0.0.11"],
                            capture_output=True, text=True, timeout=20)
    assert sb["Networks"]["ocinet"]["IPAddress"] in lookup.stdout

    assert runc(host, state, "kill", cid, "KILL").returncode == 0
    wait_status(host, state, cid, "stopped")
    r = runc(host, state, "delete", cid)                 # runs poststop: the process is gone by now
    assert r.returncode == 0, r.stderr
    made.remove(cid)
    assert [s["Name"] for s in c.sandboxes()] == ["peer"]
    assert list(c.network_inspect("ocinet")["Containers"].values())[0]["Name"] == "peer"
    assert settled(lambda: host_links(host), before) == before
    assert not os.listdir(os.path.join(daemon.exec_root, "netns")) or \
        len(os.listdir(os.path.join(daemon.exec_root, "netns"))) == 1   # the peer's own


@pytest.mark.parametrize("form", FORMS)
def test_runc_run_in_the_foreground_attaches_and_detaches(host, daemon, runc_state, tmp_path, form):
    state, made = runc_state
    c = daemon.client()
    c.network_create({"Name": "ocinet", "IPAM": {"Config": [{"Subnet": "10.75.0.0/24"}]}})
    cid = f"oci-{secrets.token_hex(4)}"
    bundle = make_bundle(tmp_path / "bundle", daemon, ["ip", "-o", "-4", "addr", "show", "eth0"],
                         {"pynet.networks": "ocinet", "pynet.name": "fg", "pynet.ip": "10.75.0.50"}, form=form)
    made.append(cid)
    r = runc(host, state, "run", "--bundle", bundle, cid)
    assert r.returncode == 0, r.stderr
    assert "10.75.0.50/24" in r.stdout
    assert c.sandboxes() == []


def test_hook_errors_are_one_line_and_fail_the_container(host, daemon, runc_state, tmp_path):
    state, made = runc_state
    cid = f"oci-{secrets.token_hex(4)}"
    bundle = make_bundle(tmp_path / "bundle", daemon, ["true"], {"pynet.networks": "nosuch"})
    made.append(cid)
    r = runc(host, state, "run", "--bundle", bundle, cid)
    assert r.returncode != 0
    assert "network nosuch not found" in r.stderr and "Traceback" not in r.stderr
    assert daemon.client().sandboxes() == []
    # Straight from a shell: bad state, unknown phase, poststop of nothing.
    env = {**os.environ, "PYNET_HOST": daemon.url}
    for stdin, args, code, text in (
        ("not json", [], 1, "cannot decode"),
        ('{"id": "x", "status": "running", "annotations": {"pynet.networks": "a"}}', [], 125, "unknown phase"),
        ('{"id": "x", "status": "stopped", "annotations": {"pynet.networks": "a"}}', [], 0, ""),
        ('{"id": "x", "pid": 0, "annotations": {"pynet.networks": "a"}}', ["createRuntime"], 1, "no live pid"),
        ('{"id": "x", "annotations": {}}', ["createRuntime"], 0, ""),
    ):
        out = subprocess.run([PYNET, "oci-hook", *args], input=stdin, env=env, capture_output=True, text=True, timeout=30)
        assert out.returncode == code, (stdin, out.stderr)
        assert text in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("form", ["curl", "perl"])
def test_fast_hook_errors_reach_runc_and_fail_the_container(host, daemon, runc_state, tmp_path, form):
    """The fast forms: pynetd's message is in runc's error (runc quotes a
    failed hook's stdout and stderr); bad input straight from a shell is a
    clear message and a non-zero exit."""
    state, made = runc_state
    cid = f"oci-{secrets.token_hex(4)}"
    bundle = make_bundle(tmp_path / "bundle", daemon, ["true"], {"pynet.networks": "nosuch"}, form=form)
    made.append(cid)
    r = runc(host, state, "run", "--bundle", bundle, cid)
    assert r.returncode != 0
    assert "network nosuch not found" in r.stderr.replace('\\"', '"'), r.stderr
    assert daemon.client().sandboxes() == []
    # no pynet.networks annotation: the hooks do nothing, the container runs
    bundle = make_bundle(tmp_path / "bundle2", daemon, ["hostname"], {"other": "x"}, form=form)
    made.append(f"{cid}-2")
    r = runc(host, state, "run", "--bundle", bundle, f"{cid}-2")
    assert r.returncode == 0 and r.stdout == "oci-box\n", r.stderr
    entry = hooks(daemon, form)["createRuntime"][0]
    for stdin, text in (("not json", "cannot decode the container state"),
                        ("", "no container state"),
                        ('{"id": "x", "pid": 0, "annotations": {"pynet.networks": "a"}}', "no live pid")):
        out = subprocess.run([entry["path"], *entry["args"][1:]], input=stdin, capture_output=True, text=True,
                             timeout=30)
        assert out.returncode != 0, (stdin, out)
        assert text in out.stdout + out.stderr, (stdin, out)
    assert daemon.client().sandboxes() == []


def test_hook_endpoint_refuses_junk_without_side_effects(host, daemon):
    """POST /oci/hooks/{hook} with malformed states: a 4xx with a message,
    never a 5xx or a traceback, nothing made.  No live pid is ever given
    (pid 1 would be the machine's own namespace)."""
    import random
    import socket

    c = daemon.client()
    c.network_create({"Name": "junknet", "IPAM": {"Config": [{"Subnet": "10.77.0.0/24"}]}})
    rng = random.Random(8)
    values = [None, True, 0, -1, 2**70, 1.5, "", "x", "../../etc", "/proc/1/ns/net", [], {}, [1], {"a": 1},
              "junknet", "junknet,nosuch", "\x00", "😀"]
    keys = ["id", "pid", "bundle", "status", "annotations", "ociVersion"]
    bodies = [b"", b"{", b"[]", b"null", b"\xff\xfe", b"{}" * 3, b'{"id": "x"}' + b" " * 100]
    for _ in range(150):
        state = {k: rng.choice(values) for k in rng.sample(keys, rng.randint(0, len(keys)))}
        if isinstance(state.get("pid"), int) and not isinstance(state.get("pid"), bool):
            state["pid"] = rng.choice([0, -1, 2**70])
        if rng.random() < 0.5:
            state["annotations"] = {"pynet.networks": rng.choice(values), "pynet.ip": rng.choice(values),
                                    "pynet.resolv_conf": rng.choice(values), "pynet.ports": rng.choice(values)}
        bodies.append(json.dumps(state).encode())
    for body in bodies:
        for hook in ("createRuntime", "poststop", "bogus"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(30)
            s.connect(daemon.socket)
            s.sendall(b"POST /oci/hooks/%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                      % (hook.encode(), len(body), body))
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            s.close()
            status = int(data.split(b" ", 2)[1])
            assert status < 500 and b"Traceback" not in data, (hook, body, data)
            if status >= 400:
                assert json.loads(data.partition(b"\r\n\r\n")[2])["message"]
    assert c.sandboxes() == []


def test_auto_remove_detaches_when_the_process_exits(host, daemon):
    """What the hook asks for when it attaches by pid: pynetd removes the
    sandbox as soon as the process exits (poststop's DELETE then finds it
    gone).  Without AutoRemove the sandbox stays."""
    c = daemon.client()
    c.network_create({"Name": "autonet", "IPAM": {"Config": [{"Subnet": "10.76.0.0/24"}]}})
    before = host_links(host)
    procs = [subprocess.Popen(host.nsenter(["unshare", "--net", "sleep", "60"])) for _ in range(2)]
    try:
        deadline = time.monotonic() + 10
        while not all(os.readlink(f"/proc/{p.pid}/exe").endswith("sleep") for p in procs) \
                and time.monotonic() < deadline:
            time.sleep(0.01)   # nsenter execs unshare, which execs sleep: one pid, the new namespace
        c.sandbox_create({"Name": "auto", "Networks": ["autonet"], "Pid": procs[0].pid, "AutoRemove": True})
        c.sandbox_create({"Name": "kept", "Networks": ["autonet"], "Pid": procs[1].pid})
        assert sorted(s["Name"] for s in c.sandboxes()) == ["auto", "kept"]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    deadline = time.monotonic() + 10
    while [s["Name"] for s in c.sandboxes()] != ["kept"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [s["Name"] for s in c.sandboxes()] == ["kept"]
    c.sandbox_remove("kept", force=True)
    assert settled(lambda: host_links(host), before) == before
    for body, text in (({"Name": "x", "AutoRemove": True}, "needs a Pid"),
                       ({"Name": "x", "Pid": procs[0].pid, "AutoRemove": True}, "no process")):
        with pytest.raises(Exception, match=text):
            c.sandbox_create(body)
    assert c.sandboxes() == []
