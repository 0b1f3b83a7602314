"""File descriptors of a daemon that holds a few per sandbox.

pynetd keeps two DNS sockets and a netlink socket per sandbox, so a few
hundred sandboxes take it past fd 1024.  C libraries that still use
select() (libnftables does, in its netlink batch loop) abort the whole
process on an fd >= FD_SETSIZE ("bit out of range 0 - FD_SETSIZE").  So
long-lived sockets are moved above that line, leaving the low numbers to
the short-lived ones those libraries open, and the soft fd limit is raised
to the hard one at start, as daemons do."""

from __future__ import annotations

import fcntl
import resource
import socket

FD_SETSIZE = 1024


def raise_nofile_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def move_high(sock: socket.socket) -> socket.socket:
    """The same socket on an fd >= FD_SETSIZE (or as is, when the limit
    does not allow it)."""
    if sock.fileno() >= FD_SETSIZE:
        return sock
    try:
        fd = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, FD_SETSIZE)
    except OSError:
        return sock
    high = socket.socket(fileno=fd)
    high.setblocking(sock.getblocking())
    sock.close()
    return high
