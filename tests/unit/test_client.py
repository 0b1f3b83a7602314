"""netstack.api.client against a fake pynetd on a temporary UNIX socket.

``FakeDaemon`` is shared with test_cli.py: a tiny http.server on AF_UNIX in a
thread that records each request and answers with canned Docker-shaped JSON.
"""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import tempfile
import threading
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from netstack import errors
from netstack.api import client as client_mod
from netstack.api.client import Client, DaemonUnreachable

Answer = tuple[int, Any]


class Request:
    def __init__(self, method: str, path: str, query: dict[str, list[str]], body: Any, headers: dict[str, str]):
        self.method, self.path, self.query, self.body, self.headers = method, path, query, body, headers

    @property
    def filters(self) -> Any:
        return json.loads(self.query["filters"][0]) if "filters" in self.query else None

    def __repr__(self) -> str:
        return f"Request({self.method} {self.path} {self.query} {self.body})"


class FakeDaemon:
    """Routes are ``(METHOD, path without /v1.44)`` -> (status, JSON body) or a
    callable taking the Request.  Unrouted requests get Docker's 404."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="pynet-fake-")
        self.path = os.path.join(self.dir, "pynet.sock")
        self.host = "unix://" + self.path
        self.routes: dict[tuple[str, str], Answer | Callable[[Request], Answer]] = {}
        self.requests: list[Request] = []
        self.connections = 0
        self.chunked = False
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                fake.connections += 1

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                url = urlsplit(self.path)
                path = unquote(url.path)
                if path.startswith("/v1."):
                    path = "/" + path.split("/", 2)[2]
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                req = Request(
                    self.command, path, parse_qs(url.query), json.loads(raw) if raw else None, dict(self.headers)
                )
                fake.requests.append(req)
                answer = fake.routes.get((self.command, path))
                if answer is None:
                    answer = (404, {"message": f"page not found: {self.command} {path}"})
                elif callable(answer):
                    answer = answer(req)
                status, body = answer
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Api-Version", "1.44")
                if status != 204:
                    self.send_header("Content-Type", "application/json")
                    if fake.chunked:
                        self.send_header("Transfer-Encoding", "chunked")
                    else:
                        self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if status == 204:
                    return
                if fake.chunked:
                    half = len(data) // 2
                    for part in (data[:half], data[half:]):
                        if part:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_HEAD = _serve

        class Server(socketserver.ThreadingUnixStreamServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up mid-request is not a test failure

        self.server = Server(self.path, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> FakeDaemon:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
        os.unlink(self.path)
        os.rmdir(self.dir)

    @property
    def last(self) -> Request:
        return self.requests[-1]


@pytest.fixture
def daemon() -> Any:
    with FakeDaemon() as fake:
        yield fake


def test_networks_sends_versioned_path_and_json_filters(daemon: FakeDaemon) -> None:
    daemon.routes[("GET", "/networks")] = (200, [{"Name": "n1", "Id": "a" * 64}])
    with Client(daemon.host) as c:
        nets = c.networks({"name": ["n1"], "label": ["a=b"]})
    assert nets == [{"Name": "n1", "Id": "a" * 64}]
    assert daemon.last.method == "GET"
    assert daemon.last.filters == {"name": ["n1"], "label": ["a=b"]}


def test_keep_alive_uses_one_connection(daemon: FakeDaemon) -> None:
    daemon.routes[("GET", "/_ping")] = (200, "OK")
    daemon.routes[("GET", "/version")] = (200, {"Version": "0.1.0", "ApiVersion": "1.44"})
    with Client(daemon.host) as c:
        c.ping()
        assert c.version()["ApiVersion"] == "1.44"
        c.ping()
    assert daemon.connections == 1
    assert [r.path for r in daemon.requests] == ["/_ping", "/version", "/_ping"]


def test_chunked_responses_are_decoded(daemon: FakeDaemon) -> None:
    daemon.chunked = True
    payload = [{"Name": f"net{i}", "Labels": {"k": "é<>"}} for i in range(50)]
    daemon.routes[("GET", "/networks")] = (200, payload)
    with Client(daemon.host) as c:
        assert c.networks() == payload
        assert c.networks() == payload
    assert daemon.connections == 1


def test_bodies_and_paths_of_each_call(daemon: FakeDaemon) -> None:
    daemon.routes[("POST", "/networks/create")] = (201, {"Id": "f" * 64, "Warning": ""})
    daemon.routes[("DELETE", "/networks/my net")] = (204, None)
    daemon.routes[("POST", "/networks/prune")] = (200, {"NetworksDeleted": ["x"]})
    daemon.routes[("POST", "/networks/n/connect")] = (200, None)
    daemon.routes[("POST", "/networks/n/disconnect")] = (200, None)
    daemon.routes[("GET", "/networks/n")] = (200, {"Name": "n"})
    daemon.routes[("DELETE", "/sandboxes/box")] = (204, None)
    daemon.routes[("GET", "/sandboxes/box")] = (200, {"Name": "box"})
    daemon.routes[("POST", "/sandboxes/create")] = (201, {"Id": "b" * 64, "Warnings": []})
    daemon.routes[("GET", "/sandboxes")] = (200, [])
    with Client(daemon.host) as c:
        assert c.network_create({"Name": "n", "Internal": True})["Id"] == "f" * 64
        assert daemon.last.body == {"Name": "n", "Internal": True}
        assert daemon.last.headers["Content-Type"] == "application/json"
        assert c.network_remove("my net") is None
        assert c.networks_prune({"until": ["1h"]}) == {"NetworksDeleted": ["x"]}
        assert daemon.last.filters == {"until": ["1h"]}
        c.network_connect("n", {"Container": "box"})
        assert daemon.last.body == {"Container": "box"}
        c.network_disconnect("n", {"Container": "box", "Force": True})
        assert daemon.last.body == {"Container": "box", "Force": True}
        c.network_inspect("n", verbose=True)
        assert daemon.last.query == {"verbose": ["true"]}
        c.sandbox_remove("box", force=True)
        assert daemon.last.query == {"force": ["1"]}
        assert c.sandbox_inspect("box") == {"Name": "box"}
        assert c.sandbox_create({"Name": "box"})["Id"] == "b" * 64
        assert c.sandboxes() == []
    assert daemon.connections == 1


@pytest.mark.parametrize(
    "status, kind",
    [
        (400, errors.InvalidParameter),
        (403, errors.Forbidden),
        (404, errors.NotFound),
        (409, errors.Conflict),
        (500, errors.Internal),
        (503, errors.Unavailable),
    ],
)
def test_error_status_maps_to_kind(daemon: FakeDaemon, status: int, kind: type, ) -> None:
    daemon.routes[("POST", "/networks/create")] = (status, {"message": "network with name x already exists"})
    with Client(daemon.host) as c, pytest.raises(kind) as info:
        c.network_create({"Name": "x"})
    assert info.value.message == "network with name x already exists"
    assert not isinstance(info.value, DaemonUnreachable)


def test_missing_socket_is_unavailable(tmp_path: Any) -> None:
    host = f"unix://{tmp_path}/nope.sock"
    with Client(host) as c, pytest.raises(errors.Unavailable) as info:
        c.networks()
    assert str(info.value) == f"Cannot connect to the pynet daemon at {host}. Is pynetd running?"


def test_refused_connection_is_unavailable(tmp_path: Any) -> None:
    import socket

    path = str(tmp_path / "dead.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # the file exists, nobody listens
    with Client("unix://" + path) as c, pytest.raises(DaemonUnreachable):
        c.ping()


def test_host_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNET_HOST", "unix:///tmp/x.sock")
    assert Client().path == "/tmp/x.sock"
    monkeypatch.delenv("PYNET_HOST")
    assert Client().host == "unix:///run/pynet/pynet.sock"


def test_tcp_host_is_refused() -> None:
    with pytest.raises(errors.InvalidParameter):
        Client("tcp://127.0.0.1:2375")


def test_reconnects_when_daemon_closed_idle_connection(daemon: FakeDaemon) -> None:
    daemon.routes[("GET", "/_ping")] = (200, "OK")
    with Client(daemon.host) as c:
        c.ping()
        assert c._conn is not None
        c._conn.sock.shutdown(0)  # looks like the daemon closed it
        c._conn.buf = b""
        assert c.ping() == "OK"


@pytest.mark.parametrize(
    "value",
    [{"a": [1, 2.5, "x\"é\n", None, True, False]}, [], {}, "", {"nested": {"k": {"v": [[]]}}}],
)
def test_json_round_trip(value: Any) -> None:
    assert client_mod.loads(client_mod.dumps(value)) == value
    assert json.loads(client_mod.dumps(value)) == value


def test_loads_rejects_trailing_garbage() -> None:
    with pytest.raises(ValueError):
        client_mod.loads('{"a": 1} x')
    with pytest.raises(ValueError):
        client_mod.loads("{")


def test_quote() -> None:
    assert client_mod.quote('{"name":["a b"]}') == "%7B%22name%22%3A%5B%22a%20b%22%5D%7D"
    assert client_mod.quote("é") == "%C3%A9"
