"""The HTTP/1.1 response reader both clients use (netstack/http1.py)."""

from __future__ import annotations

import socket

import pytest

from netstack.http1 import ResponseReader


@pytest.fixture
def reader_for():
    """A reader of what a server sent (then closed its end)."""
    opened: list[socket.socket] = []

    def make(data: bytes) -> ResponseReader:
        server, client = socket.socketpair()
        opened.append(client)
        server.sendall(data)
        server.close()
        return ResponseReader(client)

    yield make
    for sock in opened:
        sock.close()


def test_length_and_chunked_bodies_back_to_back_on_one_connection(reader_for):
    reader = reader_for(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.0 200 OK\r\n\r\nrest of the stream")
    first = reader.read("POST")
    assert (first.status, first.body, first.keep_alive) == (200, b'{"a":1}', True)
    assert first.headers["content-type"] == "application/json"
    second = reader.read("POST")
    assert (second.status, second.body, second.keep_alive) == (201, b"abcde", True)
    third = reader.read("DELETE")
    assert (third.status, third.body) == (204, b"")
    last = reader.read("GET")
    assert (last.body, last.keep_alive) == (b"rest of the stream", False)


def test_connection_close_is_not_kept_alive(reader_for):
    reader = reader_for(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
    assert reader.read("POST").keep_alive is False


@pytest.mark.parametrize("data", [
    b"",                                                        # the server closed a kept-alive connection
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",      # closed mid-body
    b"SSH-2.0-OpenSSH\r\n\r\n",                                 # not HTTP
    b"HTTP/1.1 abc OK\r\n\r\n",                                 # status not a number
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",   # chunk size not hex
])
def test_a_closed_or_garbled_connection_reads_as_reset(reader_for, data):
    reader = reader_for(data)
    with pytest.raises(ConnectionResetError):
        reader.read("POST")
