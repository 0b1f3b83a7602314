"""Overlay scenarios, written against any lab whose hosts can run commands.

A lab gives `hosts` (each with `name`, `addr`, `argv(cmd)` — a command line
that runs `cmd` as root on that host —, `pynet_argv(*args)`, `kill_daemon()`
and `start_daemon()`) and `stop_etcd()` / `start_etcd()`.  The netns lab
(labs/netns_lab.py) and the Vagrant VMs (labs/vagrant_lab.py) both do, so
the same scenarios run on one machine and on real VMs.

Every scenario makes its own network and sandboxes and removes them, so
they can run in any order on one lab; each returns figures (seconds) and
raises AssertionError on the first failure, naming what did not happen.
"""

from __future__ import annotations

from concurrent import futures
import json
import subprocess
import time
from typing import Any, Callable

PING = ["busybox", "ping", "-c", "1", "-W", "1"]
TCP_SERVER = ("import socket,sys;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
              "s.bind(('',{port}));s.listen();s.settimeout(20);c,a=s.accept();c.sendall(b'pong from '+sys.argv[1].encode());c.close()")
TCP_CLIENT = ("import socket,sys,time\n"
              "for i in range(50):\n"
              "    try:\n"
              "        c=socket.create_connection((sys.argv[1],{port}),timeout=2);print(c.recv(100).decode());break\n"
              "    except OSError:\n"
              "        time.sleep(0.1)\n"
              "else:\n"
              "    sys.exit(1)\n")


def run(argv: list[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, text=True, capture_output=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r


def pynet(h: Any, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(h.pynet_argv(*args), check=check)


def in_sandbox(h: Any, sb: str, cmd: list[str], *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return run(h.pynet_argv("sandbox", "exec", sb, "--", *cmd), check=False, timeout=timeout)


def wait_until(what: str, fn: Callable[[], bool], timeout: float = 10, step: float = 0.05) -> float:
    """Seconds until `fn()` held; AssertionError after `timeout`."""
    t0 = time.monotonic()
    while True:
        if fn():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(step)


def say(msg: str) -> None:
    print(f"  - {msg}", flush=True)


def network_visible(h: Any, net: str) -> bool:
    return pynet(h, "network", "inspect", net, check=False).returncode == 0


def create_network(lab: Any, name: str, subnet: str, *extra: str) -> None:
    pynet(lab.hosts[0], "network", "create", "-d", "overlay", "--subnet", subnet, *extra, name)
    for h in lab.hosts:
        wait_until(f"network {name} visible on {h.name}", lambda h=h: network_visible(h, name), 5)


def remove(lab: Any, net: str, sandboxes: list[tuple[Any, str]]) -> None:
    for h, sb in sandboxes:
        pynet(h, "sandbox", "rm", "-f", sb, check=False)
    pynet(lab.hosts[0], "network", "rm", net, check=False)


def ping(h: Any, sb: str, target: str) -> bool:
    return in_sandbox(h, sb, [*PING, target]).returncode == 0


def tcp(hs: Any, server: str, hc: Any, client: str, port: int = 7070) -> str:
    """A TCP exchange from `client` to `server` by name; returns the reply."""
    srv = subprocess.Popen(hs.pynet_argv("sandbox", "exec", server, "--", "python3", "-c",
                                         TCP_SERVER.format(port=port), server),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = in_sandbox(hc, client, ["python3", "-c", TCP_CLIENT.format(port=port), server])
        assert r.returncode == 0, f"TCP {client} -> {server}:{port} failed: {r.stderr.strip()}"
        return r.stdout.strip()
    finally:
        try:
            srv.wait(10)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


# ------------------------------------------------------------------ scenarios

def reach(lab: Any) -> dict[str, float]:
    """A sandbox per host on one overlay; every pair pings by name and by
    address, and talks TCP by name; names resolve on every host."""
    net, hosts = "ov-reach", lab.hosts
    boxes = [(h, f"r{i + 1}") for i, h in enumerate(hosts)]
    figures: dict[str, float] = {}
    try:
        create_network(lab, net, "10.210.1.0/24")
        say(f"network {net} created on {hosts[0].name}, visible on {len(hosts)} hosts")
        for h, sb in boxes:
            pynet(h, "sandbox", "create", "--name", sb, "--network", net)
        addrs = {sb: in_sandbox(h, sb, ["ip", "-4", "-o", "addr", "show", "eth0"]).stdout.split()[3].split("/")[0]
                 for h, sb in boxes}
        assert len(set(addrs.values())) == len(boxes), f"addresses not unique: {addrs}"
        worst = 0.0
        for h, sb in boxes:
            for _, other in boxes:
                if other == sb:
                    continue
                worst = max(worst, wait_until(f"{sb} pings {other} by name", lambda: ping(h, sb, other), 5))
                assert ping(h, sb, addrs[other]), f"{sb} cannot ping {other} at {addrs[other]}"
        figures["ping_all_pairs_worst_s"] = worst
        say(f"ICMP by name and address between all {len(boxes)} sandboxes")
        for i, (h, sb) in enumerate(boxes):
            hs, srv = boxes[(i + 1) % len(boxes)]
            reply = tcp(hs, srv, h, sb)
            assert reply == f"pong from {srv}", reply
        say("TCP by name around the ring")
        link = in_sandbox(hosts[0], boxes[0][1], ["ip", "-j", "link", "show", "eth0"]).stdout
        mtu = str(json.loads(link)[0]["mtu"])
        assert mtu == "1450", f"overlay MTU inside the sandbox is {mtu}, expected 1450 (1500 - 50)"
        route = in_sandbox(hosts[0], boxes[0][1], ["ip", "route", "show", "default"]).stdout
        assert "via 10.210.1.1 dev eth0" in route, f"no default route through the overlay's gateway: {route!r}"
        say("MTU 1450 on the overlay, default route through the overlay's gateway on the sandbox's own host")
    finally:
        remove(lab, net, boxes)
    return figures


def _resolves(h: Any, sb: str, name: str) -> bool:
    return in_sandbox(h, sb, ["python3", "-c", f"import socket;socket.gethostbyname({name!r})"]).returncode == 0


def host_restart(lab: Any) -> dict[str, float]:
    """A host's pynetd killed -9: once its lease expires, the others drop
    its endpoints (name and forwarding entry); restarted, it re-registers
    and its sandbox is reachable again."""
    net, hosts = "ov-restart", lab.hosts
    boxes = [(h, f"k{i + 1}") for i, h in enumerate(hosts)]
    last_h, last_sb = boxes[-1]
    figures: dict[str, float] = {}
    try:
        create_network(lab, net, "10.210.2.0/24")
        for h, sb in boxes:
            pynet(h, "sandbox", "create", "--name", sb, "--network", net)
        wait_until(f"k1 pings {last_sb}", lambda: ping(hosts[0], "k1", last_sb), 5)
        last_h.kill_daemon()
        say(f"pynetd on {last_h.name} killed -9")
        assert ping(hosts[0], "k1", last_sb), "the data plane must outlive the daemon until its lease expires"
        figures["dead_host_endpoints_removed_s"] = wait_until(
            f"{last_sb} forgotten on {hosts[0].name}", lambda: not _resolves(hosts[0], "k1", last_sb), 30, 0.2)
        say(f"{last_sb}'s name removed from {hosts[0].name} {figures['dead_host_endpoints_removed_s']:.1f}s after the kill")
        fdb = run(hosts[0].argv(["bridge", "fdb", "show"])).stdout
        assert f"dst {last_h.addr}" not in fdb, f"forwarding entries to the dead host remain:\n{fdb}"
        t0 = time.monotonic()
        last_h.start_daemon()
        wait_until(f"k1 pings {last_sb} again", lambda: ping(hosts[0], "k1", last_sb), 15)
        figures["returned_host_reachable_s"] = time.monotonic() - t0
        say(f"{last_h.name} back: {last_sb} reachable by name {figures['returned_host_reachable_s']:.1f}s after restart")
    finally:
        remove(lab, net, boxes)
    return figures


def etcd_restart(lab: Any) -> dict[str, float]:
    """etcd stopped: running overlay traffic and local networks keep
    working, overlay operations fail with a clear error; etcd back: the
    hosts catch up and new endpoints are reachable again."""
    net, hosts = "ov-etcd", lab.hosts
    h1, h2 = hosts[0], hosts[1]
    boxes = [(h1, "e1"), (h2, "e2")]
    figures: dict[str, float] = {}
    try:
        create_network(lab, net, "10.210.3.0/24")
        for h, sb in boxes:
            pynet(h, "sandbox", "create", "--name", sb, "--network", net)
        wait_until("e1 pings e2", lambda: ping(h1, "e1", "e2"), 5)
        lab.stop_etcd()
        say("etcd stopped")
        assert ping(h1, "e1", "e2"), "overlay traffic stopped with etcd"
        pynet(h1, "network", "create", "--subnet", "10.211.0.0/24", "local-while-down")
        pynet(h1, "network", "rm", "local-while-down")
        r = pynet(h2, "network", "create", "-d", "overlay", "--subnet", "10.210.4.0/24", "ov-refused", check=False)
        assert r.returncode != 0 and "unreachable" in r.stderr, f"overlay create without etcd: {r.stderr!r}"
        r = pynet(h2, "sandbox", "create", "--name", "e3", "--network", net, check=False)
        assert r.returncode != 0 and "unreachable" in r.stderr, f"overlay connect without etcd: {r.stderr!r}"
        say(f"while down: traffic flows, local networks work, overlay ops refused ({r.stderr.strip()[:90]}...)")
        lab.start_etcd()
        t0 = time.monotonic()
        wait_until("overlay connect works again", lambda: pynet(h2, "sandbox", "create", "--name", "e3", "--network",
                                                                  net, check=False).returncode == 0, 20, 0.2)
        boxes.append((h2, "e3"))
        wait_until("e1 pings e3", lambda: ping(h1, "e1", "e3"), 5)
        figures["etcd_back_to_new_endpoint_reachable_s"] = time.monotonic() - t0
        say(f"etcd back: new endpoint e3 reachable by name after {figures['etcd_back_to_new_endpoint_reachable_s']:.1f}s")
    finally:
        remove(lab, net, boxes)
    return figures


def concurrent(lab: Any, per_host: int = 8) -> dict[str, float]:
    """Every host attaches sandboxes at the same time: all addresses are
    unique cluster-wide, and every sandbox is reachable."""
    net, hosts = "ov-conc", lab.hosts
    boxes = [(h, f"c{h.name}-{i}") for h in hosts for i in range(per_host)]
    figures: dict[str, float] = {}
    try:
        create_network(lab, net, "10.210.5.0/24")

        def attach_all(h: Any) -> None:
            for hh, sb in boxes:
                if hh is h:
                    pynet(h, "sandbox", "create", "--name", sb, "--network", net)

        t0 = time.monotonic()
        with futures.ThreadPoolExecutor(len(hosts)) as pool:
            list(pool.map(attach_all, hosts))
        figures["attach_all_s"] = time.monotonic() - t0
        addrs: dict[str, str] = {}
        for h in hosts:
            info = json.loads(pynet(h, "network", "inspect", net).stdout)[0]
            for c in info["Containers"].values():
                addrs[c["Name"]] = c["IPv4Address"].split("/")[0]
        assert len(addrs) == len(boxes), f"{len(addrs)} endpoints found, {len(boxes)} made"
        dupes = {a for a in addrs.values() if list(addrs.values()).count(a) > 1}
        assert not dupes, f"duplicate addresses: {dupes}"
        say(f"{len(boxes)} concurrent attaches from {len(hosts)} hosts: {len(set(addrs.values()))} unique addresses")
        for h, sb in boxes:  # what the kernel holds, not only what the endpoints say
            shown = in_sandbox(h, sb, ["ip", "-4", "-o", "addr", "show", "eth0"]).stdout
            inside = [line.split()[3] for line in shown.splitlines()]
            assert inside == [addrs[sb] + "/24"], f"{sb} holds {inside}, its endpoint says {addrs[sb]}"
        src_h, src = boxes[0]
        for _, sb in boxes[1:]:
            assert ping(src_h, src, addrs[sb]), f"{src} cannot reach {sb} at {addrs[sb]}"
        say(f"{src} reaches all {len(boxes) - 1} others")
    finally:
        remove(lab, net, boxes)
    return figures


SCENARIOS: dict[str, Callable[[Any], dict[str, float]]] = {
    "reach": reach,
    "host-restart": host_restart,
    "etcd-restart": etcd_restart,
    "concurrent": concurrent,
}
