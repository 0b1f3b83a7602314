"""The crash harness: random API operations while pynetd is killed with
SIGKILL at random moments, and the invariants checked after every restart.

One `Chaos` drives one pynetd in one namespace host.  A round:

1. start pynetd, either armed with a crash point (PYNET_CRASH_AT, the
   daemon kills itself there) or with a killer thread that sends SIGKILL
   after a random delay;
2. run random operations through the API: network create/rm (bridge, and
   macvlan on veth parents inside the host), sandbox
   create (with networks and published ports)/rm, connect/disconnect,
   until the daemon is gone (or, if nothing killed it, kill it);
3. restart it and check: `netstack.invariants.check` (store vs kernel vs
   firewall vs DNS vs IPAM), then the model: every operation acknowledged
   with a 2xx before the kill is still there, with the same addresses and
   ports; an operation in flight at the kill is all or nothing.

The model knows what was acknowledged; objects touched by the operation in
flight at the kill are "uncertain" and adopt what the restarted daemon
shows, once that has been checked for atomicity.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from netstack import invariants
from netstack.api.client import DaemonUnreachable
from netstack.errors import Internal, PynetError
from netstack.testing.hosts import Daemon, NetnsHost

#: links in the daemon's namespace that macvlan networks take as parents
#: (one network per parent, as the driver requires)
PARENTS = ("chaos0", "chaos1", "chaos2")
CRASH_POINTS = ("network-create:stored", "network-create:kernel", "network-delete:marked", "connect:joined",
                "disconnect:forgotten")
PREDEFINED = ("host", "none")


@dataclass
class SandboxModel:
    nets: dict[str, str | None] = field(default_factory=dict)   # network -> IPv4 (None: not read yet)
    ports: list[str] = field(default_factory=list)                # "HOSTPORT:CPORT/proto" as published


@dataclass
class Stats:
    rounds: int = 0
    ops: int = 0
    acked: int = 0
    refused: int = 0
    kills: int = 0
    crashpoint_kills: int = 0
    checks: int = 0
    macvlan_networks: int = 0    # acknowledged macvlan creates (the rest are bridge)
    violations: list[str] = field(default_factory=list)


class Chaos:
    def __init__(self, host: NetnsHost, *, seed: int = 0, max_networks: int = 4, max_sandboxes: int = 6,
                 log: Callable[[str], None] = lambda s: None, dns: bool = True) -> None:
        self.host = host
        self.rng = random.Random(seed)
        self.daemon = Daemon(host, extra_args=["--dns-upstream", "127.0.0.1:9"])
        self.max_networks = max_networks
        self.max_sandboxes = max_sandboxes
        self.log = log
        self.dns = dns
        self.networks: dict[str, bool] = {}              # name -> internal
        self.parent_of: dict[str, str] = {}               # macvlan network -> its parent link
        self.sandboxes: dict[str, SandboxModel] = {}
        self.uncertain: set[str] = set()                  # "n:NAME" / "s:NAME"
        self.pending_create: dict[str, list[str]] = {}    # sandbox -> networks asked (in-flight create)
        self.stats = Stats()
        self._counter = 0
        self._next_port = 20000
        self.history: list[str] = []                      # recent operations, for reports

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self.daemon.close()

    def _start(self, crash_at: str = "") -> None:
        self.daemon.env = {"PYNET_CRASH_AT": crash_at} if crash_at else {}
        self.daemon.start(timeout=60)

    def _dead(self) -> bool:
        return self.daemon.proc is None or self.daemon.proc.poll() is not None

    def run(self, rounds: int, *, max_ops: int = 12, deadline: float | None = None) -> Stats:
        for parent in PARENTS:  # a LAN for macvlan networks: veth pairs inside the test's host
            self.host.exec(["ip", "link", "add", parent, "type", "veth", "peer", "name", f"{parent}p"])
            self.host.exec(["ip", "link", "set", parent, "up"])
            self.host.exec(["ip", "link", "set", f"{parent}p", "up"])
        self._crash_at = self._pick_crash_point()
        self._start(self._crash_at)
        self.check()
        for _ in range(rounds):
            if deadline is not None and time.monotonic() > deadline:
                break
            self.round(max_ops)
        self.daemon.stop()
        return self.stats

    def round(self, max_ops: int) -> None:
        """One round: arm a way to die, operate until dead, restart, check."""
        self.stats.rounds += 1
        crash_at = self._crash_at
        pid = self.daemon.proc.pid  # type: ignore[union-attr]
        stop_killer = threading.Event()
        killer = None
        if not crash_at:
            delay = self.rng.uniform(0.02, 1.2)

            def kill_later() -> None:
                if not stop_killer.wait(delay):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

            killer = threading.Thread(target=kill_later, daemon=True)
            killer.start()
        for _ in range(max_ops):
            if not self.step():
                break
        stop_killer.set()
        if killer is not None:
            killer.join()
        died_by_itself = self._dead()
        self.daemon.kill9()
        self.stats.kills += 1
        if crash_at and died_by_itself:
            self.stats.crashpoint_kills += 1
        # Restarted already armed for the next round: the check only reads.
        self._crash_at = self._pick_crash_point()
        self.history.append(f"-- kill {self.stats.kills} ({'crash point ' + crash_at if crash_at else 'killer thread'}), restart armed with {self._crash_at or 'nothing'}")
        self._start(self._crash_at)
        self.check()

    def _pick_crash_point(self) -> str:
        return self.rng.choice(CRASH_POINTS) if self.rng.random() < 0.35 else ""

    # ------------------------------------------------------------ operations

    def _name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def step(self) -> bool:
        """One random operation; False once the daemon is gone."""
        c = self.daemon.client()
        ops: list[tuple[float, Callable[[Any], None]]] = [
            (2 if len(self.networks) < self.max_networks else 0.2, self.op_network_create),
            (3 if len(self.sandboxes) < self.max_sandboxes else 0.3, self.op_sandbox_create),
            (3 if self.sandboxes and self.networks else 0, self.op_connect),
            (2 if any(s.nets for s in self.sandboxes.values()) else 0, self.op_disconnect),
            (1.5 if self.sandboxes else 0, self.op_sandbox_rm),
            (1 if self.networks else 0, self.op_network_rm),
        ]
        total = sum(w for w, _ in ops)
        pick = self.rng.uniform(0, total)
        for w, op in ops:
            pick -= w
            if pick <= 0 and w > 0:
                break
        self.stats.ops += 1
        self.history = self.history[-60:]
        try:
            op(c)
            return True
        except DaemonUnreachable:
            return False

    def _call(self, touched: list[str], fn: Callable[[], Any], what: str = "") -> tuple[bool, Any]:
        """Run one API call: (True, result) when acknowledged, (False, err)
        when refused; the daemon vanishing marks `touched` uncertain and
        propagates.  A 5xx is a violation."""
        try:
            result = fn()
        except DaemonUnreachable:
            self.history.append(f"{what}: KILLED in flight")
            self.uncertain.update(touched)
            raise
        except Internal as exc:
            self.history.append(f"{what}: 5xx {exc.message}")
            self.stats.violations.append(f"5xx from the API: {exc.message}")
            self.uncertain.update(touched)
            return False, exc
        except PynetError as exc:
            self.history.append(f"{what}: refused {exc.message}")
            self.stats.refused += 1
            return False, exc
        self.stats.acked += 1
        if what:
            self.history.append(f"{what}: ok")
        return True, result

    def _record_ips(self, c: Any, name: str) -> None:
        ok, sb = self._call([], lambda: c.sandbox_inspect(name))
        if ok:
            m = self.sandboxes[name]
            for net, ep in sb["Networks"].items():
                m.nets[net] = ep["IPAddress"]
            m.ports = _ports(sb)

    def op_network_create(self, c: Any) -> None:
        name = self._name("n")
        internal = self.rng.random() < 0.2
        k = self._counter % 250
        body = {"Name": name, "Internal": internal, "IPAM": {"Config": [{"Subnet": f"10.{200 + k // 250}.{k}.0/24"}]}}
        free = [p for p in PARENTS if p not in self.parent_of.values()]
        if free and self.rng.random() < 0.3:
            self.parent_of[name] = parent = self.rng.choice(free)
            body.update(Driver="macvlan", Options={"parent": parent})
        ok, _ = self._call([f"n:{name}"], lambda: c.network_create(body), f"network create {name} {body.get('Driver', 'bridge')} internal={internal}")
        if ok:
            self.networks[name] = internal
            self.stats.macvlan_networks += name in self.parent_of
        elif f"n:{name}" not in self.uncertain:
            self.parent_of.pop(name, None)

    def op_network_rm(self, c: Any) -> None:
        name = self.rng.choice(sorted(self.networks))
        ok, err = self._call([f"n:{name}"], lambda: c.network_remove(name), f"network rm {name}")
        busy = any(name in s.nets for s in self.sandboxes.values())
        if ok:
            if busy:
                self.stats.violations.append(f"network {name} removed while the model has endpoints on it")
            self.networks.pop(name, None)
            self.parent_of.pop(name, None)
        elif not busy and f"n:{name}" not in self.uncertain:
            self.stats.violations.append(f"network rm {name} refused without endpoints: {err}")

    def op_sandbox_create(self, c: Any) -> None:
        name = self._name("s")
        nets = self.rng.sample(sorted(self.networks), k=min(len(self.networks), self.rng.choice((0, 1, 1, 2))))
        ports = []
        if nets and self.rng.random() < 0.5:
            self._next_port += 1
            ports.append(f"{self._next_port}:80/tcp")
            if self.rng.random() < 0.3:
                ports.append("127.0.0.1::53/udp")
        body = {"Name": name, "Networks": [{"Network": n} for n in nets], "Ports": ports}
        self.pending_create[name] = nets
        try:
            ok, _ = self._call([f"s:{name}"], lambda: c.sandbox_create(body), f"sandbox create {name} {nets} {ports}")
        finally:
            if f"s:{name}" not in self.uncertain:
                self.pending_create.pop(name, None)
        if ok:
            self.sandboxes[name] = SandboxModel(nets={n: None for n in nets})
            self._record_ips(c, name)

    def op_connect(self, c: Any) -> None:
        name = self.rng.choice(sorted(self.sandboxes))
        free = [n for n in sorted(self.networks) if n not in self.sandboxes[name].nets]
        if not free:
            return
        net = self.rng.choice(free)
        ok, _ = self._call([f"s:{name}"], lambda: c.network_connect(net, {"Container": name}), f"connect {name} {net}")
        if ok:
            self.sandboxes[name].nets[net] = None
            self._record_ips(c, name)

    def op_disconnect(self, c: Any) -> None:
        name = self.rng.choice(sorted(n for n, s in self.sandboxes.items() if s.nets))
        net = self.rng.choice(sorted(self.sandboxes[name].nets))
        ok, err = self._call([f"s:{name}"], lambda: c.network_disconnect(net, {"Container": name}), f"disconnect {name} {net}")
        if ok:
            del self.sandboxes[name].nets[net]
            self._record_ips(c, name)
        elif f"s:{name}" not in self.uncertain:
            self.stats.violations.append(f"disconnect {name} from {net} refused: {err}")

    def op_sandbox_rm(self, c: Any) -> None:
        name = self.rng.choice(sorted(self.sandboxes))
        ok, err = self._call([f"s:{name}"], lambda: c.sandbox_remove(name, force=True), f"sandbox rm {name}")
        if ok:
            del self.sandboxes[name]
        elif f"s:{name}" not in self.uncertain:
            self.stats.violations.append(f"sandbox rm {name} refused: {err}")

    # ------------------------------------------------------------ checking

    def check(self) -> list[str]:
        """Invariants plus the model; violations are recorded and returned."""
        self.stats.checks += 1
        d = self.daemon
        found = [f"invariant: {v}" for v in invariants.check(d.data_root, d.exec_root, self.host.path, dns=self.dns)]
        found += self._check_model()
        for v in found:
            self.log(f"VIOLATION (round {self.stats.rounds}): {v}")
        if found:
            self.log("recent operations:\n  " + "\n  ".join(self.history))
            self.log("daemon log (tail):\n" + d.log()[-4000:])
        self.stats.violations += found
        return found

    def _check_model(self) -> list[str]:
        c = self.daemon.client()
        out = []
        nets = {n["Name"] for n in c.networks()} - set(PREDEFINED)
        sbs = {s["Name"]: s for s in c.sandboxes()}
        for name in sorted(set(self.networks) | nets):
            if f"n:{name}" in self.uncertain:
                continue
            if name in self.networks and name not in nets:
                out.append(f"acknowledged network {name} lost")
            elif name not in self.networks and name in nets:
                out.append(f"network {name} exists but was never acknowledged")
        for name in sorted(set(self.sandboxes) | set(sbs)):
            actual = sbs.get(name)
            if f"s:{name}" in self.uncertain:
                asked = self.pending_create.get(name)
                if actual is not None and asked is not None and name not in self.sandboxes \
                        and sorted(actual["Networks"]) != sorted(asked):
                    out.append(f"half-made sandbox {name}: on {sorted(actual['Networks'])}, asked {sorted(asked)}")
                continue
            want = self.sandboxes.get(name)
            if want is None:
                out.append(f"sandbox {name} exists but was never acknowledged")
                continue
            if actual is None:
                out.append(f"acknowledged sandbox {name} lost")
                continue
            got = {n: ep["IPAddress"] for n, ep in actual["Networks"].items()}
            if sorted(got) != sorted(want.nets):
                out.append(f"sandbox {name}: networks {sorted(got)}, acknowledged {sorted(want.nets)}")
            for n, ip in want.nets.items():
                if ip is not None and n in got and got[n] != ip:
                    out.append(f"sandbox {name} on {n}: address {got[n]}, acknowledged {ip}")
            if want.ports and _ports(actual) != want.ports:
                out.append(f"sandbox {name}: ports {_ports(actual)}, acknowledged {want.ports}")
        seen: dict[tuple[str, str], str] = {}
        for name, sb in sbs.items():
            for n, ep in sb["Networks"].items():
                key = (n, ep["IPAddress"])
                if ep["IPAddress"] and key in seen:
                    out.append(f"address {ep['IPAddress']} on {n} held by {seen[key]} and {name}")
                seen[key] = name
        # The uncertain objects adopt what the daemon shows now.
        for tag in self.uncertain:
            kind, name = tag.split(":", 1)
            if kind == "n":
                if name in nets:
                    self.networks.setdefault(name, False)
                else:
                    self.networks.pop(name, None)
                    self.parent_of.pop(name, None)
            elif name in sbs:
                self.sandboxes[name] = SandboxModel(
                    nets={n: ep["IPAddress"] for n, ep in sbs[name]["Networks"].items()}, ports=_ports(sbs[name]))
            else:
                self.sandboxes.pop(name, None)
        self.uncertain.clear()
        self.pending_create.clear()
        return out


def _ports(sb: dict[str, Any]) -> list[str]:
    return sorted(f"{b['HostIp']}:{b['HostPort']}:{k}" for k, bs in (sb.get("Ports") or {}).items() for b in bs)
