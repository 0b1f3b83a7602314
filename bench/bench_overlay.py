"""Overlay benchmarks on the netns lab (3 hosts, etcd, a pynetd each).

    python bench/bench_overlay.py [--quick] [--out bench/results/overlay.json]

1. time to reachable: a sandbox is created on h1 (with a known address);
   the clock runs from the API call until h2's *and* h3's VXLAN devices
   hold its FDB and neighbour entries (polled over netlink every ~1 ms);
   then one ping from h2 checks the data plane.  Median/max over 50 (10).
2. attach latency (3 hosts up): sandbox create + connect on a bridge
   network, on an internal overlay (no gateway bridge) and on a normal
   overlay (which also attaches pynet_gwbridge), and one etcd round trip
   from a host (the goal: overlay <= bridge + one etcd round trip).
3. throughput: iperf3 between sandboxes on h1 and h2 across the overlay
   vs a VXLAN pair made by hand between the same two hosts' namespaces
   (same underlay, no bridge, no veth: the kernel's limit).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from labs import scenarios  # noqa: E402
from labs.netns_lab import NetnsLab, sh  # noqa: E402
from netstack.api.client import Client  # noqa: E402
from netstack.kernel import links  # noqa: E402


def stats(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "median_ms": round(statistics.median(xs) * 1000, 2),
            "max_ms": round(max(xs) * 1000, 2), "min_ms": round(min(xs) * 1000, 2)}


def time_to_reachable(lab: NetnsLab, n: int) -> dict[str, object]:
    h1, h2, h3 = lab.hosts[:3]
    c1 = Client(f"unix://{h1.st.socket}")
    net = c1.network_create({"Name": "bench-ttr", "Driver": "overlay", "IPAM": {"Config": [{"Subnet": "10.220.0.0/22"}]}})
    vx = f"pox-{net['Id'][:11]}"
    for h in (h2, h3):
        scenarios.wait_until("network adopted", lambda h=h: scenarios.network_visible(h, "bench-ttr"), 5)
    scenarios.pynet(h2, "sandbox", "create", "--name", "ttr-probe", "--network", "bench-ttr")
    samples, failures = [], 0
    try:
        for i in range(n):
            ip = f"10.220.1.{10 + i}"
            t0 = time.perf_counter()
            c1.sandbox_create({"Name": f"ttr{i}", "Networks": [{"Network": "bench-ttr", "IPv4Address": ip}]})
            pending = {h2.st.ns, h3.st.ns}
            handles = {ns: links.in_sandbox(f"/run/netns/{ns}") for ns in pending}
            try:
                iprs = {ns: cm.__enter__() for ns, cm in handles.items()}
                deadline = t0 + 10
                while pending and time.perf_counter() < deadline:
                    for ns in list(pending):
                        if any(e[0] == ip for e in links.neigh_entries(iprs[ns], vx)) and links.fdb_entries(iprs[ns], vx):
                            pending.discard(ns)
                    time.sleep(0.001)
            finally:
                for cm in handles.values():
                    cm.__exit__(None, None, None)
            if pending:
                failures += 1
                continue
            samples.append(time.perf_counter() - t0)
            if not scenarios.ping(h2, "ttr-probe", ip):
                failures += 1
    finally:
        for i in range(n):
            c1.sandbox_remove(f"ttr{i}", force=True)
        scenarios.pynet(h2, "sandbox", "rm", "-f", "ttr-probe", check=False)
        c1.network_remove("bench-ttr")
        c1.close()
    return {**stats(samples), "failures": failures, "goal": "median < 1000 ms, max < 3000 ms"}


def attach_latency(lab: NetnsLab, n: int) -> dict[str, object]:
    h1 = lab.hosts[0]
    c = Client(f"unix://{h1.st.socket}")
    c.network_create({"Name": "bench-br", "IPAM": {"Config": [{"Subnet": "10.221.0.0/22"}]}})
    c.network_create({"Name": "bench-ov", "Driver": "overlay", "IPAM": {"Config": [{"Subnet": "10.222.0.0/22"}]}})
    c.network_create({"Name": "bench-ovi", "Driver": "overlay", "Internal": True,
                      "IPAM": {"Config": [{"Subnet": "10.223.0.0/22"}]}})
    out: dict[str, object] = {}
    try:
        for net in ("bench-br", "bench-ovi", "bench-ov"):
            xs = []
            for i in range(n):
                t0 = time.perf_counter()
                c.sandbox_create({"Name": f"at-{net}-{i}", "Networks": [{"Network": net}]})
                xs.append(time.perf_counter() - t0)
            out[net] = stats(xs)
            for i in range(n):
                c.sandbox_remove(f"at-{net}-{i}", force=True)
        rtt = sh(h1.argv([sys.executable, "-c",
                          "import time,statistics,sys;sys.path.insert(0,%r)\n"
                          "from netstack.etcd import EtcdClient\n"
                          "e=EtcdClient([('10.199.0.2',2379)]);xs=[]\n"
                          "for i in range(50):\n t=time.perf_counter();e.get('/pynet/pools');xs.append(time.perf_counter()-t)\n"
                          "print(statistics.median(xs))" % os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]))
        out["etcd_round_trip_ms"] = round(float(rtt.stdout) * 1000, 2)
    finally:
        for net in ("bench-br", "bench-ov", "bench-ovi"):
            c.network_remove(net)
        c.close()
    return out


def iperf(client_argv: list[str], server_argv: list[str], target: str, seconds: int) -> float:
    srv = subprocess.Popen([*server_argv, "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        for _ in range(50):
            r = subprocess.run([*client_argv, "iperf3", "-c", target, "-t", str(seconds), "-J"],
                               capture_output=True, text=True)
            try:
                return float(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e9
            except (ValueError, KeyError):
                time.sleep(0.2)  # the server was not listening yet
        raise RuntimeError(f"iperf3 to {target} failed: {r.stdout[-500:]}")
    finally:
        try:
            srv.wait(5)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()


def throughput(lab: NetnsLab, seconds: int) -> dict[str, object]:
    h1, h2 = lab.hosts[:2]
    scenarios.create_network(lab, "bench-tp", "10.224.0.0/24")
    try:
        scenarios.pynet(h1, "sandbox", "create", "--name", "tp1", "--network", "bench-tp", "--ip", "10.224.0.11")
        scenarios.pynet(h2, "sandbox", "create", "--name", "tp2", "--network", "bench-tp", "--ip", "10.224.0.12")
        overlay = iperf(h1.pynet_argv("sandbox", "exec", "tp1", "--"), h2.pynet_argv("sandbox", "exec", "tp2", "--"),
                        "10.224.0.12", seconds)
    finally:
        scenarios.remove(lab, "bench-tp", [(h1, "tp1"), (h2, "tp2")])
    for h, me, peer in ((h1, "10.250.0.1", h2.addr), (h2, "10.250.0.2", h1.addr)):
        sh(h.argv(["ip", "link", "add", "vxhand", "type", "vxlan", "id", "9999", "local", h.addr, "remote", peer,
                   "dstport", "4789", "nolearning"]))
        sh(h.argv(["ip", "link", "set", "vxhand", "mtu", "1450", "up"]))
        sh(h.argv(["ip", "addr", "add", f"{me}/24", "dev", "vxhand"]))
    try:
        hand = iperf(h1.argv([]), h2.argv([]), "10.250.0.2", seconds)
    finally:
        for h in (h1, h2):
            sh(h.argv(["ip", "link", "del", "vxhand"]), check=False)
    return {"overlay_gbps": round(overlay, 2), "hand_vxlan_gbps": round(hand, 2),
            "ratio": round(overlay / hand, 3), "goal": "ratio >= 0.90", "seconds": seconds}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10 samples, 2 s iperf runs")
    p.add_argument("--out", default="")
    args = p.parse_args()
    n = 10 if args.quick else 50
    lab = NetnsLab.up(3, ttl=4)
    try:
        results = {
            "time_to_reachable": time_to_reachable(lab, n),
            "attach_latency": attach_latency(lab, 10 if args.quick else 30),
            "throughput": throughput(lab, 2 if args.quick else 5),
        }
    finally:
        problems = lab.down()
        if problems or lab.leftovers():
            print("leftovers:", problems, lab.leftovers(), file=sys.stderr)
    print(json.dumps(results, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
