"""Network namespaces: create, delete, and run a function inside one.

Entering a namespace changes only the calling thread, so work that must
happen inside one (a DNS socket bound there, iptables there) runs in a
short-lived thread that enters it and then dies: no long-lived thread (the
event loop, a pool worker) ever changes namespace.  Sockets keep the
namespace they were created in, so a socket made this way can then be
served from anywhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import threading
from typing import Callable, TypeVar

from netstack.errors import InvalidParameter, Internal, NotFound

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_SLAVE = 1 << 19
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the *calling thread* into the namespace open at `fd`."""
    _check(_libc.setns(fd, nstype), "setns")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    _check(
        _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags, None),
        f"mount {source} on {target}",
    )


def umount(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


def _in_thread(fn: Callable[[], T]) -> T:
    """Run fn in a fresh thread and hand back its result or exception."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=run, name="netns-worker")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def run_in_netns(path: str, fn: Callable[[], T]) -> T:
    """Call fn inside the network namespace at `path` (a bind-mounted netns
    file or /proc/PID/ns/net) and return its result."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise NotFound(f"network namespace {path} does not exist") from exc

    def enter_and_call() -> T:
        try:
            setns(fd)
        except OSError as exc:
            raise InvalidParameter(f"{path} is not a network namespace: {exc.strerror}") from exc
        return fn()

    try:
        return _in_thread(enter_and_call)
    finally:
        os.close(fd)


def create(path: str, inside: Callable[[], T] | None = None) -> T | None:
    """Make a new, empty network namespace and bind-mount it at `path`;
    `inside`, if given, is called in it by the same thread (one visit
    instead of two) and its result returned."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
    os.close(fd)

    def make() -> T | None:
        unshare(CLONE_NEWNET)
        mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", path, None, MS_BIND)
        return inside() if inside is not None else None

    try:
        return _in_thread(make)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            umount(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if isinstance(exc, OSError):
            raise Internal(f"cannot create network namespace {path}: {exc}") from exc
        raise


def delete(path: str) -> None:
    """Unmount and remove a namespace made by create().  Tolerates absence."""
    try:
        umount(path)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT):
            raise Internal(f"cannot unmount network namespace {path}: {exc}") from exc
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def is_netns(path: str) -> bool:
    """True when `path` is a live network namespace (not a stale file)."""
    try:
        return os.stat(path).st_ino != os.stat(os.path.dirname(path)).st_ino and _nsfs(path)
    except OSError:
        return False


def is_own_netns(path: str) -> bool:
    """True when `path` is the network namespace this process runs in."""
    try:
        here, there = os.stat("/proc/self/ns/net"), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def identity(path: str) -> str:
    """Which namespace `path` is (its nsfs inode), so that two paths to one
    namespace (a bind mount and /proc/PID/ns/net) compare equal; the path
    itself when it is not there (nothing can join a namespace that is gone)
    or is no path (HANDOFF)."""
    if not path.startswith("/"):
        return path
    try:
        st = os.stat(path)
    except OSError:
        return path
    return f"netns:{st.st_dev}:{st.st_ino}"


def _nsfs(path: str) -> bool:
    NSFS_MAGIC = 0x6E736673
    buf = (ctypes.c_long * 16)()
    if _libc.statfs(path.encode(), buf) != 0:
        return False
    return buf[0] == NSFS_MAGIC


def current_netns_path() -> str:
    return f"/proc/self/task/{threading.get_native_id()}/ns/net"
