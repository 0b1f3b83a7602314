"""macvlan attach/detach latency: pynet vs Docker vs the CNI macvlan plugin.

    .venv/bin/python bench/bench_macvlan.py [--quick] [--rounds N] [--peers docker,cni] [--gap MS]

Each stack gets a host namespace of its own (the stack adapters of
bench/stacks.py) with a veth pair `lan0`/`lan0p`, both ends up, standing for
the LAN; `lan0` is the macvlan parent.  One unattached sandbox per stack, then
rounds of attach + detach, interleaved across the stacks so drift hits all
of them alike:

    pynet   POST /networks/{id}/connect, /disconnect of a sandbox made with
            POST /sandboxes/create (pynetd over its UNIX socket)
    docker  the same two Engine API calls, which is what `docker network
            connect/disconnect` sends (the CLI's own start-up is not timed),
            for a busybox container created in `none` mode
    cni     /usr/lib/cni/macvlan with host-local IPAM, ADD then DEL, run as a
            runtime runs it: one exec per operation, CNI_* env, config on stdin

Times are wall-clock milliseconds of the whole operation; the figure is
median (min-max) and the ratios of the medians.  pynet deletes a detached
interface in the background (its detach returns once the interface is cut
off); `--gap MS` pauses, untimed, after every operation, so that work cannot
overlap the next stack's timed one (a check that the ratios do not come
from it; 0, the default, runs the operations back to back).  Results go to
bench/results/macvlan.json.  `figure(quick)` is the entry point for
bench/run.py.  Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from typing import Any, Callable

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

from _util import BenchError, Cleanup, fmt, run, summary, timed  # noqa: E402
from stacks import CNI_PATH, DockerStack, Net, PynetStack, Sandbox  # noqa: E402

SUBNET = "10.90.0.0/16"
RESULTS = os.path.join(BENCH_DIR, "results", "macvlan.json")


def _lan(host_ns_name: str) -> None:
    """The parent: a veth pair in the stack's host namespace, both ends up."""
    run(["ip", "-n", host_ns_name, "link", "add", "lan0", "type", "veth", "peer", "lan0p"])
    for dev in ("lan0", "lan0p"):
        run(["ip", "-n", host_ns_name, "link", "set", dev, "up"])


class _Engine:
    """pynetd or dockerd: a macvlan network and a sandbox through the Engine API."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.label = stack.label

    def setup(self) -> None:
        self.stack.start()
        _lan(self.stack.host_ns_name)
        body = {"Name": "mv", "Driver": "macvlan", "Options": {"parent": "lan0"},
                "IPAM": {"Driver": "default", "Config": [{"Subnet": SUBNET}]}}
        nid = self.stack.api.request("POST", "/networks/create", body)["Id"]
        self.net = Net(name="mv", id=nid, subnet=SUBNET)
        self.sb: Sandbox = self.stack.new_sandbox("mvsb")

    def attach(self) -> None:
        self.stack.attach(self.net, self.sb)

    def detach(self) -> None:
        self.stack.detach(self.net, self.sb)

    def teardown(self) -> None:
        self.stack.stop()


class _Cni:
    """The reference macvlan plugin, one exec per ADD/DEL."""

    label = "CNI macvlan"

    def __init__(self, tag: str, workdir: str, cleanup: Cleanup) -> None:
        self.cleanup = cleanup
        self.workdir = os.path.join(workdir, "cni")
        self.host = f"pnbh-{tag}-cnimv"
        self.sbns = f"pnbh-{tag}-cnimv-sb"
        self.plugin = os.path.join(CNI_PATH, "macvlan")

    def setup(self) -> None:
        if not os.access(self.plugin, os.X_OK):
            raise BenchError(f"{self.plugin} not installed")
        os.makedirs(self.workdir, exist_ok=True)
        for ns in (self.host, self.sbns):
            run(["ip", "netns", "add", ns])
            self.cleanup.push(f"netns {ns}", lambda ns=ns: run(["ip", "netns", "del", ns], check=False))
        self.cleanup.push("cni dirs", lambda: run(["rm", "-rf", self.workdir], check=False))
        _lan(self.host)
        self.conf = json.dumps({
            "cniVersion": "1.0.0", "name": "mv", "type": "macvlan", "master": "lan0", "mode": "bridge",
            "ipam": {"type": "host-local", "subnet": SUBNET, "dataDir": os.path.join(self.workdir, "ipam")},
        })
        self.cid = secrets.token_hex(32)

    def _call(self, command: str) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command,
               "CNI_CONTAINERID": self.cid, "CNI_NETNS": f"/run/netns/{self.sbns}",
               "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH}
        run([self.plugin], netns=f"/run/netns/{self.host}", input=self.conf, env=env)

    def attach(self) -> None:
        self._call("ADD")

    def detach(self) -> None:
        self._call("DEL")

    def teardown(self) -> None:
        pass


def measure(rounds: int, peers: list[str], log: Callable[[str], None] = print, gap_ms: float = 0) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    workdir = tempfile.mkdtemp(prefix="pnbh-macvlan-")
    cleanup = Cleanup()
    cleanup.push("workdir", lambda: run(["rm", "-rf", workdir], check=False))
    stacks: dict[str, Any] = {"pynet": _Engine(PynetStack(tag, workdir, cleanup))}
    if "docker" in peers:
        stacks["docker"] = _Engine(DockerStack(tag, workdir, cleanup))
    if "cni" in peers:
        stacks["cni"] = _Cni(tag, workdir, cleanup)
    times: dict[str, dict[str, list[float]]] = {}
    skipped: dict[str, str] = {}
    try:
        for name, s in list(stacks.items()):
            try:
                s.setup()
            except BenchError as exc:
                if name == "pynet":
                    raise
                skipped[name] = str(exc)
                log(f"{name}: skipped ({exc})")
                del stacks[name]
                continue
            # one warm-up round, not counted
            s.attach()
            s.detach()
            times[name] = {"attach": [], "detach": []}
        for _ in range(rounds):
            for name, s in stacks.items():
                times[name]["attach"].append(timed(s.attach)[0])
                time.sleep(gap_ms / 1000)
                times[name]["detach"].append(timed(s.detach)[0])
                time.sleep(gap_ms / 1000)
    finally:
        for s in stacks.values():
            try:
                s.teardown()
            except Exception as exc:  # noqa: BLE001  cleanup goes on
                log(f"teardown: {exc!r}")
        cleanup.run()
    out: dict[str, Any] = {"rounds": rounds, "gap_ms": gap_ms, "unit": "ms", "skipped": skipped, "stacks": {}}
    for name, t in times.items():
        out["stacks"][name] = {op: summary(xs) for op, xs in t.items()}
    pyn = out["stacks"]["pynet"]
    out["ratios"] = {
        f"pynet/{peer}": {op: round(pyn[op]["median"] / st[op]["median"], 3) for op in ("attach", "detach")}
        for peer, st in out["stacks"].items() if peer != "pynet"
    }
    return out


def figure(quick: bool = False, peers: tuple[str, ...] = ("docker", "cni")) -> dict[str, Any]:
    """For bench/run.py: the measurement as a JSON-able dict."""
    return measure(10 if quick else 50, list(peers), log=lambda m: None)


def render(res: dict[str, Any]) -> str:
    gap = f", {res['gap_ms']:g} ms pause after each operation" if res.get("gap_ms") else ""
    lines = [f"macvlan attach/detach, ms, median (min–max), {res['rounds']} interleaved rounds{gap}"]
    for name, st in res["stacks"].items():
        lines.append(f"  {name:<8} attach {fmt(st['attach'], 2):<24} detach {fmt(st['detach'], 2)}")
    for pair, r in res["ratios"].items():
        lines.append(f"  {pair:<16} attach x{r['attach']:.2f}  detach x{r['detach']:.2f}")
    for name, why in res["skipped"].items():
        lines.append(f"  {name}: skipped: {why}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 rounds instead of 50")
    ap.add_argument("--rounds", type=int, default=0)
    ap.add_argument("--peers", default="docker,cni")
    ap.add_argument("--gap", type=float, default=0, metavar="MS", help="untimed pause after every operation")
    args = ap.parse_args()
    rounds = args.rounds or (10 if args.quick else 50)
    res = measure(rounds, [p for p in args.peers.split(",") if p], gap_ms=args.gap)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(res, f, indent=1)
    print(render(res))


if __name__ == "__main__":
    main()
