"""A multi-host lab on one machine: every "host" is a network namespace.

    pnl<tag>-ul     the underlay: a bridge `ul0` every host is cabled to
    pnl<tag>-etcd   etcd (Debian's etcd-server), 10.199.0.2:2379
    pnl<tag>-hN     host N: eth0 = 10.199.0.1N/24, its own pynetd with its
                    own data root, --cluster-store etcd://10.199.0.2:2379
                    --cluster-advertise 10.199.0.1N

Each lab's underlay is a closed world, so two labs (a test run and a manual
one) can use the same addresses side by side.  The state (namespace names,
process ids, roots) is a JSON file, so `up`, `run` and `down` may be
separate commands; `down` removes every namespace, process, mount and file
the lab made, and nothing else — processes are stopped by the PIDs it
recorded.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

LAB_DIR = os.environ.get("PYNET_LAB_DIR", "/run/pynet-labs")
UNDERLAY = "10.199.0"
ETCD_ADDR = f"{UNDERLAY}.2"
ETCD_PORT = 2379


def sh(cmd: list[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, timeout=timeout)


#: processes this run started, kept so that they are reaped (not leaked
#: as "still running" Popen objects) when stopped
_PROCS: dict[int, subprocess.Popen[bytes]] = {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Stop one process we started, by its id; SIGKILL after `timeout`."""
    if not pid or not _alive(pid):
        return
    os.kill(pid, sig)
    proc = _PROCS.pop(pid, None)
    if proc is not None:
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            os.kill(pid, signal.SIGKILL)
            proc.wait()
            return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # our child: reap it
        except ChildProcessError:
            done = 0 if _alive(pid) else pid
        if done == pid or not _alive(pid):
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


@dataclass
class HostState:
    name: str                 # h1, h2, ...
    ns: str
    addr: str
    root: str
    pid: int = 0

    @property
    def socket(self) -> str:
        return os.path.join(self.root, "pynet.sock")


@dataclass
class LabState:
    tag: str
    root: str
    hosts: list[HostState] = field(default_factory=list)
    etcd_pid: int = 0
    ttl: int = 4

    @property
    def path(self) -> str:
        return os.path.join(LAB_DIR, f"{self.tag}.json")


class LabHost:
    """One namespace host, as the scenarios drive it (see scenarios.Host)."""

    def __init__(self, lab: "NetnsLab", st: HostState) -> None:
        self.lab = lab
        self.st = st
        self.name = st.name
        self.addr = st.addr

    def argv(self, cmd: list[str]) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.st.ns}", *cmd]

    def pynet_argv(self, *args: str) -> list[str]:
        return self.argv([os.path.join(os.path.dirname(sys.executable), "pynet"), "-H", f"unix://{self.st.socket}", *args])

    def daemon_argv(self) -> list[str]:
        return self.argv([
            sys.executable, "-m", "netstack.daemon", "--data-root", os.path.join(self.st.root, "data"),
            "--exec-root", os.path.join(self.st.root, "run"), "-H", f"unix://{self.st.socket}",
            "--cluster-store", f"etcd://{ETCD_ADDR}:{ETCD_PORT}", "--cluster-advertise", self.st.addr,
            "--cluster-ttl", str(self.lab.state.ttl),
        ])

    def start_daemon(self, timeout: float = 30) -> None:
        if os.path.exists(self.st.socket):
            os.unlink(self.st.socket)
        with open(os.path.join(self.st.root, "pynetd.log"), "ab") as log:
            proc = subprocess.Popen(self.daemon_argv(), stdout=log, stderr=log, start_new_session=True)
        _PROCS[proc.pid] = proc
        self.st.pid = proc.pid
        self.lab.save()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"pynetd on {self.name} exited with {proc.returncode}:\n{self.log()[-3000:]}")
            if os.path.exists(self.st.socket) and sh(self.pynet_argv("version"), check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"pynetd on {self.name} did not answer within {timeout}s:\n{self.log()[-3000:]}")

    def kill_daemon(self) -> None:
        stop_pid(self.st.pid, signal.SIGKILL)
        self.st.pid = 0
        self.lab.save()

    def stop_daemon(self) -> None:
        stop_pid(self.st.pid)
        self.st.pid = 0
        self.lab.save()

    def log(self) -> str:
        try:
            with open(os.path.join(self.st.root, "pynetd.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class NetnsLab:
    kind = "netns"

    def __init__(self, state: LabState) -> None:
        self.state = state
        self.hosts = [LabHost(self, h) for h in state.hosts]

    # -- persistence ---------------------------------------------------------

    def save(self) -> None:
        os.makedirs(LAB_DIR, exist_ok=True)
        tmp = self.state.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(self.state), f, indent=1)
        os.replace(tmp, self.state.path)

    @classmethod
    def load(cls, tag: str = "") -> "NetnsLab":
        if not tag:
            found = sorted(f[:-5] for f in os.listdir(LAB_DIR) if f.endswith(".json")) if os.path.isdir(LAB_DIR) else []
            if not found:
                raise SystemExit("no lab is up (labs/overlay.py up)")
            tag = found[-1]
        with open(os.path.join(LAB_DIR, f"{tag}.json")) as f:
            d = json.load(f)
        d["hosts"] = [HostState(**h) for h in d["hosts"]]
        return cls(LabState(**d))

    # -- lifecycle -----------------------------------------------------------

    @classmethod
    def up(cls, n: int = 3, *, ttl: int = 4, tag: str = "") -> "NetnsLab":
        tag = tag or secrets.token_hex(3)
        root = os.path.join(LAB_DIR, tag)
        os.makedirs(root, exist_ok=True)
        state = LabState(tag=tag, root=root, ttl=ttl, hosts=[
            HostState(name=f"h{i}", ns=f"pnl{tag}-h{i}", addr=f"{UNDERLAY}.{10 + i}", root=os.path.join(root, f"h{i}"))
            for i in range(1, n + 1)
        ])
        lab = cls(state)
        lab.save()
        try:
            lab._make_underlay()
            lab.start_etcd()
            for h in lab.hosts:
                os.makedirs(h.st.root, exist_ok=True)
                h.start_daemon()
        except BaseException:
            lab.down()
            raise
        return lab

    def _ns(self, suffix: str) -> str:
        return f"pnl{self.state.tag}-{suffix}"

    def _make_underlay(self) -> None:
        ul = self._ns("ul")
        sh(["ip", "netns", "add", ul])
        sh(["ip", "-n", ul, "link", "add", "ul0", "type", "bridge"])
        sh(["ip", "-n", ul, "link", "set", "ul0", "up"])
        for name, addr in [("etcd", ETCD_ADDR)] + [(h.name, h.addr) for h in self.hosts]:
            ns = self._ns(name)
            sh(["ip", "netns", "add", ns])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            sh(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", f"ul-{name}", "netns", ul])
            sh(["ip", "-n", ul, "link", "set", f"ul-{name}", "master", "ul0", "up"])
            sh(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0"])
            sh(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def start_etcd(self) -> None:
        data = os.path.join(self.state.root, "etcd")
        url = f"http://{ETCD_ADDR}:{ETCD_PORT}"
        argv = ["nsenter", f"--net=/run/netns/{self._ns('etcd')}", "etcd", "--name", "lab", "--data-dir", data,
                "--listen-client-urls", url, "--advertise-client-urls", url,
                "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                "--initial-cluster", "lab=http://127.0.0.1:2380"]
        with open(os.path.join(self.state.root, "etcd.log"), "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        _PROCS[proc.pid] = proc
        self.state.etcd_pid = proc.pid
        self.save()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            probe = sh(["nsenter", f"--net=/run/netns/{self._ns('etcd')}", sys.executable, "-c",
                        "import urllib.request,sys;"
                        f"urllib.request.urlopen(urllib.request.Request('{url}/v3/kv/range',data=b'{{\"key\":\"AA==\"}}'),timeout=1)"],
                       check=False)
            if probe.returncode == 0:
                return
            if proc.poll() is not None:
                raise RuntimeError("etcd exited at start; see " + os.path.join(self.state.root, "etcd.log"))
            time.sleep(0.1)
        raise RuntimeError("etcd did not answer within 20 s")

    def stop_etcd(self) -> None:
        stop_pid(self.state.etcd_pid)
        self.state.etcd_pid = 0
        self.save()

    def host_exec(self, host: LabHost, cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        return sh(host.argv(cmd), **kw)  # type: ignore[arg-type]

    def down(self) -> list[str]:
        """Remove everything; returns what could not be removed (empty = clean)."""
        from netstack.kernel import netns

        problems: list[str] = []
        for h in self.hosts:
            stop_pid(h.st.pid)
            ns_dir = os.path.join(h.st.root, "run", "netns")
            if os.path.isdir(ns_dir):
                for f in os.listdir(ns_dir):
                    try:
                        netns.delete(os.path.join(ns_dir, f))
                    except Exception as exc:
                        problems.append(f"sandbox netns {f}: {exc}")
        stop_pid(self.state.etcd_pid)
        for suffix in ["ul", "etcd"] + [h.name for h in self.hosts]:
            ns = self._ns(suffix)
            if os.path.exists(f"/run/netns/{ns}"):
                r = sh(["ip", "netns", "del", ns], check=False)
                if r.returncode != 0:
                    problems.append(f"namespace {ns}: {r.stderr.strip()}")
        shutil.rmtree(self.state.root, ignore_errors=True)
        try:
            os.unlink(self.state.path)
        except FileNotFoundError:
            pass
        return problems

    def leftovers(self) -> list[str]:
        """Namespaces, files and processes of this lab still present."""
        out = [n for n in os.listdir("/run/netns") if n.startswith(f"pnl{self.state.tag}-")] if os.path.isdir("/run/netns") else []
        out += [p for p in (self.state.root, self.state.path) if os.path.exists(p)]
        out += [f"pid {p}" for p in [self.state.etcd_pid] + [h.st.pid for h in self.hosts] if p and _alive(p)]
        return out
