"""HTTP client for pynetd's Docker-compatible Engine API over a UNIX socket.

It speaks just enough HTTP/1.1 (Content-Length and chunked bodies,
keep-alive on one connection per Client) on a raw ``_socket`` and decodes
JSON with the C scanner of ``_json``.  Why not ``http.client``, ``socket``
and ``json``: the CLI's start-up time is a goal (``pynet network ls`` must
be no slower than ``docker network ls``), and those three pull in ``re``,
``enum`` and ``email``, which on a small machine cost more than the whole
interpreter start.  The client imports nothing but builtins,
``netstack.errors`` and ``netstack.http1`` (the response reader it shares
with the etcd client).

Errors: a non-2xx answer becomes the ``netstack.errors`` kind matching its
status (``from_status``); a daemon that cannot be reached becomes
``Unavailable`` with one line naming the socket.
"""

from __future__ import annotations

import _socket

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings anyway
    from typing import Any

from netstack import errors
from netstack.http1 import Response, ResponseReader

API_VERSION = "1.44"
DEFAULT_HOST = "unix:///run/pynet/pynet.sock"

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class DaemonUnreachable(errors.Unavailable):
    """The daemon could not be reached at all (as opposed to a 503 it sent)."""


def default_host() -> str:
    import os

    return os.environ.get("PYNET_HOST") or DEFAULT_HOST


def quote(text: str) -> str:
    """Percent-encode everything but RFC 3986 unreserved characters."""
    return "".join(chr(b) if b in _SAFE else "%%%02X" % b for b in text.encode())


# --- JSON without the json package (it imports re) ---------------------------

try:
    import _json

    class _ScanContext:
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = float
        memo: dict[str, Any] = {}

    _scan = _json.make_scanner(_ScanContext())
    _encode_str = _json.encode_basestring_ascii

    def loads(text: str) -> Any:
        """Decode one JSON document (what ``json.loads`` does, without ``re``)."""
        start = _skip_ws(text, 0)
        try:
            value, end = _scan(text, start)
        except (StopIteration, ValueError, SystemError):
            # The C scanner reports some errors through json.decoder, which
            # is not imported here; it then fails with SystemError.
            raise ValueError(f"invalid JSON at offset {start}") from None
        if _skip_ws(text, end) != len(text):
            raise ValueError(f"extra data after JSON at offset {end}")
        return value

except ImportError:  # pragma: no cover - interpreters without the C accelerator
    import json as _jsonmod

    loads = _jsonmod.loads

    def _encode_str(text: str) -> str:
        return _jsonmod.dumps(text)


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in " \t\r\n":
        i += 1
    return i


def dumps(obj: Any) -> str:
    """Compact JSON for request bodies (dict, list, str, int, float, bool, None)."""
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, str):
        return _encode_str(obj)
    if isinstance(obj, (int, float)):
        return repr(obj)
    if isinstance(obj, dict):
        return "{" + ",".join(_encode_str(str(k)) + ":" + dumps(v) for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in obj) + "]"
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


# --- HTTP/1.1 ----------------------------------------------------------------


class _Conn:
    """One keep-alive connection; reads are buffered across responses."""

    def __init__(self, path: str) -> None:
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise
        self.reader = ResponseReader(self.sock)
        self.used = False

    def close(self) -> None:
        self.sock.close()

    def roundtrip(self, head: bytes, body: bytes, method: str) -> Response:
        """Send one request; return the response (its keep_alive: whether
        the connection may be reused)."""
        self.sock.sendall(head + body)
        self.used = True
        return self.reader.read(method)


class Client:
    """The Engine API as Python calls; every method returns parsed JSON."""

    def __init__(self, host: str | None = None) -> None:
        self.host = host or default_host()
        if not self.host.startswith("unix://"):
            raise errors.InvalidParameter(
                f"unsupported daemon host {self.host!r}: pynet listens on unix:///PATH only"
            )
        self.path = self.host[len("unix://") :]
        self._conn: _Conn | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport --

    def _connect(self) -> _Conn:
        try:
            return _Conn(self.path)
        except PermissionError:
            raise DaemonUnreachable(
                f"permission denied while trying to connect to the pynet daemon socket at {self.host}"
            ) from None
        except OSError:
            raise DaemonUnreachable(
                f"Cannot connect to the pynet daemon at {self.host}. Is pynetd running?"
            ) from None

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        """Send one API call; return the decoded body (None when empty)."""
        target = f"/v{API_VERSION}{path}"
        if query:
            target += "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in query.items())
        payload = b"" if body is None else dumps(body).encode()
        head = f"{method} {target} HTTP/1.1\r\nHost: pynet\r\nUser-Agent: pynet-cli\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        if body is not None or method in ("POST", "PUT"):
            head += f"Content-Length: {len(payload)}\r\n"
        resp = self._send((head + "\r\n").encode("latin-1"), payload, method)
        return self._decode(resp)

    def _send(self, head: bytes, payload: bytes, method: str) -> Response:
        for attempt in (0, 1):
            conn = self._conn
            reused = conn is not None and conn.used
            if conn is None:
                conn = self._conn = self._connect()
            try:
                resp = conn.roundtrip(head, payload, method)
            except (ConnectionError, OSError) as exc:
                self.close()
                # A kept-alive connection the daemon closed meanwhile: retry once on a fresh one.
                if reused and attempt == 0:
                    continue
                raise DaemonUnreachable(
                    f"Cannot connect to the pynet daemon at {self.host}. Is pynetd running? ({exc})"
                ) from None
            if not resp.keep_alive:
                self.close()
            return resp
        raise AssertionError("unreachable")

    @staticmethod
    def _decode(resp: Response) -> Any:
        text = resp.body.decode("utf-8", "replace")
        value: Any = None
        if text.strip():
            if "json" in resp.headers.get("content-type", "json"):
                try:
                    value = loads(text)
                except ValueError:
                    value = text
            else:
                value = text
        if 200 <= resp.status < 300:
            return value
        if isinstance(value, dict) and "message" in value:
            message = str(value["message"])
        else:
            message = (text.strip() or f"HTTP {resp.status}")
        raise errors.from_status(resp.status, message)

    @staticmethod
    def _filters(filters: dict[str, Any] | None) -> dict[str, str] | None:
        return {"filters": dumps(filters)} if filters else None

    # -- system --

    def ping(self) -> Any:
        return self.request("GET", "/_ping")

    def version(self) -> Any:
        return self.request("GET", "/version")

    def system_repair(self) -> Any:
        return self.request("POST", "/system/repair")

    # -- networks --

    def networks(self, filters: dict[str, Any] | None = None) -> Any:
        return self.request("GET", "/networks", self._filters(filters))

    def network_create(self, body: dict[str, Any]) -> Any:
        return self.request("POST", "/networks/create", body=body)

    def network_inspect(self, id_or_name: str, verbose: bool = False) -> Any:
        query = {"verbose": "true"} if verbose else None
        return self.request("GET", f"/networks/{quote(id_or_name)}", query)

    def network_remove(self, id_or_name: str) -> Any:
        return self.request("DELETE", f"/networks/{quote(id_or_name)}")

    def networks_prune(self, filters: dict[str, Any] | None = None) -> Any:
        return self.request("POST", "/networks/prune", self._filters(filters))

    def network_connect(self, net: str, body: dict[str, Any]) -> Any:
        return self.request("POST", f"/networks/{quote(net)}/connect", body=body)

    def network_disconnect(self, net: str, body: dict[str, Any]) -> Any:
        return self.request("POST", f"/networks/{quote(net)}/disconnect", body=body)

    # -- sandboxes --

    def sandboxes(self, filters: dict[str, Any] | None = None) -> Any:
        return self.request("GET", "/sandboxes", self._filters(filters))

    def sandbox_create(self, body: dict[str, Any]) -> Any:
        return self.request("POST", "/sandboxes/create", body=body)

    def sandbox_inspect(self, id_or_name: str) -> Any:
        return self.request("GET", f"/sandboxes/{quote(id_or_name)}")

    def sandbox_remove(self, id_or_name: str, force: bool = False) -> Any:
        query = {"force": "1"} if force else None
        return self.request("DELETE", f"/sandboxes/{quote(id_or_name)}", query)
