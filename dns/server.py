"""DnsServer: one thread serving the embedded resolver of every sandbox.

Threading model.  One dedicated thread ("pynet-dns") owns an epoll set with
every socket the server uses: each sandbox's UDP socket and TCP listener,
accepted TCP connections, one UDP socket per query in flight to an
upstream, and an eventfd that other threads write to hand it work.  Nothing
in that thread ever blocks: all sockets are non-blocking, upstreams are
awaited through epoll with deadlines, and TCP clients are buffered, so a
slow or hostile client or a dead upstream cannot stall anyone else.  The one
exception, forwarding a TCP client's query over TCP, runs in a small thread
pool whose results come back through the eventfd.  ``add_sandbox`` and
``remove_sandbox`` are called from the daemon's event loop; they queue a
command for the serving thread and wait for it, so only that thread ever
touches its maps or closes a socket it might be polling.

The hot path.  Each sandbox has a response cache keyed by the query bytes
after the 2-byte id (so the question's case, the flags and EDNS are all in
the key) whose value is the prebuilt response after the id, or a cycle of
the prebuilt round-robin rotations.  A UDP socket that epoll reports ready
is drained with recvfrom until EAGAIN, and a cache hit costs one dict lookup
and ``sendto(id + cached)``.  The cache is dropped when the backend's
generation moves (checked per packet: one int compare) and is bounded per
sandbox, so memory per sandbox is constant beyond its sockets.  Misses go
through ``Resolver.answer`` in the same thread.

Robustness.  Every event is handled under a catch-all that counts the
error and carries on: no packet can stop the thread.
"""

from __future__ import annotations

import collections
import concurrent.futures
import errno
import itertools
import logging
import os
import secrets
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from dnslib import RCODE

from netstack.dns.backend import NameBackend
from netstack.dns.resolvconf import EMBEDDED_ADDRESS, host_upstreams
from netstack.dns.resolver import Answer, Forward, Resolver, question_key
from netstack.kernel.netns import run_in_netns

__all__ = ["DnsServer", "bind_sandbox_sockets", "open_sandbox_sockets"]

log = logging.getLogger(__name__)

_UDP, _LISTEN, _CONN, _UPSTREAM, _WAKE = range(5)
_RECV_SIZE = 4096  # a query never needs more; longer datagrams arrive cut and get FORMERR
_DRAIN_BUDGET = 256  # packets per socket per turn, so one busy sandbox cannot starve others
_TCP_OUT_LIMIT = 256 * 1024  # a client that stops reading its answers is dropped
_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_BAD = select.EPOLLERR | select.EPOLLHUP


def open_sandbox_sockets(netns_path: str, address: str = EMBEDDED_ADDRESS
                         ) -> tuple[socket.socket, socket.socket, int, int]:
    """Create, inside the namespace at `netns_path`, a UDP socket and a
    listening TCP socket bound to `address` on kernel-chosen ports.  Returns
    (udp_sock, tcp_sock, udp_port, tcp_port); the daemon then DNATs port 53
    to these ports in that namespace (so a container process can still bind
    0.0.0.0:53 itself) and hands the sockets to ``DnsServer.add_sandbox``.
    The namespace's ``lo`` must be up (the controller brings it up)."""
    return run_in_netns(netns_path, lambda: bind_sandbox_sockets(address))


def bind_sandbox_sockets(address: str = EMBEDDED_ADDRESS, ports: tuple[int, int] | None = None
                         ) -> tuple[socket.socket, socket.socket, int, int]:
    """open_sandbox_sockets in the calling thread's namespace.  `ports`:
    (udp, tcp) to take if both are free -- the ones an earlier listener of
    this sandbox had, which its redirect rules still name -- else
    kernel-chosen ones."""
    if ports:
        try:
            return bind_pair(address, *ports)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            # taken meanwhile (by a process in the container): fresh ports
    return bind_pair(address, 0, 0)


def bind_pair(address: str, udp_port: int, tcp_port: int) -> tuple[socket.socket, socket.socket, int, int]:
    """A UDP socket and a listening TCP socket on `address` (port 0: the
    kernel chooses), with their ports; both closed if either fails."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        udp.bind((address, udp_port))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((address, tcp_port))
        tcp.listen(64)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return udp, tcp, udp.getsockname()[1], tcp.getsockname()[1]


# -- per-socket state, all owned by the serving thread ----------------------

@dataclass(eq=False, slots=True)
class _Sandbox:
    sandbox_id: str
    udp: "_Udp"
    listener: "_Listener"
    conns: set["_Conn"] = field(default_factory=set)
    closed: bool = False


@dataclass(eq=False, slots=True)
class _Udp:
    sandbox: _Sandbox | None
    sock: socket.socket
    kind: int = _UDP
    cache: dict[bytes, bytes | Iterator[bytes]] = field(default_factory=dict)
    cache_bytes: int = 0
    gen: int = -1


@dataclass(eq=False, slots=True)
class _Listener:
    sandbox: _Sandbox | None
    sock: socket.socket
    kind: int = _LISTEN


@dataclass(eq=False, slots=True)
class _Conn:
    sandbox: _Sandbox
    sock: socket.socket
    last: float
    kind: int = _CONN
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    forwards: int = 0
    closed: bool = False


@dataclass(eq=False, slots=True)
class _Pending:
    """One client query forwarded over UDP, across its upstream attempts."""
    client: _Udp
    addr: object
    query: bytes  # the client's packet, its own id included
    question: bytes  # lowercased question section, to match the reply
    kind: int = _UPSTREAM
    attempt: int = -1
    sock: socket.socket | None = None
    txid: bytes = b""
    done: bool = False


class DnsServer:
    """The embedded resolver of every sandbox, served by one thread."""

    def __init__(self, backend: NameBackend, *, upstreams: list[tuple[str, int]] | None = None,
                 forward_timeout: float = 2.0, max_inflight: int = 1024,
                 tcp_idle_timeout: float = 5.0, max_tcp_per_sandbox: int = 16,
                 cache_entries: int = 256, cache_bytes: int = 128 * 1024) -> None:
        self.backend = backend
        self.resolver = Resolver(backend)
        self.upstreams = host_upstreams() if upstreams is None else list(upstreams)
        self.forward_timeout = forward_timeout
        self.max_inflight = max_inflight
        self.tcp_idle_timeout = tcp_idle_timeout
        self.max_tcp_per_sandbox = max_tcp_per_sandbox
        self.cache_entries = cache_entries
        self.cache_bytes = cache_bytes
        self.counters = collections.Counter[str]()
        self._sandboxes: dict[str, _Sandbox] = {}
        self._fds: dict[int, object] = {}
        self._epoll: select.epoll | None = None
        self._wake_fd = -1
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._commands: collections.deque[tuple[Callable[[], None], threading.Event]] = collections.deque()
        self._completions: collections.deque[tuple[_Conn, bytes, bytes]] = collections.deque()
        self._timeouts: collections.deque[tuple[float, _Pending, int]] = collections.deque()
        self._inflight = 0
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._next_housekeeping = 0.0

    # -- lifecycle (daemon) -------------------------------------------------

    def start(self) -> None:
        """Start the serving thread; sandboxes added before are served too."""
        if self._thread is not None:
            return
        self._epoll = select.epoll()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake_fd, _IN)
        self._fds[self._wake_fd] = _WAKE
        self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="pynet-dns-tcpfwd")
        self._stopping = False
        for sb in self._sandboxes.values():
            self._register_sandbox(sb)
        self._thread = threading.Thread(target=self._run, name="pynet-dns", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close every socket the server owns, including
        the sandboxes' (their ownership passed to add_sandbox)."""
        if self._thread is None:
            return
        self._stopping = True
        os.eventfd_write(self._wake_fd, 1)
        self._thread.join()
        self._thread = None
        assert self._pool is not None and self._epoll is not None
        self._pool.shutdown(wait=True, cancel_futures=True)
        for sb in list(self._sandboxes.values()):
            self._close_sandbox(sb)
        self._sandboxes.clear()
        for obj in list(self._fds.values()):
            if isinstance(obj, _Pending):
                self._finish(obj)
        self._fds.clear()
        self._timeouts.clear()
        self._epoll.close()
        os.close(self._wake_fd)

    def add_sandbox(self, sandbox_id: str, udp_sock: socket.socket, tcp_sock: socket.socket) -> None:
        """Serve `sandbox_id` on these sockets (a bound UDP socket and a
        listening TCP socket; the server owns them from now on).  Replaces
        the sandbox's previous sockets, if any."""
        def do() -> None:
            old = self._sandboxes.pop(sandbox_id, None)
            if old is not None:
                self._close_sandbox(old)
            sb = _Sandbox(sandbox_id, _Udp(None, udp_sock), _Listener(None, tcp_sock))
            sb.udp.sandbox = sb
            sb.listener.sandbox = sb
            udp_sock.setblocking(False)
            tcp_sock.setblocking(False)
            try:
                udp_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            except OSError:
                pass
            self._sandboxes[sandbox_id] = sb
            if self._epoll is not None:
                self._register_sandbox(sb)
        self._call(do)

    def remove_sandbox(self, sandbox_id: str) -> None:
        """Stop serving `sandbox_id` and close its sockets; tolerates absence."""
        def do() -> None:
            sb = self._sandboxes.pop(sandbox_id, None)
            if sb is not None:
                self._close_sandbox(sb)
        self._call(do)

    def stats(self) -> dict[str, float]:
        """Counters (queries, cache hits, misses, forwarded, errors, …) and
        the serving thread's CPU time in seconds.  Read by the serving
        thread itself, between two batches: a batch adds its counts only
        after its last answer is sent, which a client may already hold."""
        out: dict[str, float] = {}

        def snapshot() -> None:
            out.update(self.counters)
            out["sandboxes"] = len(self._sandboxes)
            out["inflight"] = self._inflight

        self._call(snapshot)
        thread = self._thread
        if thread is not None and thread.ident is not None:
            try:
                out["cpu_seconds"] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
            except OSError:
                pass
        return out

    def _call(self, fn: Callable[[], None]) -> None:
        """Run fn in the serving thread (or here when it is not running)."""
        if self._thread is None or threading.current_thread() is self._thread:
            fn()
            return
        done = threading.Event()
        self._commands.append((fn, done))
        os.eventfd_write(self._wake_fd, 1)
        if not done.wait(10):
            raise TimeoutError("DNS serving thread did not answer")

    # -- registration (serving thread) ---------------------------------------

    def _register(self, sock: socket.socket, obj: object, events: int = _IN) -> None:
        assert self._epoll is not None
        self._epoll.register(sock.fileno(), events)
        self._fds[sock.fileno()] = obj

    def _unregister_close(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd >= 0 and self._fds.pop(fd, None) is not None and self._epoll is not None:
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass
        sock.close()

    def _register_sandbox(self, sb: _Sandbox) -> None:
        self._register(sb.udp.sock, sb.udp)
        self._register(sb.listener.sock, sb.listener)

    def _close_sandbox(self, sb: _Sandbox) -> None:
        sb.closed = True
        for conn in list(sb.conns):
            self._close_conn(conn)
        self._unregister_close(sb.udp.sock)
        self._unregister_close(sb.listener.sock)
        sb.udp.cache.clear()

    # -- the loop ----------------------------------------------------------

    def _run(self) -> None:
        assert self._epoll is not None
        poll = self._epoll.poll
        fds = self._fds
        while not self._stopping:
            now = time.monotonic()
            timeout = 1.0
            if self._timeouts:
                timeout = min(timeout, max(0.0, self._timeouts[0][0] - now))
            try:
                events = poll(timeout, 512)
            except InterruptedError:
                continue
            for fd, ev in events:
                obj = fds.get(fd)
                if obj is None:
                    continue
                try:
                    kind = obj if obj is _WAKE else obj.kind  # type: ignore[attr-defined]
                    if kind == _UDP:
                        self._drain_udp(obj)  # type: ignore[arg-type]
                    elif kind == _UPSTREAM:
                        self._upstream_ready(obj)  # type: ignore[arg-type]
                    elif kind == _CONN:
                        self._conn_ready(obj, ev)  # type: ignore[arg-type]
                    elif kind == _LISTEN:
                        self._accept(obj)  # type: ignore[arg-type]
                    else:
                        self._wakeup()
                except Exception:
                    self.counters["errors"] += 1
                    log.exception("DNS: error serving fd %d", fd)
            try:
                self._expire()
            except Exception:
                self.counters["errors"] += 1
                log.exception("DNS: error in housekeeping")

    def _drain_udp(self, u: _Udp) -> None:
        # The hot path: keep it to a recvfrom, a dict lookup and a sendto.
        sock = u.sock
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        cache = u.cache
        backend = self.backend
        hits = 0
        n = 0
        try:
            while n < _DRAIN_BUDGET:
                n += 1
                try:
                    data, addr = recvfrom(_RECV_SIZE)
                except BlockingIOError:
                    n -= 1
                    break
                if backend.generation != u.gen:
                    cache.clear()
                    u.cache_bytes = 0
                    u.gen = backend.generation
                hit = cache.get(data[2:])
                if hit is not None:
                    if hit.__class__ is not bytes:
                        hit = next(hit)  # type: ignore[arg-type]
                    try:
                        sendto(data[:2] + hit, addr)  # type: ignore[operator]
                    except OSError:
                        self.counters["send_errors"] += 1
                    hits += 1
                    continue
                try:
                    self._udp_miss(u, data, addr)
                except Exception:
                    self.counters["errors"] += 1
                    log.exception("DNS: error answering a UDP query")
        finally:
            c = self.counters
            c["queries"] += n
            c["cache_hits"] += hits

    def _udp_miss(self, u: _Udp, data: bytes, addr: object) -> None:
        assert u.sandbox is not None
        self.counters["cache_misses"] += 1
        result = self.resolver.answer(u.sandbox.sandbox_id, data, tcp=False)
        if result is None:
            self.counters["dropped"] += 1
            return
        if isinstance(result, Forward):
            self._forward_udp(u, data, addr)
            return
        responses = result.responses
        try:
            u.sock.sendto(self.resolver.pick(u.sandbox.sandbox_id, data, responses), addr)
        except OSError:
            self.counters["send_errors"] += 1
        if result.cacheable:
            self._cache_put(u, data[2:], result)

    def _cache_put(self, u: _Udp, key: bytes, result: Answer) -> None:
        tails = [r[2:] for r in result.responses]
        size = len(key) + sum(map(len, tails))
        if len(u.cache) >= self.cache_entries or u.cache_bytes + size > self.cache_bytes:
            u.cache.clear()  # a bounded cache; the hot names come back in one miss each
            u.cache_bytes = 0
        u.cache_bytes += size
        u.cache[key] = tails[0] if len(tails) == 1 else itertools.cycle(tails)

    # -- forwarding over UDP -------------------------------------------------

    def _forward_udp(self, u: _Udp, data: bytes, addr: object) -> None:
        if not self.upstreams or self._inflight >= self.max_inflight:
            rcode = RCODE.SERVFAIL if not self.upstreams else RCODE.REFUSED
            self.counters["forward_refused" if self.upstreams else "forward_failed"] += 1
            u.sock.sendto(self.resolver.error_reply(data, rcode, tcp=False), addr)
            return
        question = question_key(data)
        self.counters["forwarded"] += 1
        self._inflight += 1
        p = _Pending(u, addr, data, question)
        self._next_attempt(p)

    def _next_attempt(self, p: _Pending) -> None:
        """Send p to the next upstream, from a fresh socket with a fresh
        random id and port; answer SERVFAIL when none is left."""
        self._close_attempt(p)
        while p.attempt + 1 < len(self.upstreams):
            p.attempt += 1
            host, port = self.upstreams[p.attempt]
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.connect((host, port))
                p.txid = secrets.token_bytes(2)
                sock.send(p.txid + p.query[2:])
            except OSError:
                sock.close()
                continue
            p.sock = sock
            self._register(sock, p)
            self._timeouts.append((time.monotonic() + self.forward_timeout, p, p.attempt))
            return
        self.counters["forward_failed"] += 1
        self._reply_pending(p, self.resolver.error_reply(p.query, RCODE.SERVFAIL, tcp=False))

    def _upstream_ready(self, p: _Pending) -> None:
        assert p.sock is not None
        while not p.done and p.sock is not None:
            try:
                data = p.sock.recv(65535)
            except BlockingIOError:
                return
            except OSError:  # ICMP port unreachable and the like
                self._next_attempt(p)
                return
            if (len(data) < 12 or data[:2] != p.txid or not data[2] & 0x80
                    or question_key(data) != p.question):
                self.counters["upstream_mismatch"] += 1
                continue
            if data[3] & 0x0F in (RCODE.SERVFAIL, RCODE.REFUSED) and p.attempt + 1 < len(self.upstreams):
                self._next_attempt(p)
                return
            self._reply_pending(p, p.query[:2] + data[2:])

    def _reply_pending(self, p: _Pending, response: bytes) -> None:
        self._finish(p)  # first, so the bound is free by the time the client has its answer
        if not p.client.sandbox or not p.client.sandbox.closed:
            try:
                p.client.sock.sendto(response, p.addr)  # type: ignore[arg-type]
            except OSError:
                self.counters["send_errors"] += 1

    def _close_attempt(self, p: _Pending) -> None:
        if p.sock is not None:
            self._unregister_close(p.sock)
            p.sock = None

    def _finish(self, p: _Pending) -> None:
        if not p.done:
            p.done = True
            self._inflight -= 1
            self._close_attempt(p)

    def _expire(self) -> None:
        now = time.monotonic()
        timeouts = self._timeouts
        while timeouts and timeouts[0][0] <= now:
            _, p, attempt = timeouts.popleft()
            if not p.done and p.attempt == attempt:
                self.counters["upstream_timeouts"] += 1
                self._next_attempt(p)
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + 0.5
            idle = now - self.tcp_idle_timeout
            for sb in list(self._sandboxes.values()):
                for conn in list(sb.conns):
                    if conn.last < idle and not conn.forwards:
                        self.counters["tcp_idle_closed"] += 1
                        self._close_conn(conn)

    def _wakeup(self) -> None:
        try:
            os.eventfd_read(self._wake_fd)
        except BlockingIOError:
            pass
        while self._commands:
            fn, done = self._commands.popleft()
            try:
                fn()
            finally:
                done.set()
        while self._completions:
            conn, txid, response = self._completions.popleft()
            conn.forwards -= 1
            self._inflight -= 1
            if not conn.closed:
                conn.last = time.monotonic()
                self._conn_send(conn, txid + response[2:])

    # -- TCP -----------------------------------------------------------------

    def _accept(self, lst: _Listener) -> None:
        sb = lst.sandbox
        assert sb is not None
        while True:
            try:
                sock, _ = lst.sock.accept()
            except BlockingIOError:
                return
            except OSError:
                self.counters["tcp_accept_errors"] += 1
                return
            if len(sb.conns) >= self.max_tcp_per_sandbox:
                self.counters["tcp_rejected"] += 1
                sock.close()
                continue
            sock.setblocking(False)
            conn = _Conn(sb, sock, time.monotonic())
            sb.conns.add(conn)
            self._register(sock, conn)

    def _conn_ready(self, conn: _Conn, ev: int) -> None:
        if ev & _OUT:
            self._conn_flush(conn)
        if conn.closed or not ev & (_IN | _BAD):
            return
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_conn(conn)
            return
        conn.last = time.monotonic()
        buf = conn.inbuf
        buf += data
        while len(buf) >= 2 and not conn.closed:
            size = int.from_bytes(buf[:2], "big")
            if len(buf) < 2 + size:
                break
            msg = bytes(buf[2:2 + size])
            del buf[:2 + size]
            self.counters["tcp_queries"] += 1
            self._tcp_query(conn, msg)

    def _tcp_query(self, conn: _Conn, msg: bytes) -> None:
        result = self.resolver.handle(conn.sandbox.sandbox_id, msg, tcp=True)
        if result is None:
            self.counters["dropped"] += 1
        elif isinstance(result, Forward):
            self._forward_tcp(conn, msg)
        else:
            self._conn_send(conn, result)

    def _forward_tcp(self, conn: _Conn, msg: bytes) -> None:
        if not self.upstreams or self._inflight >= self.max_inflight:
            rcode = RCODE.SERVFAIL if not self.upstreams else RCODE.REFUSED
            self._conn_send(conn, self.resolver.error_reply(msg, rcode, tcp=True))
            return
        assert self._pool is not None
        self.counters["forwarded"] += 1
        self._inflight += 1
        conn.forwards += 1
        future = self._pool.submit(_tcp_exchange, msg, list(self.upstreams), self.forward_timeout)

        def done(f: concurrent.futures.Future[bytes | None]) -> None:
            response = None if f.cancelled() or f.exception() else f.result()
            if response is None:
                response = self.resolver.error_reply(msg, RCODE.SERVFAIL, tcp=True)
            self._completions.append((conn, msg[:2], response))
            try:
                os.eventfd_write(self._wake_fd, 1)
            except OSError:  # stopping
                pass

        future.add_done_callback(done)

    def _conn_send(self, conn: _Conn, response: bytes) -> None:
        conn.outbuf += len(response).to_bytes(2, "big") + response
        if len(conn.outbuf) > _TCP_OUT_LIMIT:
            self.counters["tcp_overflow_closed"] += 1
            self._close_conn(conn)
            return
        self._conn_flush(conn)

    def _conn_flush(self, conn: _Conn) -> None:
        assert self._epoll is not None
        try:
            sent = conn.sock.send(conn.outbuf) if conn.outbuf else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close_conn(conn)
            return
        del conn.outbuf[:sent]
        self._epoll.modify(conn.sock.fileno(), _IN | _OUT if conn.outbuf else _IN)

    def _close_conn(self, conn: _Conn) -> None:
        if not conn.closed:
            conn.closed = True
            conn.sandbox.conns.discard(conn)
            self._unregister_close(conn.sock)


def _tcp_exchange(msg: bytes, upstreams: list[tuple[str, int]], timeout: float) -> bytes | None:
    """Forward one query over TCP, upstream by upstream (in a pool thread)."""
    for host, port in upstreams:
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                txid = secrets.token_bytes(2)
                sock.sendall(len(msg).to_bytes(2, "big") + txid + msg[2:])
                size = int.from_bytes(_read_exactly(sock, 2), "big")
                response = _read_exactly(sock, size)
        except OSError:
            continue
        if len(response) < 12 or response[:2] != txid:
            continue
        if response[3] & 0x0F in (RCODE.SERVFAIL, RCODE.REFUSED):
            continue
        return response
    return None


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("upstream closed the connection")
        buf += chunk
    return bytes(buf)
