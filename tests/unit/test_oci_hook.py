"""OCI hooks without a daemon or root: `netstack.oci.plan` (annotations ->
what to do), pynetd's POST /oci/hooks/{hook} over a fake controller, `pynet
oci-hook` forwarding stdin, and the fast forms (curl, perl) against a tiny
UNIX-socket server."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager

import pytest

from netstack import oci
from netstack.cli import oci_hook
from netstack.cli.common import CliError, Context
from netstack.errors import InvalidParameter, NotFound

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ------------------------------------------------------------------ oci.plan

def test_attachments_from_annotations():
    got = oci.attachments({"pynet.networks": "a, b", "pynet.ip": "10.0.0.5,b=fd00::5", "pynet.aliases": "x,y",
                           "pynet.mac": "02:00:00:00:00:05"})
    assert got == [
        {"Network": "a", "IPv4Address": "10.0.0.5", "Aliases": ["x", "y"], "MacAddress": "02:00:00:00:00:05"},
        {"Network": "b", "IPv6Address": "fd00::5", "Aliases": ["x", "y"]},
    ]
    with pytest.raises(InvalidParameter, match="'c'"):
        oci.attachments({"pynet.networks": "a", "pynet.ip": "c=10.0.0.5"})


def test_attach_by_pid_from_config_json_and_detach_by_name(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "hostname": "h1", "root": {"path": "rfs"},
        "annotations": {"pynet.networks": "a", "pynet.resolv_conf": "write", "pynet.ports": "8080:80", "other": "x"}}))
    state = {"id": "c1", "pid": os.getpid(), "bundle": str(tmp_path), "status": "creating"}
    action = oci.plan("createRuntime", state)
    assert isinstance(action, oci.Attach) and action.name == "c1"
    assert action.body == {"Name": "c1", "Networks": [{"Network": "a"}], "Ports": ["8080:80"],
                           "Labels": {"oci.id": "c1", "oci.bundle": str(tmp_path)},
                           "Pid": os.getpid(), "AutoRemove": True,   # pynetd detaches when the process exits
                           "Hostname": "h1"}
    assert action.resolv_conf == str(tmp_path / "rfs" / "etc" / "resolv.conf")
    detach = oci.plan("poststop", dict(state, status="stopped", pid=0))
    assert isinstance(detach, oci.Detach) and detach.name == "c1"


def test_netns_path_from_config_when_no_pid(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"linux": {"namespaces": [{"type": "network", "path": "/run/netns/x"}]}}))
    state = {"id": "c1", "pid": 0, "bundle": str(tmp_path), "annotations": {"pynet.networks": "a", "pynet.name": "web"}}
    action = oci.plan("prestart", state)
    assert action.body["Key"] == "/run/netns/x" and action.name == "web" and "Pid" not in action.body
    assert "AutoRemove" not in action.body     # a namespace path outlives any one process
    assert action.resolv_conf is None


def test_no_pynet_network_is_nothing_to_do(tmp_path):
    assert oci.plan("createRuntime", {"id": "c", "annotations": {"x": "y"}}) is None
    assert oci.plan("poststop", {"id": "c", "bundle": str(tmp_path)}) is None   # no config.json either
    assert oci.plan("createRuntime", {"id": "c", "annotations": {"pynet.networks": " , "}}) is None


@pytest.mark.parametrize("hook, state, text", [
    ("running", {"id": "c", "annotations": {"pynet.networks": "a"}}, "unknown hook"),
    ("createRuntime", {"id": "c", "pid": 0, "annotations": {"pynet.networks": "a"}}, "no live pid"),
    ("createRuntime", {"id": "c", "pid": True, "annotations": {"pynet.networks": "a"}}, "no live pid"),
    ("poststop", {"annotations": {"pynet.networks": "a"}}, "no id"),
    ("poststop", {"id": "c", "annotations": "x"}, "annotations must be an object"),
    ("createRuntime", {"id": "c", "pid": os.getpid(), "annotations": {"pynet.networks": "a",
                                                                     "pynet.resolv_conf": "write"}}, "bundle"),
    ("createRuntime", {"id": "c", "pid": os.getpid(), "annotations": {"pynet.networks": "a",
                                                                     "pynet.resolv_conf": "copy"}}, "'write'"),
])
def test_plan_errors(hook, state, text):
    with pytest.raises(InvalidParameter, match=text):
        oci.plan(hook, state)


@pytest.mark.parametrize("raw, text", [
    (b"", "no container state"), (b"  \n", "no container state"), (b"not json", "cannot decode"),
    (b"\xff\xfe{}", "cannot decode"), (b"[1]", "not a JSON object"),
])
def test_decode_state_errors(raw, text):
    with pytest.raises(InvalidParameter, match=text):
        oci.decode_state(raw)


def test_bad_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(InvalidParameter, match="config.json"):
        oci.plan("createRuntime", {"id": "c", "bundle": str(tmp_path)})


def test_write_resolv_conf_follows_no_symlink_in_the_rootfs(tmp_path):
    src = tmp_path / "resolv.conf"
    src.write_text("nameserver 127.0.0.11\n")
    outside = tmp_path / "outside"
    outside.write_text("keep")
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "resolv.conf").symlink_to(outside)        # as an image may have it
    oci.write_resolv_conf(str(src), str(rootfs / "etc" / "resolv.conf"))
    assert not (rootfs / "etc" / "resolv.conf").is_symlink()
    assert (rootfs / "etc" / "resolv.conf").read_text() == "nameserver 127.0.0.11\n"
    assert outside.read_text() == "keep"
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "etc").symlink_to(tmp_path)
    with pytest.raises(OSError, match="symbolic link"):
        oci.write_resolv_conf(str(src), str(tmp_path / "r2" / "etc" / "resolv.conf"))
    assert not (tmp_path / "resolv.conf").is_symlink() and src.read_text() == "nameserver 127.0.0.11\n"


# ------------------------------------------------- POST /oci/hooks/{hook}

class FakeCtrl:
    """What the endpoint uses of the controller."""

    def __init__(self, data_root: str) -> None:
        self.data_root = data_root
        self.sandboxes: dict[str, object] = {}
        self.calls: list[tuple] = []

    def create_sandbox(self, req):
        from types import SimpleNamespace

        if req.networks and req.networks[0].network == "nosuch":
            raise NotFound("network nosuch not found")
        sb = SimpleNamespace(id="id-" + req.name, name=req.name)
        self.sandboxes[sb.id] = sb
        self.calls.append(("create", req.name, req.pid, req.key))
        os.makedirs(os.path.join(self.data_root, sb.id), exist_ok=True)
        with open(self.sandbox_file(sb, "resolv.conf"), "w") as f:
            f.write("nameserver 127.0.0.11\n")
        return sb

    def delete_sandbox(self, ref, force=False):
        self.calls.append(("delete", ref, force))
        for sid, sb in list(self.sandboxes.items()):
            if ref in (sid, sb.name):
                del self.sandboxes[sid]
                return
        raise NotFound(f"sandbox {ref} not found")

    def sandbox_file(self, sb, name):
        return os.path.join(self.data_root, sb.id, name)


def post_hooks(ctrl, requests):
    from aiohttp.test_utils import TestClient, TestServer

    from netstack.api.server import make_app

    async def calls():
        client = TestClient(TestServer(make_app(ctrl)))
        await client.start_server()
        out = []
        try:
            for hook, body in requests:
                resp = await client.post(f"/oci/hooks/{hook}", data=body)
                out.append((resp.status, json.loads(await resp.text())))
        finally:
            await client.close()
        return out

    return asyncio.run(calls())


def test_endpoint_attaches_writes_resolv_conf_and_detaches(tmp_path):
    ctrl = FakeCtrl(str(tmp_path / "data"))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"annotations": {"pynet.networks": "a",
                                                                    "pynet.resolv_conf": "write"}}))
    state = json.dumps({"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": os.getpid(),
                        "bundle": str(bundle)})
    created, gone, again = post_hooks(ctrl, [("createRuntime", state), ("poststop", state),
                                             ("poststop", state)])
    assert created == (201, {"Action": "attached", "Id": "id-c1"})
    assert (bundle / "rootfs" / "etc" / "resolv.conf").read_text() == "nameserver 127.0.0.11\n"
    assert gone == (200, {"Action": "detached", "Id": ""}) and again == gone   # already gone: success
    assert ctrl.calls == [("create", "c1", os.getpid(), ""), ("delete", "c1", True), ("delete", "c1", True)]


def test_endpoint_errors_are_messages(tmp_path):
    ctrl = FakeCtrl(str(tmp_path / "data"))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "rootfs").write_text("a file where the rootfs should be")
    ann = {"pynet.networks": "a", "pynet.resolv_conf": "write"}
    got = post_hooks(ctrl, [
        ("createRuntime", b"not json"),
        ("createRuntime", b""),
        ("bogus", json.dumps({"id": "c"})),
        ("createRuntime", json.dumps({"id": "c", "pid": os.getpid(), "annotations": {"pynet.networks": "nosuch"}})),
        ("createRuntime", json.dumps({"id": "c", "pid": os.getpid(), "bundle": str(bundle), "annotations": ann})),
        ("createRuntime", json.dumps({"id": "c", "annotations": {}})),
    ])
    statuses = [s for s, _ in got]
    assert statuses == [400, 400, 400, 404, 400, 200], got
    assert "cannot decode" in got[0][1]["message"] and "no container state" in got[1][1]["message"]
    assert "unknown hook 'bogus'" in got[2][1]["message"]
    assert got[3][1] == {"message": "network nosuch not found"}
    assert "cannot write" in got[4][1]["message"]
    assert ctrl.sandboxes == {}          # the sandbox whose resolv.conf could not be written is removed
    assert got[5][1]["Action"] == "none"


# ---------------------------------------------------------- pynet oci-hook

class FakeClient:
    def __init__(self, host=None):
        self.host = host
        self.posts: list[tuple[str, bytes]] = []
        FakeClient.last = self

    def post_raw(self, path, payload):
        self.posts.append((path, payload))

    def close(self):
        pass


def run_cli(monkeypatch, stdin: str, args: list[str]) -> int:
    monkeypatch.setattr(oci_hook, "_TimedClient", FakeClient)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    return oci_hook.run(Context(None), args)


def test_cli_forwards_stdin_unchanged(monkeypatch, tmp_path):
    state = '{"id": "c1", "status": "creating", "pid": 7,  "annotations": {"pynet.networks": "a"}}'
    assert run_cli(monkeypatch, state, []) == 0
    assert FakeClient.last.posts == [("/oci/hooks/createRuntime", state.encode())]
    assert FakeClient.last.host is None      # $PYNET_HOST, else the default
    assert run_cli(monkeypatch, state.replace("creating", "stopped"), []) == 0
    assert FakeClient.last.posts[0][0] == "/oci/hooks/poststop"
    assert run_cli(monkeypatch, state, ["prestart"]) == 0
    assert FakeClient.last.posts[0][0] == "/oci/hooks/prestart"
    # pynet.host: from the state's annotations, else config.json's
    assert run_cli(monkeypatch, '{"id": "c", "annotations": {"pynet.host": "unix:///x.sock"}}', ["poststop"]) == 0
    assert FakeClient.last.host == "unix:///x.sock"
    (tmp_path / "config.json").write_text(json.dumps({"annotations": {"pynet.host": "unix:///y.sock"}}))
    assert run_cli(monkeypatch, json.dumps({"id": "c", "bundle": str(tmp_path)}), ["poststop"]) == 0
    assert FakeClient.last.host == "unix:///y.sock"


@pytest.mark.parametrize("stdin, args, code, text", [
    ("not json", ["createRuntime"], 1, "cannot decode"),
    ("[]", [], 1, "not a JSON object"),
    ('{"id": "c", "status": "running"}', [], 125, "unknown phase"),
    ('{"id": "c"}', ["a", "b"], 125, "at most one"),
])
def test_cli_errors(monkeypatch, stdin, args, code, text):
    with pytest.raises(CliError, match=text) as exc:
        run_cli(monkeypatch, stdin, args)
    assert exc.value.code == code


def test_main_reports_errors_in_one_line(monkeypatch, capsys):
    """The launcher's direct entry (bin/pynet oci-hook): docker's wording and
    exit statuses, as through netstack.cli.main, never a traceback."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("not json"))
    assert oci_hook.main([]) == 1
    assert "cannot decode" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"id": "c", "status": "running"})))
    assert oci_hook.main(["a", "b"]) == 125
    monkeypatch.setattr(sys, "stdin", io.StringIO("{}"))
    monkeypatch.setenv("PYNET_HOST", "unix:///nonexistent/pynet.sock")
    assert oci_hook.main(["poststop"]) == 1
    err = capsys.readouterr().err
    assert "Cannot connect to the pynet daemon" in err and "Traceback" not in err


def test_hook_starts_light():
    """`pynet oci-hook` forwards: no json, re, controller or aiohttp."""
    code = ("import sys; sys.path.insert(0, %r); import netstack.cli.oci_hook; "
            "print(sorted(m for m in ('json', 're', 'typing', 'aiohttp', 'netstack.controller', 'pyroute2', "
            "'http.client', 'argparse') if m in sys.modules))" % ROOT)
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------ the fast forms

@contextmanager
def fake_pynetd(path: str, status: int, body: bytes):
    """Accepts connections on a UNIX socket; answers each request with
    `status` and `body`; records what it got."""
    got: list[bytes] = []
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    srv.settimeout(20)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
                             .split(b":")[1])
                while len(rest) < length:
                    rest += conn.recv(65536)
                got.append(head.split(b"\r\n")[0] + b"\n" + rest)
                conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s" % (status, len(body), body))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield got
    finally:
        srv.close()
        t.join(5)


def run_entry(entry: dict, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([entry["path"], *entry["args"][1:]], input=stdin, capture_output=True, timeout=30)


@pytest.mark.parametrize("form", ["curl", "perl"])
def test_fast_forms_post_the_state_and_report_refusals(form, tmp_path):
    if shutil.which(form) is None:
        pytest.fail(f"{form} is not installed (scripts/bootstrap installs curl; perl-base is essential)")
    sock = str(tmp_path / "p.sock")
    hooks = oci.hooks_json(sock, form, shutil.which(form))
    state = json.dumps({"id": "c1", "status": "creating", "pid": 5, "annotations": {"pynet.networks": "a"}}).encode()
    with fake_pynetd(sock, 201, b'{"Action": "attached", "Id": "x"}') as got:
        out = run_entry(hooks["createRuntime"][0], state)
        assert out.returncode == 0, out.stderr
        out = run_entry(hooks["poststop"][0], b"")
        assert out.returncode == 0, out.stderr
    assert got == [b"POST /oci/hooks/createRuntime HTTP/1.1\n" + state, b"POST /oci/hooks/poststop HTTP/1.1\n"]
    os.unlink(sock)
    with fake_pynetd(sock, 404, b'{"message": "network \\"nosuch\\" not found"}'):
        out = run_entry(hooks["createRuntime"][0], state)
    assert out.returncode != 0
    # runc's error carries the hook's stdout and stderr: the message is in one of them
    assert b'network \\"nosuch\\" not found' in out.stdout or b'network "nosuch" not found' in out.stderr
    os.unlink(sock)
    out = run_entry(hooks["poststop"][0], state)         # no pynetd
    assert out.returncode != 0
    assert (b"Couldn't connect" if form == "curl" else b"cannot connect to pynetd at " + sock.encode()) in out.stderr


def test_print_hooks(capsys, tmp_path):
    ctx = Context("unix:///run/x/pynet.sock")
    assert oci_hook.run(ctx, ["--print-hooks"]) == 0                     # perl: the fastest (bench_oci)
    assert json.loads(capsys.readouterr().out)["hooks"]["createRuntime"][0]["args"][:2] == ["perl", "-e"]
    assert oci_hook.run(ctx, ["--print-hooks", "--form", "curl"]) == 0
    hooks = json.loads(capsys.readouterr().out)["hooks"]
    entry = hooks["createRuntime"][0]
    assert entry["path"] == os.path.realpath(shutil.which("curl"))
    assert entry["args"] == ["curl", "-sS", "--fail-with-body", "--unix-socket", "/run/x/pynet.sock",
                             "--data-binary", "@-", "http://pynet/oci/hooks/createRuntime"]
    assert hooks["poststop"][0]["args"][-1] == "http://pynet/oci/hooks/poststop"
    assert oci_hook.run(ctx, ["--print-hooks", "--form=perl", "--socket", "rel.sock"]) == 0
    entry = json.loads(capsys.readouterr().out)["hooks"]["poststop"][0]
    assert entry["path"] == os.path.realpath(shutil.which("perl"))
    assert entry["args"][:2] == ["perl", "-e"] and entry["args"][3:] == [os.path.abspath("rel.sock"), "poststop"]
    for args, text in ((["--form", "sh"], "curl or perl"), (["--socket"], "needs a value"),
                       (["--bogus"], "unknown flag"), (["--socket", "tcp://x:1"], "UNIX socket")):
        with pytest.raises(CliError, match=text):
            oci_hook.run(ctx, ["--print-hooks", *args])
    old = tmp_path / "curl"
    old.write_text("#!/bin/sh\necho 'curl 7.74.0 (x86_64-pc-linux-gnu)'\n")
    old.chmod(0o755)
    with pytest.raises(CliError, match="7.76 or newer"):
        oci_hook.run(ctx, ["--print-hooks", "--form", "curl", "--program", str(old)])
