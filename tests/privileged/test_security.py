"""Security: who may talk to pynetd, and what a container cannot reach.

- the UNIX socket is 0660 and owned by `--group`: a user in that group is
  served, a user outside it is refused (a throwaway group and user, made
  with groupadd/useradd and removed afterwards; the client runs with
  setpriv under their uid);
- TCP only with mutual TLS: pynetd refuses a tcp:// -H without the TLS
  flags; with them, a client without a certificate (or with one from
  another CA) is refused, docker-py with a TLS config works (certificates
  made here with the openssl CLI);
- names of another network never resolve (every sandbox name asked from
  every sandbox, through 127.0.0.11).

Covered elsewhere and not repeated here (see docs/reliability.md):
127.0.0.1-published ports unreachable from another host namespace
(test_sandboxes.py::test_published_ports_from_outside_localhost_and_hairpin),
an internal network with a crafted default route
(test_sandboxes.py::test_outbound_nat_uses_host_address_and_internal_has_no_way_out),
DNS scoping and internal networks (test_sandbox_dns.py).
"""

from __future__ import annotations

import os
import secrets
import socket
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from netstack import invariants
from netstack.testing.hosts import Daemon
from tests.conftest import need_tool

pytestmark = pytest.mark.privileged

PING = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("denied"); sys.exit(3)
s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
print(s.recv(200).split(b"\r\n")[0].decode())
"""


@pytest.fixture
def throwaway():
    """A group and a user outside it, removed afterwards, pass or fail."""
    need_tool("groupadd", "useradd", "userdel", "groupdel", "setpriv")
    tag = secrets.token_hex(3)
    group, user = f"pynetg{tag}", f"pynetu{tag}"
    subprocess.run(["groupadd", group], check=True)
    try:
        subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", user], check=True)
        try:
            yield group, user
        finally:
            subprocess.run(["userdel", user], check=False)
    finally:
        subprocess.run(["groupdel", group], check=False)


def as_user(user: str, groups: list[str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    import grp
    import pwd

    pw = pwd.getpwnam(user)
    gids = ",".join(str(grp.getgrnam(g).gr_gid) for g in groups)
    cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}"]
    cmd += [f"--groups={gids}"] if gids else ["--clear-groups"]
    return subprocess.run(cmd + argv, capture_output=True, text=True, timeout=30)


def test_socket_is_0660_owned_by_group_and_refuses_other_users(host, throwaway):
    import grp

    group, user = throwaway
    d = Daemon(host, extra_args=["--group", group])
    try:
        d.start()
        os.chmod(d.root, 0o711)  # let the throwaway user reach the socket's directory
        st = os.stat(d.socket)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == grp.getgrnam(group).gr_gid and st.st_uid == 0
        python = "/usr/bin/python3"  # readable by any user, unlike the venv's interpreter
        outside = as_user(user, [], [python, "-c", PING, d.socket])
        assert outside.returncode == 3 and "denied" in outside.stdout, outside.stdout + outside.stderr
        inside = as_user(user, [group], [python, "-c", PING, d.socket])
        assert inside.returncode == 0 and "200" in inside.stdout, inside.stdout + inside.stderr
    finally:
        d.close()


def test_unknown_group_is_refused_at_start(host):
    d = Daemon(host, extra_args=["--group", f"nosuchgroup{secrets.token_hex(3)}"])
    try:
        with pytest.raises(RuntimeError, match="unknown group"):
            d.start(timeout=30)
    finally:
        d.close()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(dir: Path, name: str) -> None:
    """CA `name`-ca, a server certificate for 127.0.0.1 and a client
    certificate, all signed by that CA."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}-ca",
             "-keyout", f"{name}-ca.key", "-out", f"{name}-ca.pem", cwd=dir)
    for who, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
                     ("client", "extendedKeyUsage=clientAuth")):
        (dir / f"{name}-{who}.ext").write_text(ext + "\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}-{who}",
                 "-keyout", f"{name}-{who}.key", "-out", f"{name}-{who}.csr", cwd=dir)
        _openssl("x509", "-req", "-in", f"{name}-{who}.csr", "-CA", f"{name}-ca.pem", "-CAkey", f"{name}-ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}-{who}.ext", "-out", f"{name}-{who}.pem",
                 cwd=dir)


def test_tcp_listener_needs_mutual_tls(host, tmp_path):
    need_tool("openssl")
    bare = Daemon(host, extra_args=["-H", "tcp://127.0.0.1:2376"])
    try:
        with pytest.raises(RuntimeError, match="without mutual TLS"):
            bare.start(timeout=30)
    finally:
        bare.close()


def _tls_ping(host, tmp: Path, cert: str | None, ca: str = "pki-ca.pem") -> str:
    """A TLS client inside `host` (its socket made there); returns the status line or the error."""
    from netstack.kernel.netns import run_in_netns

    ctx = ssl.create_default_context(cafile=str(tmp / ca))
    if cert:
        ctx.load_cert_chain(str(tmp / f"{cert}.pem"), str(tmp / f"{cert}.key"))
    raw = run_in_netns(host.path, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    raw.settimeout(10)
    try:
        raw.connect(("127.0.0.1", 2376))
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = s.recv(200)
            if not data:
                return "closed"
            return data.split(b"\r\n")[0].decode()
    except (ssl.SSLError, OSError) as exc:
        return f"refused: {exc}"
    finally:
        raw.close()


def test_mutual_tls_refuses_clients_without_a_good_certificate_and_serves_docker_py(host, tmp_path):
    need_tool("openssl", "nsenter")
    make_pki(tmp_path, "pki")
    make_pki(tmp_path, "evil")
    d = Daemon(host, extra_args=[
        "-H", "tcp://127.0.0.1:2376", "--tlsverify", "--tlscacert", str(tmp_path / "pki-ca.pem"),
        "--tlscert", str(tmp_path / "pki-server.pem"), "--tlskey", str(tmp_path / "pki-server.key")])
    try:
        d.start()
        assert _tls_ping(host, tmp_path, "pki-client") == "HTTP/1.1 200 OK"
        assert not _tls_ping(host, tmp_path, None).startswith("HTTP/")         # no certificate
        assert not _tls_ping(host, tmp_path, "evil-client").startswith("HTTP/")  # another CA's
        script = f"""
import docker, sys
tls = docker.tls.TLSConfig(client_cert=("{tmp_path}/pki-client.pem", "{tmp_path}/pki-client.key"),
                           ca_cert="{tmp_path}/pki-ca.pem", verify=True)
c = docker.DockerClient(base_url="https://127.0.0.1:2376", tls=tls, version="1.44")
n = c.networks.create("tlsnet", driver="bridge")
print(sorted(x.name for x in c.networks.list()))
n.remove()
"""
        # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE override the CA docker-py gives it.
        env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
        out = subprocess.run(host.nsenter([sys.executable, "-c", script]), capture_output=True, text=True,
                             timeout=60, env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "tlsnet" in out.stdout
        # Plain HTTP on the TLS port gets nothing useful either.
        from netstack.kernel.netns import run_in_netns

        raw = run_in_netns(host.path, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        raw.settimeout(10)
        try:
            raw.connect(("127.0.0.1", 2376))
            raw.sendall(b"GET /networks HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"tlsnet" not in raw.recv(500) and b"bridge" not in raw.recv(500)
        except OSError:
            pass
        finally:
            raw.close()
    finally:
        d.close()


def test_no_name_of_another_network_ever_resolves(host):
    """Three networks, sandboxes on one, two or none of them in common;
    every sandbox asks for every sandbox name (and NAME.NETWORK of every
    network): the checker demands exactly the shared ones."""
    from netstack.invariants import _query

    d = Daemon(host, extra_args=["--dns-upstream", "127.0.0.1:9"])
    try:
        d.start()
        c = d.client()
        for i, n in enumerate(("red", "green", "blue")):
            c.network_create({"Name": n, "Internal": n == "blue", "IPAM": {"Config": [{"Subnet": f"10.93.{i}.0/24"}]}})
        layout = {"r1": ["red"], "r2": ["red"], "g1": ["green"], "rg": ["red", "green"], "b1": ["blue"],
                  "bg": ["blue", "green"]}
        for name, nets in layout.items():
            c.sandbox_create({"Name": name, "Networks": [{"Network": n, "Aliases": [f"{name}-alias"]} for n in nets]})
        assert invariants.check(d.data_root, d.exec_root, host.path) == []
        sbs = {s["Name"]: s for s in c.sandboxes()}
        for asker, nets in layout.items():
            key = sbs[asker]["Key"]
            for other, other_nets in layout.items():
                shared = set(nets) & set(other_nets)
                for net in ("red", "green", "blue"):
                    got = _query(key, f"{other}-alias.{net}")
                    want = {sbs[other]["Networks"][net]["IPAddress"]} if net in shared else set()
                    assert got == want, (asker, other, net, got)
    finally:
        d.close()
