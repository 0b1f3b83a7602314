"""Plumbing shared by the benchmark harness: namespaces, processes, timing,
statistics, an HTTP client over a UNIX socket, and the cleanup registry.

Safety model: every kernel object the harness makes lives in a network
namespace it created (named ``pnbh-<tag>-...``); every process it starts is
recorded by PID and stopped by PID.  ``Cleanup`` runs on normal exit, on an
exception, on SIGINT/SIGTERM and at interpreter exit (atexit), whichever
comes first, and only once.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import time
from typing import Any, Callable, Iterable, Sequence

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

NETNS_DIR = "/run/netns"


class BenchError(Exception):
    """A figure or a stack failed; the message goes into the table."""


# --------------------------------------------------------------------------
# processes


def _setns_preexec(fd: int) -> Callable[[], None]:
    def enter() -> None:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            os._exit(126)

    return enter


def popen(cmd: Sequence[str], netns: str | None = None, **kw: Any) -> subprocess.Popen:
    """Start cmd, optionally inside the network namespace at path `netns`
    (entered with setns in the child, so no extra nsenter process is timed)."""
    if netns is None:
        return subprocess.Popen(list(cmd), **kw)
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return subprocess.Popen(list(cmd), preexec_fn=_setns_preexec(fd), pass_fds=(fd,), **kw)
    finally:
        os.close(fd)


def run(cmd: Sequence[str], netns: str | None = None, input: str | bytes | None = None,
        check: bool = True, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    data = input.encode() if isinstance(input, str) else input
    p = popen(cmd, netns, stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = p.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise BenchError(f"timeout after {timeout}s: {' '.join(cmd)[:120]}")
    cp = subprocess.CompletedProcess(list(cmd), p.returncode, out.decode(errors="replace"),
                                     err.decode(errors="replace"))
    if check and cp.returncode != 0:
        msg = (cp.stderr.strip() or cp.stdout.strip()).splitlines()
        raise BenchError(f"{os.path.basename(cmd[0])} {' '.join(cmd[1:3])}: rc={cp.returncode}: "
                         f"{msg[-1][:200] if msg else ''}")
    return cp


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall-clock milliseconds of fn(), and its result."""
    t0 = time.perf_counter()
    r = fn()
    return (time.perf_counter() - t0) * 1000.0, r


def timed_cmd(cmd: Sequence[str], netns: str | None = None, input: str | None = None,
              env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """Time a whole command the way subprocess runs it: process start included."""
    return timed(lambda: run(cmd, netns=netns, input=input, env=env))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def proc_starttime(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds_exact(pid: int) -> float:
    """CPU time `pid` has used so far, every thread, to the nanosecond
    (/proc/PID/task/*/schedstat; /proc/PID/stat counts 10 ms ticks).
    A thread that ended meanwhile takes its time with it: the daemons'
    long-lived threads do the attach work."""
    return _schedstat(pid, 0)


def runqueue_seconds(pid: int) -> float:
    """Time `pid`'s threads have spent runnable but waiting for a CPU, so
    far (schedstat's second field): what other processes' work on the same
    CPUs cost it."""
    return _schedstat(pid, 1)


def _schedstat(pid: int, field: int) -> float:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[field])
        except (OSError, ValueError):
            pass
    return total / 1e9


def children_tree(pid: int) -> list[int]:
    """All descendants of pid (by /proc/*/stat ppid), depth-first."""
    parent: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parent.setdefault(ppid, []).append(int(d))
    out: list[int] = []
    stack = list(parent.get(pid, []))
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(parent.get(p, []))
    return out


def proc_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def stop_pid(pid: int, start: int | None, grace: float = 20.0) -> None:
    """SIGTERM, wait, SIGKILL a process we started; `start` guards PID reuse."""
    if start is not None and proc_starttime(pid) != start:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            break
        time.sleep(0.05)
    else:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:  # reap if it is our child
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# --------------------------------------------------------------------------
# namespaces


def netns_path(name: str) -> str:
    return f"{NETNS_DIR}/{name}"


def netns_add(name: str) -> str:
    run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    return netns_path(name)


def netns_del(name: str) -> None:
    run(["ip", "netns", "del", name], check=False)


def iptables_lines(netns: str) -> int:
    """Lines of iptables-nft-save plus iptables-legacy-save in a namespace
    (pynet writes legacy tables, Docker/netavark/CNI nft ones)."""
    total = 0
    for tool in ("iptables-nft-save", "iptables-legacy-save"):
        cp = run([tool], netns=netns, check=False)
        total += sum(1 for ln in cp.stdout.splitlines() if ln and not ln.startswith("#"))
    return total


def ping(netns: str, ip: str, count: int = 1, wait: int = 2) -> bool:
    cp = run(["busybox", "ping", "-c", str(count), "-W", str(wait), ip], netns=netns, check=False,
             timeout=wait * count + 5)
    return cp.returncode == 0


def tcp_ok(netns: str, ip: str, port: int) -> bool:
    cp = run(["busybox", "nc", "-z", "-w", "2", ip, str(port)], netns=netns, check=False, timeout=10)
    return cp.returncode == 0


def ns_pids(netns_inode: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}/ns/net").st_ino == netns_inode:
                    out.append(int(d))
            except OSError:
                pass
    return out


# --------------------------------------------------------------------------
# statistics


def summary(xs: Iterable[float]) -> dict | None:
    xs = [float(x) for x in xs if x is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def fmt(s: dict | None, digits: int = 1) -> str:
    if not s:
        return "–"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


# --------------------------------------------------------------------------
# HTTP over a UNIX socket (Docker Engine API and pynetd's API)


class _UnixConn(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class ApiError(BenchError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class UnixHTTP:
    """One keep-alive connection; JSON in, JSON out; errors raise ApiError."""

    def __init__(self, path: str, prefix: str = "", timeout: float = 120) -> None:
        self.path, self.prefix, self.timeout = path, prefix, timeout
        self._conn: _UnixConn | None = None

    def close(self) -> None:
        if self._conn:
            self._conn.close()
            self._conn = None

    def request(self, method: str, url: str, body: Any = None, ok: Sequence[int] = (200, 201, 204, 304)) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = _UnixConn(self.path, self.timeout)
            try:
                self._conn.request(method, self.prefix + url, body=data, headers=headers)
                resp = self._conn.getresponse()
                raw = resp.read()
                break
            except (ConnectionError, http.client.HTTPException, BrokenPipeError) as exc:
                self.close()
                if attempt:
                    raise BenchError(f"{method} {url}: {exc}") from exc
            except OSError as exc:
                self.close()
                raise BenchError(f"{method} {url}: {exc}") from exc
        try:
            obj = json.loads(raw) if raw.strip() else None
        except ValueError:
            obj = raw.decode(errors="replace")
        if resp.status not in ok:
            msg = obj.get("message") if isinstance(obj, dict) else str(obj)
            raise ApiError(resp.status, f"{method} {url}: {str(msg)[:200]}")
        return obj


def wait_for(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")


# --------------------------------------------------------------------------
# cleanup registry


class Cleanup:
    """LIFO of undo actions.  Each action runs once; failures are collected
    and printed, never stop the others."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []
        self._done = False
        atexit.register(self.run)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    def push(self, what: str, fn: Callable[[], None]) -> Callable[[], None]:
        self._actions.append((what, fn))
        return fn

    def pop_run(self, fn: Callable[[], None]) -> None:
        """Run one registered action now and forget it."""
        for i in range(len(self._actions) - 1, -1, -1):
            if self._actions[i][1] is fn:
                what, _ = self._actions.pop(i)
                self._safe(what, fn)
                return
        fn()

    @staticmethod
    def _safe(what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # keep cleaning
            print(f"cleanup: {what}: {exc!r}", flush=True)

    def run(self) -> None:
        if self._done:
            return
        self._done = True
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # do not interrupt cleanup
        try:
            while self._actions:
                what, fn = self._actions.pop()
                self._safe(what, fn)
        finally:
            signal.signal(signal.SIGINT, old)


# --------------------------------------------------------------------------
# pynet as a user installs it

_SOURCES = ("netstack", "drivers", "ipam", "dns", "bin")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def release_install(venv: "os.PathLike[str] | str", python: str, program: str = "pynet") -> str:
    """VENV/bin/PROGRAM from `pip install --no-deps .` into a venv of
    `python` (bench/run builds bench/.venv-release the same way), rebuilt
    when missing or older than a source file: the CLI, the OCI hook and
    pynet-cni timed as installed, not through the development venv's
    editable-install hook (~20-30 ms per exec)."""
    import shutil
    import tempfile
    from pathlib import Path

    venv, root = Path(venv), Path(_ROOT)
    launcher = venv / "bin" / program
    if launcher.exists():
        built = launcher.stat().st_mtime
        stale = any(f.stat().st_mtime > built for d in _SOURCES for f in (root / d).rglob("*")
                    if f.is_file() and (f.suffix == ".py" or f.parent.name == "bin"))
        if not stale:
            return str(launcher)
    print(f"bench: building {venv} ({python} -m venv; pip install --no-deps .)", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    with tempfile.TemporaryDirectory(prefix="pynet-build-") as build:
        # from a copy: building in place would leave build/ and *.egg-info in the checkout
        src = Path(build) / "src"
        shutil.copytree(root, src, ignore=shutil.ignore_patterns(".git", ".venv", ".venv-*", "build", "*.egg-info",
                                                                  "__pycache__", "results"))
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(src)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run([str(venv / "bin" / "python"), "-m", "compileall", "-q", str(venv / "lib")],
                   check=False, stdout=subprocess.DEVNULL)
    return str(launcher)
