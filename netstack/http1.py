"""The HTTP/1.1 responses pynet's two clients read: Content-Length, chunked
or until-close bodies, keep-alive, on a connected socket.

Shared by the Engine API client (the CLI: it imports nothing heavy, see
netstack/api/client.py) and the etcd gateway client (on the overlay attach
path; with http.client it spent ~0.1 ms more CPU per request).  A socket
whose peer has closed, or that carries something that is not HTTP, raises
ConnectionResetError: for a reused keep-alive connection, the sign that it
went stale."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket


class Response:
    __slots__ = ("status", "headers", "body", "keep_alive")

    def __init__(self, status: int, headers: dict[str, str], body: bytes, keep_alive: bool) -> None:
        self.status = status
        self.headers = headers          # names in lower case
        self.body = body
        self.keep_alive = keep_alive


class ResponseReader:
    """Reads responses from `sock` one after another; what arrives past one
    response stays buffered for the next."""

    def __init__(self, sock: "_socket.socket") -> None:
        self.sock = sock
        self.buf = b""

    def read(self, method: str) -> Response:
        try:
            return self._read(method)
        except ValueError as exc:  # a length or status that is not a number
            raise ConnectionResetError(f"malformed HTTP response: {exc}") from None

    def _read(self, method: str) -> Response:
        status_line = self._line().decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ConnectionResetError(f"malformed HTTP status line {status_line!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        while True:
            line = self._line()
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close" and parts[0] != "HTTP/1.0"
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._chunked()
        elif "content-length" in headers:
            body = self._exactly(int(headers["content-length"]))
        else:
            body = self._until_close()
            keep = False
        return Response(status, headers, body, keep)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("connection closed by the server")
        self.buf += chunk

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            self._fill()

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _chunked(self) -> bytes:
        out = []
        while True:
            size = int(self._line().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self._line():  # trailers
                    pass
                return b"".join(out)
            out.append(self._exactly(size))
            self._line()

    def _until_close(self) -> bytes:
        chunks = [self.buf]
        self.buf = b""
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
