"""Namespace "hosts" and pynetd processes for tests, labs and benchmarks.

A `NetnsHost` is a network namespace made with `ip netns add` that stands for
a machine; a `Daemon` is a real pynetd started inside one with its own data
root, exec root and socket.  Both clean up completely in `close()`, pass or
fail, and never touch the machine's own namespace.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterator, TypeVar

from netstack.kernel import netns


def run(cmd: list[str], *, check: bool = True, timeout: float = 30, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, timeout=timeout, input=input)


T = TypeVar("T")


def settled(probe: Callable[[], T], want: T, timeout: float = 5.0) -> T:
    """probe()'s answer once it is `want`, else its last one after `timeout`.
    For kernel state pynet changes in the background: a removed sandbox's
    veth is cut off at once and deleted within a grace period or two."""
    deadline = time.monotonic() + timeout
    while (got := probe()) != want and time.monotonic() < deadline:
        time.sleep(0.02)
    return got


class NetnsHost:
    def __init__(self, prefix: str = "pn") -> None:
        self.name = f"{prefix}-{secrets.token_hex(4)}"
        run(["ip", "netns", "add", self.name])
        self.path = f"/run/netns/{self.name}"
        self.exec(["ip", "link", "set", "lo", "up"])

    def exec(self, cmd: list[str], *, check: bool = True, timeout: float = 30,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.name, *cmd], check=check, timeout=timeout, input=input)

    def nsenter(self, cmd: list[str]) -> list[str]:
        """A command line that runs `cmd` in this namespace without remounting /sys."""
        return ["nsenter", f"--net={self.path}", *cmd]

    def close(self) -> None:
        run(["ip", "netns", "del", self.name], check=False)


def veth_between(a: NetnsHost, a_if: str, a_cidr: str, b: NetnsHost, b_if: str, b_cidr: str) -> None:
    """A cable between two namespace hosts, addressed and up."""
    run(["ip", "link", "add", a_if, "netns", a.name, "type", "veth", "peer", b_if, "netns", b.name])
    for host, ifname, cidr in ((a, a_if, a_cidr), (b, b_if, b_cidr)):
        host.exec(["ip", "addr", "add", cidr, "dev", ifname])
        host.exec(["ip", "link", "set", ifname, "up"])


class Daemon:
    """A pynetd inside `host`.  `start()` waits until the socket answers."""

    def __init__(self, host: NetnsHost, *, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, root: str | None = None) -> None:
        self.host = host
        self.root = root or tempfile.mkdtemp(prefix="pynet-test-")
        self.data_root = os.path.join(self.root, "data")
        self.exec_root = os.path.join(self.root, "run")
        self.socket = os.path.join(self.root, "pynet.sock")
        self.url = f"unix://{self.socket}"
        self.log_path = os.path.join(self.root, "pynetd.log")
        self.extra_args = extra_args or []
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    def argv(self) -> list[str]:
        return self.host.nsenter([
            sys.executable, "-m", "netstack.daemon", "--data-root", self.data_root,
            "--exec-root", self.exec_root, "-H", self.url, *self.extra_args,
        ])

    def start(self, *, wait: bool = True, timeout: float = 20) -> "Daemon":
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log, env={**os.environ, **self.env})
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        from netstack.api.client import Client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"pynetd exited with {self.proc.returncode}:\n{self.log()}")
            if os.path.exists(self.socket):
                probe = Client(self.url)
                try:
                    probe.ping()
                    return
                except Exception:
                    pass
                finally:
                    probe.close()
            time.sleep(0.05)
        raise RuntimeError(f"pynetd did not answer within {timeout}s:\n{self.log()}")

    def client(self) -> Any:
        """One client per daemon run, closed when the daemon stops."""
        from netstack.api.client import Client

        if self._client is None:
            self._client = Client(self.url)
        return self._client

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def close(self) -> None:
        """Stop the daemon and remove everything it may have left: sandbox
        namespace mounts, files.  Links die with the host namespace."""
        self.stop()
        ns_dir = os.path.join(self.exec_root, "netns")
        if os.path.isdir(ns_dir):
            for name in os.listdir(ns_dir):
                try:
                    netns.delete(os.path.join(ns_dir, name))
                except Exception:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    """Start `daemon` for a test; print its log if anything fails; always
    stop it and remove what it left."""
    try:
        daemon.start()
        yield daemon
    except BaseException:
        print(daemon.log())
        raise
    finally:
        daemon.close()
