"""One adapter class per networking stack, all with the same methods, so a
figure is written once and run against pynet and every peer.

    Stack                       base: host namespace, lifecycle, metrics
    ├── EngineStack             anything speaking the Docker Engine API on a UNIX socket
    │   ├── DockerStack         dockerd (+containerd, runc) in a namespace of its own
    │   └── PynetStack          pynetd; sandboxes are pynet's own (POST /sandboxes/create)
    ├── NetavarkStack           netavark setup/teardown (+aardvark-dns for DNS)
    └── CniStack                CNI plugin chain (bridge[, firewall][, portmap])

Methods a figure may call (timed ones are marked *):
    start() / stop()            bring up / tear down everything the stack needs
    create_network*(name, subnet, cli=False) -> Net;  remove_network*(net, cli=False)
    new_sandbox(name) -> Sandbox            an unattached container / netns (untimed)
    attach*(net, sb, cli=False);  detach*(net, sb, cli=False)
    run_on_network*(net, name, ports=())    a sandbox on `net`, optionally with
                                            published ports "HOST:CPORT/tcp" (one call)
    remove_sandbox*(sb)
    ip_of(net, sb) -> str;  iptables_lines() -> int
    daemon_rss() -> dict;  extra_processes() -> (count, MB)
    dns_server(net, client_sb) -> (netns path, ip, port)  where a client asks for names

Each stack lives in its own "host" network namespace, so bridges and rules of
different stacks never meet and none of them touches the machine's own.
Adding a figure for macvlan/overlay means adding an option to create_network.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from _util import (ApiError, BenchError, Cleanup, UnixHTTP, children_tree, netns_add, netns_del,
                   netns_path, iptables_lines, pid_alive, popen, proc_name, proc_starttime, rss_mb,
                   run, stop_pid, wait_for)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(REPO, ".venv", "bin")
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
CNI_PATH = "/usr/lib/cni"


def find_binary(name: str, dirs: Sequence[str]) -> str | None:
    for d in dirs:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return shutil.which(name)


NETAVARK = find_binary("netavark", ["/usr/libexec/podman", "/usr/lib/podman"])
AARDVARK = find_binary("aardvark-dns", ["/usr/libexec/podman", "/usr/lib/podman"])


@dataclass
class Net:
    name: str
    id: str
    subnet: str = ""
    gateway: str = ""
    extra: dict = field(default_factory=dict)


@dataclass
class Sandbox:
    name: str
    handle: str                      # container id, netns name, pynet sandbox id
    netns: str | None = None         # a path usable with setns
    ips: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


class Stack:
    name = "?"
    label = "?"
    has_network_api = True   # network create/rm is an operation of its own
    has_cli = False

    def __init__(self, tag: str, workdir: str, cleanup: Cleanup) -> None:
        self.tag, self.cleanup = tag, cleanup
        self.workdir = os.path.join(workdir, self.name)
        self.host_ns_name = f"pnbh-{tag}-{self.name}"
        self.host_ns = netns_path(self.host_ns_name)
        self._subnet_i = 0

    # lifecycle -------------------------------------------------------------
    def start(self) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        netns_add(self.host_ns_name)
        self.cleanup.push(f"netns {self.host_ns_name}", lambda: netns_del(self.host_ns_name))
        # the stacks expect to forward between their bridges, as on a host
        run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], netns=self.host_ns)

    def stop(self) -> None:
        pass

    def version(self) -> str:
        return "?"

    # helpers ----------------------------------------------------------------
    def next_subnet(self) -> str:
        """A fresh /16 per network: 10.<100+i>.0.0/16 (inside our namespaces only)."""
        self._subnet_i += 1
        return f"10.{100 + self._subnet_i % 150}.0.0/16"

    def iptables_lines(self) -> int:
        return iptables_lines(self.host_ns)

    def daemon_rss(self) -> dict:
        return {}

    def extra_processes(self) -> tuple[int, float]:
        return 0, 0.0

    def ip_of(self, net: Net, sb: Sandbox) -> str:
        return sb.ips.get(net.name, "")

    # operations every stack implements ------------------------------------------
    def create_network(self, name: str, subnet: str | None = None, cli: bool = False, **opts: Any) -> Net:
        raise NotImplementedError

    def remove_network(self, net: Net, cli: bool = False) -> None:
        raise NotImplementedError

    def new_sandbox(self, name: str) -> Sandbox:
        raise NotImplementedError

    def attach(self, net: Net, sb: Sandbox, cli: bool = False) -> None:
        raise NotImplementedError

    def detach(self, net: Net, sb: Sandbox, cli: bool = False) -> None:
        raise NotImplementedError

    def run_on_network(self, net: Net, name: str, ports: Sequence[str] = ()) -> Sandbox:
        raise NotImplementedError

    def remove_sandbox(self, sb: Sandbox) -> None:
        raise NotImplementedError

    def dns_server(self, net: Net, client: Sandbox) -> tuple[str, str, int]:
        raise BenchError("no DNS for this stack")


def _parse_port(spec: str) -> tuple[int, int, str]:
    hp, rest = spec.split(":", 1)
    cp, _, proto = rest.partition("/")
    return int(hp), int(cp), proto or "tcp"


# ==========================================================================
# Docker Engine API speakers


class EngineStack(Stack):
    """Common code for dockerd and pynetd: networks through the Engine API."""

    api_prefix = ""

    def __init__(self, tag: str, workdir: str, cleanup: Cleanup) -> None:
        super().__init__(tag, workdir, cleanup)
        self.sock = f"/run/pnbh-{tag}/{self.name}.sock"
        self.api: UnixHTTP | None = None
        self.proc: subprocess.Popen | None = None
        self.proc_start: int | None = None
        self._log = None

    def _spawn(self, cmd: list[str], ready_timeout: float) -> None:
        sockdir = os.path.dirname(self.sock)
        if not os.path.isdir(sockdir):
            os.makedirs(sockdir)
            # also when the stack is used by another script than run.py
            self.cleanup.push(f"remove {sockdir}", lambda: shutil.rmtree(sockdir, ignore_errors=True))
        self._log = open(os.path.join(self.workdir, f"{self.name}d.log"), "wb")
        self.proc = popen(cmd, self.host_ns, stdin=subprocess.DEVNULL, stdout=self._log,
                          stderr=subprocess.STDOUT, start_new_session=True)
        self.proc_start = proc_starttime(self.proc.pid)
        self.cleanup.push(f"stop {self.name} daemon", self._stop_daemon)
        self.api = UnixHTTP(self.sock, self.api_prefix)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{os.path.basename(cmd[0])} exited rc={self.proc.returncode}: "
                                 f"{self._log_tail()}")
            try:
                self.api.request("GET", "/_ping")
                return
            except BenchError:
                time.sleep(0.1)
        raise BenchError(f"{os.path.basename(cmd[0])} not answering on {self.sock} after "
                         f"{ready_timeout:.0f}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.workdir, f"{self.name}d.log"), "rb") as f:
                lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
            return lines[-1][:240] if lines else "(no output)"
        except OSError:
            return "(no log)"

    def _stop_daemon(self) -> None:
        if self.api:
            self.api.close()
        if not self.proc:
            return
        tree = [(p, proc_starttime(p)) for p in children_tree(self.proc.pid) + self.detached_pids()]
        stop_pid(self.proc.pid, self.proc_start, grace=30)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        # anything the daemon started and left behind (containerd, shims,
        # proxies): ours by descent, stopped by PID
        for pid, st in tree:
            if st is not None and proc_starttime(pid) == st:
                stop_pid(pid, st, grace=5)
        if self._log:
            self._log.close()
        self.proc = None

    def daemon_pids(self) -> list[int]:
        if not self.proc:
            return []
        return [self.proc.pid] + children_tree(self.proc.pid) + self.detached_pids()

    def detached_pids(self) -> list[int]:
        """Processes of ours that left the daemon's tree (containerd shims)."""
        return []

    def cli(self) -> list[str]:
        raise NotImplementedError

    # networks -------------------------------------------------------------
    def create_network(self, name: str, subnet: str | None = None, cli: bool = False, **opts: Any) -> Net:
        if cli:
            cmd = self.cli() + ["network", "create", "-d", opts.get("driver", "bridge")]
            if subnet:
                cmd += ["--subnet", subnet]
            nid = run(cmd + [name]).stdout.strip()
        else:
            body: dict[str, Any] = {"Name": name, "Driver": opts.get("driver", "bridge"), "CheckDuplicate": True}
            if subnet:
                body["IPAM"] = {"Driver": "default", "Config": [{"Subnet": subnet}]}
            nid = self.api.request("POST", "/networks/create", body)["Id"]
        return Net(name=name, id=nid, subnet=subnet or "")

    def remove_network(self, net: Net, cli: bool = False) -> None:
        if cli:
            run(self.cli() + ["network", "rm", net.name])
        else:
            self.api.request("DELETE", f"/networks/{net.id}")

    def attach(self, net: Net, sb: Sandbox, cli: bool = False) -> None:
        if cli:
            run(self.cli() + ["network", "connect", net.name, sb.name])
        else:
            self.api.request("POST", f"/networks/{net.id}/connect", {"Container": sb.handle})

    def detach(self, net: Net, sb: Sandbox, cli: bool = False) -> None:
        if cli:
            run(self.cli() + ["network", "disconnect", net.name, sb.name])
        else:
            self.api.request("POST", f"/networks/{net.id}/disconnect", {"Container": sb.handle})

    def ip_of(self, net: Net, sb: Sandbox) -> str:
        info = self.api.request("GET", f"/networks/{net.id}")
        for key, c in (info.get("Containers") or {}).items():
            if key == sb.handle or c.get("Name") == sb.name or key.startswith(sb.handle[:12]):
                return (c.get("IPv4Address") or "").split("/")[0]
        return ""


class DockerStack(EngineStack):
    name = "docker"
    label = "Docker"
    api_prefix = "/v1.41"
    has_cli = True
    image = "pnbh-bb:local"

    def start(self) -> None:
        super().start()
        self.data_root = os.path.join(self.workdir, "data")
        self.exec_root = os.path.join(self.workdir, "exec")
        self.cleanup.push("remove docker dirs", self._remove_dirs)
        self._spawn(["dockerd", "--data-root", self.data_root, "--exec-root", self.exec_root,
                     "--pidfile", os.path.join(self.workdir, "docker.pid"), "-H", f"unix://{self.sock}",
                     "--storage-driver", "vfs", "--iptables=true", "--bridge", "none",
                     "--shutdown-timeout", "1", "--containerd-namespace", f"pnbh{self.tag}",
                     "--containerd-plugins-namespace", f"pnbh{self.tag}p"],
                    ready_timeout=60)
        self._import_image()

    def detached_pids(self) -> list[int]:
        # shims daemonize away from containerd; they are ours if their
        # command line names our exec root
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit() and proc_name(int(d)).startswith("containerd-shim"):
                try:
                    with open(f"/proc/{d}/cmdline", "rb") as f:
                        if self.exec_root.encode() in f.read():
                            out.append(int(d))
                except OSError:
                    pass
        return out

    def _remove_dirs(self) -> None:
        # lazily unmount whatever the daemon left mounted under our dirs, then remove
        with open("/proc/self/mountinfo") as f:
            mps = [ln.split()[4] for ln in f]
        for mp in sorted((m for m in mps if m.startswith(self.workdir)), key=len, reverse=True):
            run(["umount", "-l", mp], check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def stop(self) -> None:
        self.cleanup.pop_run(self._stop_daemon)

    def cli(self) -> list[str]:
        return ["docker", "-H", f"unix://{self.sock}"]

    def version(self) -> str:
        v = self.api.request("GET", "/version")
        return f"Docker Engine {v.get('Version')} (API {v.get('ApiVersion')}), containerd/runc from Debian"

    def _import_image(self) -> None:
        tar_path = os.path.join(self.workdir, "rootfs.tar")
        applets = run([BUSYBOX, "--list"]).stdout.split()
        with tarfile.open(tar_path, "w") as tar:
            for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root"):
                ti = tarfile.TarInfo(d)
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(ti)
            tar.add(BUSYBOX, arcname="bin/busybox")
            for a in applets:
                if a == "busybox":
                    continue
                ti = tarfile.TarInfo(f"bin/{a}")
                ti.type, ti.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(ti)
        run(self.cli() + ["import", "--change", 'CMD ["sh"]', tar_path, self.image])

    # sandboxes = containers -------------------------------------------------
    def _create_container(self, name: str, network: str, ports: Sequence[str] = ()) -> str:
        hc: dict[str, Any] = {"NetworkMode": network}
        body: dict[str, Any] = {"Image": self.image, "Cmd": ["sleep", "36000"], "HostConfig": hc}
        if ports:
            hc["PortBindings"], body["ExposedPorts"] = {}, {}
            for spec in ports:
                hp, cp, proto = _parse_port(spec)
                hc["PortBindings"][f"{cp}/{proto}"] = [{"HostPort": str(hp)}]
                body["ExposedPorts"][f"{cp}/{proto}"] = {}
        cid = self.api.request("POST", f"/containers/create?name={name}", body)["Id"]
        self.api.request("POST", f"/containers/{cid}/start")
        return cid

    def _sandbox(self, name: str, cid: str) -> Sandbox:
        return Sandbox(name=name, handle=cid)

    def netns_of(self, sb: Sandbox) -> str:
        if not sb.netns:
            pid = self.api.request("GET", f"/containers/{sb.handle}/json")["State"]["Pid"]
            sb.netns = f"/proc/{pid}/ns/net"
        return sb.netns

    def new_sandbox(self, name: str) -> Sandbox:
        cid = self._create_container(name, "none")
        # Docker refuses `connect` for a container in `none` mode: leave it first
        self.api.request("POST", "/networks/none/disconnect", {"Container": cid})
        sb = self._sandbox(name, cid)
        self.netns_of(sb)
        return sb

    def run_on_network(self, net: Net, name: str, ports: Sequence[str] = ()) -> Sandbox:
        return self._sandbox(name, self._create_container(name, net.name, ports))

    def remove_sandbox(self, sb: Sandbox) -> None:
        self.api.request("DELETE", f"/containers/{sb.handle}?force=1&v=1")

    def sandbox_netns(self, sb: Sandbox) -> str:
        return self.netns_of(sb)

    # metrics -----------------------------------------------------------------
    def daemon_rss(self) -> dict:
        out = {"dockerd": 0.0, "containerd": 0.0, "shims": 0.0, "shim_count": 0}
        for pid in self.daemon_pids():
            n = proc_name(pid)
            if n == "dockerd":
                out["dockerd"] += rss_mb(pid)
            elif n == "containerd":
                out["containerd"] += rss_mb(pid)
            elif n.startswith("containerd-shim"):
                out["shims"] += rss_mb(pid)
                out["shim_count"] += 1
        out["daemon"] = out["dockerd"] + out["containerd"]
        return out

    def extra_processes(self) -> tuple[int, float]:
        pids = [p for p in self.daemon_pids() if proc_name(p) == "docker-proxy"]
        return len(pids), sum(rss_mb(p) for p in pids)

    def dns_server(self, net: Net, client: Sandbox) -> tuple[str, str, int]:
        return self.netns_of(client), "127.0.0.11", 53


class PynetStack(EngineStack):
    """pynetd, driven exactly like dockerd through its Engine-compatible API."""

    name = "pynet"
    label = "pynet"
    has_cli = True

    def start(self) -> None:
        pynetd = os.path.join(VENV_BIN, "pynetd")
        if not os.path.exists(os.path.join(REPO, "netstack", "daemon.py")) or not os.access(pynetd, os.X_OK):
            raise BenchError("pynetd not available (netstack/daemon.py not in the tree yet)")
        super().start()
        self.data_root = os.path.join(self.workdir, "data")
        self.cleanup.push("remove pynet dirs", lambda: shutil.rmtree(self.workdir, ignore_errors=True))
        cmd = [pynetd, "--data-root", self.data_root, "-H", f"unix://{self.sock}"]
        help_ = run([pynetd, "--help"], check=False).stdout
        if "--exec-root" in help_:  # its sandbox namespaces go under our own dir
            self.exec_root = f"/run/pnbh-{self.tag}/pynet-exec"
            self.cleanup.push("remove pynet exec root", self._remove_exec_root)
            cmd += ["--exec-root", self.exec_root]
        self._spawn(cmd, ready_timeout=20)

    def _remove_exec_root(self) -> None:
        with open("/proc/self/mountinfo") as f:
            mps = [ln.split()[4] for ln in f]
        for mp in sorted((m for m in mps if m.startswith(self.exec_root)), key=len, reverse=True):
            run(["umount", "-l", mp], check=False)
        shutil.rmtree(self.exec_root, ignore_errors=True)

    def stop(self) -> None:
        self.cleanup.pop_run(self._stop_daemon)

    def cli(self) -> list[str]:
        # bench/run provides a regular (non-editable) install of the CLI.
        exe = os.environ.get("PYNET_BENCH_CLI") or os.path.join(VENV_BIN, "pynet")
        return [exe, "-H", f"unix://{self.sock}"]

    def version(self) -> str:
        try:
            v = self.api.request("GET", "/version")
            return f"pynet {v.get('Version')} (API {v.get('ApiVersion')})"
        except BenchError as exc:
            return f"pynet (version unknown: {exc})"

    @staticmethod
    def _find_netns(obj: Any) -> str | None:
        """The sandbox's namespace path, wherever the API puts it."""
        if isinstance(obj, dict):
            for k in ("SandboxKey", "NetnsPath", "Netns", "Path", "Key", "NetNS"):
                v = obj.get(k)
                if isinstance(v, str) and v.startswith("/"):
                    return v
            for v in obj.values():
                r = PynetStack._find_netns(v)
                if r:
                    return r
        return None

    def netns_of(self, sb: Sandbox) -> str | None:
        if not sb.netns:
            for url in (f"/sandboxes/{sb.name}", f"/sandboxes/{sb.name}/json"):
                try:
                    sb.netns = self._find_netns(self.api.request("GET", url))
                except BenchError:
                    continue
                if sb.netns:
                    break
        return sb.netns

    def new_sandbox(self, name: str) -> Sandbox:
        r = self.api.request("POST", "/sandboxes/create", {"Name": name}) or {}
        sb = Sandbox(name=name, handle=name, netns=self._find_netns(r), extra={"create": r})
        return sb

    def run_on_network(self, net: Net, name: str, ports: Sequence[str] = ()) -> Sandbox:
        body: dict[str, Any] = {"Name": name, "Networks": [{"Network": net.name}]}
        if ports:
            body["Ports"] = list(ports)
        r = self.api.request("POST", "/sandboxes/create", body) or {}
        return Sandbox(name=name, handle=name, netns=self._find_netns(r))

    def remove_sandbox(self, sb: Sandbox) -> None:
        self.api.request("DELETE", f"/sandboxes/{sb.handle}?force=1")

    def daemon_rss(self) -> dict:
        pids = self.daemon_pids()
        d = rss_mb(pids[0]) if pids else 0.0
        kids = sum(rss_mb(p) for p in pids[1:])
        return {"pynetd": d, "children": kids, "child_count": len(pids) - 1, "daemon": d + kids}

    def extra_processes(self) -> tuple[int, float]:
        pids = self.daemon_pids()[1:]
        return len(pids), sum(rss_mb(p) for p in pids)

    def dns_server(self, net: Net, client: Sandbox) -> tuple[str, str, int]:
        ns = self.netns_of(client)
        if not ns:
            raise BenchError("pynet sandbox inspect gives no netns path")
        return ns, "127.0.0.11", 53


# ==========================================================================
# netavark and CNI: plain binaries run in the stack's host namespace


class _NetnsSandboxes(Stack):
    """Sandboxes are fresh namespaces (`ip netns add`, not timed)."""

    has_network_api = False

    def __init__(self, tag: str, workdir: str, cleanup: Cleanup) -> None:
        super().__init__(tag, workdir, cleanup)
        self._sbs: dict[str, Sandbox] = {}
        self._ip_i: dict[str, int] = {}

    def start(self) -> None:
        super().start()
        self.cleanup.push(f"{self.name} sandboxes", self._remove_all)

    def _remove_all(self) -> None:
        for sb in list(self._sbs.values()):
            netns_del(sb.handle)
        self._sbs.clear()

    def new_sandbox(self, name: str) -> Sandbox:
        ns = f"pnbh-{self.tag}-{self.name}-{len(self._sbs)}-{secrets.token_hex(2)}"
        sb = Sandbox(name=name, handle=ns, netns=netns_add(ns),
                     extra={"cid": secrets.token_hex(32)})
        self._sbs[ns] = sb
        return sb

    def remove_sandbox(self, sb: Sandbox) -> None:
        for net_name in list(sb.extra.get("attached", {})):
            self.detach(sb.extra["attached"][net_name], sb)
        netns_del(sb.handle)
        self._sbs.pop(sb.handle, None)

    def _next_ip(self, net: Net) -> str:
        i = self._ip_i.get(net.name, 1) + 1
        self._ip_i[net.name] = i
        base = ipaddress.ip_network(net.subnet)
        return str(base.network_address + i)

    def create_network(self, name: str, subnet: str | None = None, cli: bool = False, **opts: Any) -> Net:
        subnet = subnet or self.next_subnet()
        gw = str(ipaddress.ip_network(subnet).network_address + 1)
        self._net_i = getattr(self, "_net_i", 0) + 1
        idx = self._net_i
        return Net(name=name, id=secrets.token_hex(32), subnet=subnet, gateway=gw,
                   extra={"bridge": f"pnb{self.name[:3]}{idx}", **opts})

    def remove_network(self, net: Net, cli: bool = False) -> None:
        pass  # the bridge goes with the last detach (netavark) or stays until the netns goes

    def run_on_network(self, net: Net, name: str, ports: Sequence[str] = ()) -> Sandbox:
        sb = self.new_sandbox(name)  # `ip netns add` is part of it, as a runtime would do
        sb.extra["ports"] = list(ports)
        self.attach(net, sb)
        return sb


class NetavarkStack(_NetnsSandboxes):
    name = "netavark"
    label = "netavark"

    def start(self) -> None:
        if not NETAVARK:
            raise BenchError("netavark not installed")
        super().start()
        self.config = os.path.join(self.workdir, "config")
        os.makedirs(self.config, exist_ok=True)
        self.cleanup.push("stop aardvark-dns", self._stop_aardvark)

    def version(self) -> str:
        return run([NETAVARK, "--version"]).stdout.strip()

    def _stop_aardvark(self) -> None:
        pidf = os.path.join(self.config, "aardvark-dns", "aardvark.pid")
        try:
            pid = int(open(pidf).read().strip())
        except (OSError, ValueError):
            return
        if pid_alive(pid) and proc_name(pid) == "aardvark-dns":
            stop_pid(pid, None, grace=5)

    def aardvark_pid(self) -> int | None:
        try:
            pid = int(open(os.path.join(self.config, "aardvark-dns", "aardvark.pid")).read().strip())
            return pid if pid_alive(pid) else None
        except (OSError, ValueError):
            return None

    def _opts(self, net: Net, sb: Sandbox) -> dict:
        ip = sb.ips.get(net.name) or self._next_ip(net)
        sb.ips[net.name] = ip
        ports = []
        for spec in sb.extra.get("ports", []):
            hp, cp, proto = _parse_port(spec)
            ports.append({"host_ip": "", "container_port": cp, "host_port": hp, "range": 1,
                          "protocol": proto})
        dns = bool(net.extra.get("dns"))
        return {
            "container_id": sb.extra["cid"], "container_name": sb.name,
            "port_mappings": ports or None,
            "networks": {net.name: {"static_ips": [ip], "interface_name": "eth0",
                                    "aliases": [sb.name] if dns else []}},
            "network_info": {net.name: {
                "name": net.name, "id": net.id, "driver": "bridge",
                "network_interface": net.extra["bridge"],
                "subnets": [{"subnet": net.subnet, "gateway": net.gateway}],
                "ipv6_enabled": False, "internal": False, "dns_enabled": dns,
                "ipam_options": {"driver": "host-local"}}},
        }

    def _netavark(self, verb: str, opts: dict, sb: Sandbox) -> None:
        cmd = [NETAVARK, "--config", self.config]
        if AARDVARK:
            cmd += ["--aardvark-binary", AARDVARK]
        run(cmd + [verb, sb.netns], netns=self.host_ns, input=json.dumps(opts))

    def attach(self, net: Net, sb: Sandbox, cli: bool = False) -> None:
        opts = self._opts(net, sb)
        self._netavark("setup", opts, sb)
        sb.extra.setdefault("attached", {})[net.name] = net
        sb.extra.setdefault("opts", {})[net.name] = opts

    def detach(self, net: Net, sb: Sandbox, cli: bool = False) -> None:
        opts = sb.extra.get("opts", {}).pop(net.name, None) or self._opts(net, sb)
        self._netavark("teardown", opts, sb)
        sb.extra.get("attached", {}).pop(net.name, None)
        sb.ips.pop(net.name, None)

    def extra_processes(self) -> tuple[int, float]:
        pid = self.aardvark_pid()
        return (1, rss_mb(pid)) if pid else (0, 0.0)

    def daemon_rss(self) -> dict:
        pid = self.aardvark_pid()
        return {"aardvark-dns": rss_mb(pid) if pid else 0.0}

    def dns_server(self, net: Net, client: Sandbox) -> tuple[str, str, int]:
        return client.netns, net.gateway, 53


class CniStack(_NetnsSandboxes):
    """The reference CNI plugins, run as a runtime runs a conflist: ADD in
    order with prevResult, DEL in reverse order with the cached result."""

    def __init__(self, tag: str, workdir: str, cleanup: Cleanup, firewall: bool = False) -> None:
        self.firewall = firewall
        self.name = "cnifw" if firewall else "cni"
        self.label = "CNI bridge+firewall" if firewall else "CNI bridge"
        super().__init__(tag, workdir, cleanup)

    def start(self) -> None:
        if not os.access(os.path.join(CNI_PATH, "bridge"), os.X_OK):
            raise BenchError(f"CNI plugins not in {CNI_PATH}")
        super().start()
        self.data_dir = os.path.join(self.workdir, "ipam")
        os.makedirs(self.data_dir, exist_ok=True)

    def version(self) -> str:
        cp = run([os.path.join(CNI_PATH, "bridge")], check=False, env={"CNI_COMMAND": "VERSION"})
        v = run(["dpkg-query", "-W", "-f", "${Version}", "containernetworking-plugins"], check=False).stdout
        return f"CNI plugins {v or '?'} (spec {json.loads(cp.stdout or '{}').get('cniVersion', '?')})"

    def _plugins(self, net: Net, sb: Sandbox) -> list[dict]:
        chain: list[dict] = [{
            "type": "bridge", "bridge": net.extra["bridge"], "isGateway": True, "ipMasq": True,
            "ipam": {"type": "host-local", "subnet": net.subnet, "dataDir": self.data_dir,
                     "routes": [{"dst": "0.0.0.0/0"}]}}]
        if self.firewall:
            chain.append({"type": "firewall", "backend": "iptables"})
        ports = sb.extra.get("ports") or []
        if ports:
            pm = []
            for spec in ports:
                hp, cp, proto = _parse_port(spec)
                pm.append({"hostPort": hp, "containerPort": cp, "protocol": proto})
            chain.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True,
                          "runtimeConfig": {"portMappings": pm}})
        return chain

    def _exec(self, command: str, conf: dict, sb: Sandbox) -> dict:
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": sb.extra["cid"], "CNI_NETNS": sb.netns,
               "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH, "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        cp = run([os.path.join(CNI_PATH, conf["type"])], netns=self.host_ns, input=json.dumps(conf), env=env,
                 check=False)
        if cp.returncode != 0:
            try:
                msg = json.loads(cp.stdout).get("msg")
            except ValueError:
                msg = cp.stderr.strip()[-200:]
            raise BenchError(f"CNI {conf['type']} {command}: {msg}")
        return json.loads(cp.stdout) if cp.stdout.strip() else {}

    def attach(self, net: Net, sb: Sandbox, cli: bool = False) -> None:
        prev = None
        for p in self._plugins(net, sb):
            conf = {"cniVersion": "1.0.0", "name": net.name, **p}
            if prev is not None:
                conf["prevResult"] = prev
            prev = self._exec("ADD", conf, sb)
        ips = (prev or {}).get("ips") or []
        if ips:
            sb.ips[net.name] = ips[0]["address"].split("/")[0]
        sb.extra.setdefault("attached", {})[net.name] = net
        sb.extra.setdefault("result", {})[net.name] = prev

    def detach(self, net: Net, sb: Sandbox, cli: bool = False) -> None:
        prev = sb.extra.get("result", {}).pop(net.name, None)
        for p in reversed(self._plugins(net, sb)):
            conf = {"cniVersion": "1.0.0", "name": net.name, **p}
            if prev is not None:
                conf["prevResult"] = prev
            self._exec("DEL", conf, sb)
        sb.extra.get("attached", {}).pop(net.name, None)
        sb.ips.pop(net.name, None)


# ==========================================================================


def sandbox_netns(stack: Stack, sb: Sandbox) -> str | None:
    """The namespace path of a sandbox, for sanity pings and iperf3."""
    if sb.netns:
        return sb.netns
    f = getattr(stack, "netns_of", None)
    return f(sb) if f else None


ALL_PEERS = ("docker", "netavark", "cni", "kernel")


class KernelStack(_NetnsSandboxes):
    """The kernel floor: the least any stack must do for an attach, done by
    hand in process over raw rtnetlink (a veth born with its peer in the
    sandbox, on the bridge; the peer's address, link up, default route).
    No IPAM, no store, no firewall, no DNS: what this column's cost does
    with scale is the kernel's own part."""

    name = "kernel"
    label = "by hand (kernel)"

    def create_network(self, name: str, subnet: str | None = None, cli: bool = False, **opts: Any) -> Net:
        from netstack.kernel.netns import run_in_netns
        from netstack.kernel.rtnl import Rtnl

        net = super().create_network(name, subnet, cli, **opts)
        prefix = ipaddress.ip_network(net.subnet).prefixlen

        def make() -> None:
            r = Rtnl()
            try:
                index = r.create_link(net.extra["bridge"], "bridge", mtu=1500)
                r.add_address(index, f"{net.gateway}/{prefix}")
                r.link_up(index)
            finally:
                r.close()
        run_in_netns(self.host_ns, make)
        return net

    def attach(self, net: Net, sb: Sandbox, cli: bool = False) -> None:
        from netstack.kernel.netns import run_in_netns
        from netstack.kernel.rtnl import Rtnl

        ip = self._next_ip(net)
        prefix = ipaddress.ip_network(net.subnet).prefixlen
        n = len(sb.extra.setdefault("attached", {}))
        host_end = f"pnk{secrets.token_hex(5)}"

        def host_side() -> int:
            r = Rtnl()
            fd = os.open(sb.netns, os.O_RDONLY)
            try:
                master = r.link_index(net.extra["bridge"]) or 0
                return r.create_veth(host_end, f"eth{n}", peer_netns_fd=fd, mtu=1500, master=master,
                                     peer_mac="02:42:" + ":".join(secrets.token_hex(1) for _ in range(4)))
            finally:
                os.close(fd)
                r.close()

        peer = run_in_netns(self.host_ns, host_side)
        r = Rtnl.in_netns(sb.netns)
        try:
            index = peer or r.link_index(f"eth{n}") or 0
            r.add_address(index, f"{ip}/{prefix}")
            r.no_ipv6_link_local(index)  # as pynet on an IPv4-only network
            r.link_up(index)
            r.link_up(1)
            r.replace_route("0.0.0.0/0", net.gateway, index)
        finally:
            r.close()
        sb.ips[net.name] = ip
        sb.extra["attached"][net.name] = net

    def detach(self, net: Net, sb: Sandbox, cli: bool = False) -> None:
        netns_del(sb.handle)  # the veth goes with the namespace
        sb.extra.get("attached", {}).pop(net.name, None)


def make_stacks(tag: str, workdir: str, cleanup: Cleanup, peers: Sequence[str]) -> dict[str, Stack]:
    """pynet first, then the requested peers; `cni` brings both CNI variants."""
    out: dict[str, Stack] = {"pynet": PynetStack(tag, workdir, cleanup)}
    if "docker" in peers:
        out["docker"] = DockerStack(tag, workdir, cleanup)
    if "netavark" in peers:
        out["netavark"] = NetavarkStack(tag, workdir, cleanup)
    if "cni" in peers:
        out["cni"] = CniStack(tag, workdir, cleanup, firewall=False)
        out["cnifw"] = CniStack(tag, workdir, cleanup, firewall=True)
    if "kernel" in peers:
        out["kernel"] = KernelStack(tag, workdir, cleanup)
    return out
