"""A small etcd v3 client over etcd's JSON gateway (HTTP, stdlib only).

The `etcd3` package on PyPI is unmaintained and breaks with current
protobuf, and pynet needs five calls: range, put, delete, txn, leases and a
watch.  etcd serves all of them as JSON at /v3/... (3.4+; /v3beta on 3.3),
with keys and values base64-encoded.

Errors: every failure to reach etcd (refused, reset, timeout, 5xx, on every
endpoint given) becomes `Unavailable` naming the endpoints; an answer etcd
refuses (4xx) becomes `Internal`.  Callers never see `OSError` or
`http.client` exceptions.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from netstack.errors import Internal, InvalidParameter, Unavailable
from netstack.faults import etcd_delay
from netstack.http1 import ResponseReader

log = logging.getLogger("pynet.etcd")

DEFAULT_TIMEOUT = 3.0


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def unb64(s: str) -> str:
    return base64.b64decode(s).decode()


def prefix_end(prefix: str) -> str:
    """The range_end that selects every key starting with `prefix`."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return raw.decode()


def parse_endpoints(url: str) -> list[tuple[str, int]]:
    """`etcd://HOST:PORT[,HOST:PORT...]` (Docker's --cluster-store syntax)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != "etcd" or not rest:
        raise InvalidParameter(f"invalid cluster store {url!r}: expected etcd://HOST:PORT[,HOST:PORT...]")
    out = []
    for part in rest.strip("/").split(","):
        host, _, port = part.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidParameter(f"invalid cluster store endpoint {part!r} in {url!r}: expected HOST:PORT")
        out.append((host, int(port)))
    return out


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: str
    create_revision: int
    mod_revision: int
    lease: int = 0


def _kv(d: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=unb64(d["key"]), value=unb64(d.get("value", "")),
        create_revision=int(d.get("create_revision", 0)), mod_revision=int(d.get("mod_revision", 0)),
        lease=int(d.get("lease", 0)),
    )


@dataclass(frozen=True, slots=True)
class Event:
    kind: str                        # "put" | "delete"
    kv: KeyValue


# Txn building blocks, in the gateway's JSON shape.

def cmp_absent(key: str) -> dict[str, Any]:
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}


def cmp_mod(key: str, mod_revision: int) -> dict[str, Any]:
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}


def op_put(key: str, value: str, lease: int = 0) -> dict[str, Any]:
    req: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        req["lease"] = str(lease)
    return {"request_put": req}


def op_delete(key: str, *, prefix: bool = False) -> dict[str, Any]:
    req = {"key": b64(key)}
    if prefix:
        req["range_end"] = b64(prefix_end(key))
    return {"request_delete_range": req}


def op_range(key: str, *, prefix: bool = False) -> dict[str, Any]:
    req = {"key": b64(key)}
    if prefix:
        req["range_end"] = b64(prefix_end(key))
    return {"request_range": req}


def range_request(key: str, *, prefix: bool = False) -> tuple[str, dict[str, Any]]:
    """(path, body) of a read of `key`, or of every key under it."""
    return "/kv/range", op_range(key, prefix=prefix)["request_range"]


def range_answer(answer: dict[str, Any]) -> tuple[list[KeyValue], int]:
    """The keys a range answer holds and the store's revision at that read."""
    return [_kv(d) for d in answer.get("kvs", [])], int(answer["header"]["revision"])


def txn_request(compare: list[dict[str, Any]], success: list[dict[str, Any]],
                failure: list[dict[str, Any]] | None = None) -> tuple[str, dict[str, Any]]:
    """(path, body) of one atomic transaction."""
    return "/kv/txn", {"compare": compare, "success": success, "failure": failure or []}


def txn_answer(answer: dict[str, Any]) -> tuple[bool, list[dict[str, Any]], int]:
    """(succeeded, responses, the store's revision after it)."""
    return (bool(answer.get("succeeded", False)), answer.get("responses", []),
            int(answer.get("header", {}).get("revision", 0)))


def range_kvs(response: dict[str, Any]) -> list[KeyValue]:
    """The keys a txn's `op_range` response holds."""
    return [_kv(d) for d in response.get("response_range", {}).get("kvs", [])]


class _Connection:
    """One keep-alive HTTP/1.1 connection to the gateway.  A request is one
    write (headers and body together: two small writes would wait on each
    other's ACK); the socket sits above FD_SETSIZE, as it lives as long as
    its thread (see kernel/fds.py)."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None
        self.reader: ResponseReader | None = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            self.reader = None

    def send(self, path: str, data: bytes) -> None:
        from netstack.kernel.fds import move_high

        if self.sock is None:
            sock = socket.create_connection((self.host, self.port), self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = move_high(sock)
            self.sock.settimeout(self.timeout)
            self.reader = ResponseReader(self.sock)
        self.sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode() + data)

    def receive(self) -> tuple[int, bytes]:
        if self.reader is None:  # made and dropped with the socket
            raise ConnectionResetError("the connection was closed before the answer came")
        resp = self.reader.read("POST")
        if not resp.keep_alive:
            self.close()
        return resp.status, resp.body


#: a reused keep-alive connection the server closed meanwhile fails this way
#: before etcd saw the request; such a request is sent again on a new one
_STALE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class Pending:
    """A request sent, its answer not yet taken (EtcdClient.send).
    `sent`: the request is on the first endpoint's connection; `reused`:
    that connection served requests before (so a reset means it had gone
    stale, not that etcd is down)."""

    def __init__(self, client: "EtcdClient", path: str, data: bytes, order: list[tuple[str, int]],
                 errors: list[str], *, sent: bool, reused: bool) -> None:
        self.client, self.path, self.data, self.order, self.errors = client, path, data, order, errors
        self.sent, self.reused = sent, reused
        self.sent_at = time.monotonic()

    def answer(self) -> dict[str, Any]:
        """The answer (or Unavailable/Internal, as `EtcdClient.call`);
        when the first endpoint fails, the request goes to the others."""
        if self.client._delay:  # PYNET_ETCD_DELAY_MS: a floor on the round trip, overlapped like a real one
            time.sleep(max(0.0, self.sent_at + self.client._delay - time.monotonic()))
        return self.client._answer(self)


class EtcdClient:
    """Thread-safe: each thread keeps one keep-alive HTTP connection per
    endpoint (a request then costs one round trip, not a TCP handshake
    too); the watch has a connection of its own."""

    def __init__(self, endpoints: list[tuple[str, int]], *, timeout: float = DEFAULT_TIMEOUT,
                 prefix: str = "/v3") -> None:
        if not endpoints:
            raise InvalidParameter("no etcd endpoint given")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.api = prefix
        self._preferred = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._delay = etcd_delay()

    def describe(self) -> str:
        return "etcd://" + ",".join(f"{h}:{p}" for h, p in self.endpoints)

    def _order(self) -> list[tuple[str, int]]:
        with self._lock:
            i = self._preferred
        return self.endpoints[i:] + self.endpoints[:i]

    def _prefer(self, endpoint: tuple[str, int]) -> None:
        with self._lock:
            self._preferred = self.endpoints.index(endpoint)

    def _connections(self) -> dict[tuple[str, int], _Connection]:
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        return conns  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close the calling thread's connections (others close with their thread)."""
        for conn in self._connections().values():
            conn.close()
        self._connections().clear()

    def _connection(self, ep: tuple[str, int]) -> _Connection:
        conns = self._connections()
        conn = conns.get(ep)
        if conn is None:
            conn = conns[ep] = _Connection(ep[0], ep[1], self.timeout)
        return conn

    def _send_on(self, ep: tuple[str, int], path: str, data: bytes) -> bool:
        """Send the request on `ep`'s keep-alive connection; returns whether
        that connection had served requests before.  One the server had
        closed fails before etcd saw anything: it is replaced, and the
        request sent again on the new one."""
        conn = self._connection(ep)
        reused = conn.sock is not None
        try:
            conn.send(self.api + path, data)
        except BaseException as exc:
            conn.close()
            if not (reused and isinstance(exc, _STALE)):
                raise
            return self._send_on(ep, path, data)  # on a new connection: no further retry
        return reused

    def _receive(self, ep: tuple[str, int], path: str, data: bytes, *, reused: bool) -> tuple[int, bytes]:
        """The answer to the request sent on `ep`'s connection (the request
        goes again, on a new connection, if a reused one had gone stale)."""
        conn = self._connection(ep)
        try:
            return conn.receive()
        except BaseException as exc:
            conn.close()
            if not (reused and isinstance(exc, _STALE)):
                raise
        return self._exchange(ep, path, data)

    def _exchange(self, ep: tuple[str, int], path: str, data: bytes) -> tuple[int, bytes]:
        """One request and its answer on `ep`."""
        return self._receive(ep, path, data, reused=self._send_on(ep, path, data))

    def send(self, path: str, body: dict[str, Any]) -> "Pending":
        """Send one gateway request now and take its answer later: the
        caller works on while etcd does.  The same thread must take the
        answer (`Pending.answer`) before it sends anything else, as its
        connection carries one request at a time."""
        data = json.dumps(body).encode()
        order = self._order()
        try:
            reused = self._send_on(order[0], path, data)
        except OSError as exc:  # this endpoint is down: the answer comes from the next
            errors = [f"{order[0][0]}:{order[0][1]}: {exc or type(exc).__name__}"]
            return Pending(self, path, data, order[1:], errors, sent=False, reused=False)
        return Pending(self, path, data, order, [], sent=True, reused=reused)

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST one gateway request, trying each endpoint in turn."""
        return self.send(path, body).answer()

    def _answer(self, pending: "Pending") -> dict[str, Any]:
        path, errors = pending.path, list(pending.errors)
        for i, ep in enumerate(pending.order):
            try:
                if i == 0 and pending.sent:
                    status, raw = self._receive(ep, path, pending.data, reused=pending.reused)
                else:
                    status, raw = self._exchange(ep, path, pending.data)
            except OSError as exc:
                errors.append(f"{ep[0]}:{ep[1]}: {exc or type(exc).__name__}")
                continue
            if status >= 500:
                errors.append(f"{ep[0]}:{ep[1]}: HTTP {status} {raw[:200]!r}")
                continue
            self._prefer(ep)
            try:
                answer = json.loads(raw or b"{}")
            except ValueError as exc:
                raise Internal(f"etcd answered {path} with non-JSON: {raw[:200]!r}") from exc
            if status >= 400 or "error" in answer:
                raise Internal(f"etcd refused {path}: {answer.get('error') or answer.get('message') or raw[:200]!r}")
            return answer
        raise Unavailable(f"cluster store {self.describe()} is unreachable ({'; '.join(errors)})")

    # -- key/value ---------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        kvs = self.call("/kv/range", {"key": b64(key)}).get("kvs", [])
        return _kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` and the store's revision at that read."""
        return range_answer(self.call(*range_request(prefix, prefix=True)))

    def put(self, key: str, value: str, *, lease: int = 0) -> int:
        req: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            req["lease"] = str(lease)
        return int(self.call("/kv/put", req)["header"]["revision"])

    def delete(self, key: str, *, prefix: bool = False) -> int:
        req = {"key": b64(key)}
        if prefix:
            req["range_end"] = b64(prefix_end(key))
        return int(self.call("/kv/deleterange", req).get("deleted", 0))

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
            failure: list[dict[str, Any]] | None = None) -> tuple[bool, list[dict[str, Any]]]:
        """(succeeded, responses) of one atomic transaction."""
        ok, responses, _ = self.txn_rev(compare, success, failure)
        return ok, responses

    def txn_rev(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
                failure: list[dict[str, Any]] | None = None) -> tuple[bool, list[dict[str, Any]], int]:
        """(succeeded, responses, the store's revision after it)."""
        return txn_answer(self.call(*txn_request(compare, success, failure)))

    # -- leases ------------------------------------------------------------

    def lease_grant(self, ttl: int) -> int:
        return int(self.call("/lease/grant", {"TTL": ttl})["ID"])

    def lease_keepalive(self, lease: int) -> int:
        """The lease's new TTL; 0 when it has expired."""
        return int(self.call("/lease/keepalive", {"ID": str(lease)}).get("result", {}).get("TTL", 0))

    def lease_revoke(self, lease: int) -> None:
        self.call("/lease/revoke", {"ID": str(lease)})

    # -- watch -------------------------------------------------------------

    def watch(self, ranges: Sequence[tuple[str, str]], start_revision: int, stop: threading.Event,
              on_open: Callable[[Callable[[], None]], None] | None = None) -> Iterator[list[Event]]:
        """Batches of events in `ranges` ((key, range_end) each; range_end
        "" for the key alone), from `start_revision` on, until `stop` is
        set or the stream breaks (then Unavailable).  All ranges share one
        stream: the gateway takes one create request per line.  `on_open`
        gets a function that aborts the stream from another thread."""
        body = "\n".join(json.dumps({"create_request": {
            "key": b64(key), **({"range_end": b64(end)} if end else {}), "start_revision": str(start_revision),
        }}) for key, end in ranges).encode()
        for ep in self._order():
            conn = http.client.HTTPConnection(ep[0], ep[1], timeout=self.timeout)
            try:
                conn.request("POST", self.api + "/watch", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                log.debug("watch on %s:%s failed: %s", ep[0], ep[1], exc)
                continue
            break
        else:
            raise Unavailable(f"cluster store {self.describe()} is unreachable (watch)")
        sock = conn.sock
        assert sock is not None
        sock.settimeout(None)  # events may be minutes apart; liveness comes from the lease keepalive

        def abort() -> None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        if on_open is not None:
            on_open(abort)
        try:
            while not stop.is_set():
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    raise Unavailable(f"watch on {self.describe()} broke: {exc}") from exc
                if not line:
                    raise Unavailable(f"watch on {self.describe()} closed by etcd")
                line = line.strip()
                if not line:
                    continue
                result = json.loads(line).get("result", {})
                if result.get("canceled") or result.get("compact_revision"):
                    raise Unavailable(f"watch on {self.describe()} cancelled: {result.get('cancel_reason', 'compacted')}")
                events = [
                    Event("delete" if e.get("type") == "DELETE" else "put", _kv(e["kv"]))
                    for e in result.get("events", [])
                ]
                if events:
                    yield events
        finally:
            abort()
            conn.close()
