"""Which kernel step of a bridge attach grows with the number of ports.

    python bench/bench_bridge_ports.py [--ports 500] [BRIDGE OPTION ...]

The by-hand floor of the scale figure grows with the network (×1.5–1.6
at 500 attaches); this splits one attach into the requests pynet makes
over raw rtnetlink and times each, for the first and the last 20 of
--ports attaches to one bridge: the veth born with its peer in a fresh
namespace, the alias (with IPv6 address generation off), the port joining
the bridge (IFLA_MASTER), the port up.  Extra arguments are options of
`ip link add br0 type bridge`, e.g. `mcast_snooping 0`.  Everything lives
in namespaces of its own, removed at the end.  Never run by pytest.

What grows (session 5, `perf record -g` around ports 1-100 and 401-500 of
this script, kernel 6.18): br_add_if walks the bridge's ports, or its
local FDB entries, about eight times per join, unconditionally.
The walks, by the kernel function under br_add_if, samples at 10 kHz:
  netdev_master_upper_dev_link   80 -> 301   (the lower-device list)
  br_add_if itself               34 -> 294   (find_portno, port count)
  br_stp_enable_port             38 -> 205   (state selection, per port)
  br_manage_promisc              29 -> 167
  netdev_update_features          5 -> 127
  br_stp_recalculate_bridge_id    9 ->  74
  all of br_add_if              331 -> 1377  (x4.2)
No bridge or port option, and no order or shape of the requests, makes
the join flat:
- `mcast_snooping 0` and a user-set MTU remove two small walks
  (0.20 -> 1.02 ms becomes 0.16 -> 0.87);
- `vlan_filtering` is not built into this kernel;
- IFLA_MASTER in the create request only moves the cost into that request.

Beyond the join (session 6, `perf record -g` of pynetd around attaches
1-100 and 401-500 of one network): every port keeps IPv6 enabled on its
host end, and with it an ff00::/8 route in the host's IPv6 FIB (503
routes at 500 ports).  Each link event on any port (the alias request,
the carrier coming up) walks that whole FIB (fib6_ifdown, rt6_sync_up):
about +0.2 ms per attach by port 450.  Writing disable_ipv6=1 on the host
end keeps the FIB at 3 routes, but the write itself costs about 0.15 ms
(addrconf tears the device's IPv6 state down): it pays off only past ~300
ports on one host, so it was not adopted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netstack.kernel import rtnl as R  # noqa: E402
from netstack.kernel.netns import run_in_netns  # noqa: E402

STEPS = ("veth create", "alias", "join bridge", "port up")


def measure(ports: int, bridge_opts: list[str]) -> dict[str, list[float]]:
    tag = f"pnbp-{os.getpid()}"
    host, sandboxes = f"{tag}-h", []
    subprocess.run(["ip", "netns", "add", host], check=True)
    try:
        subprocess.run(["ip", "-n", host, "link", "add", "br0", "type", "bridge", *bridge_opts], check=True)
        subprocess.run(["ip", "-n", host, "link", "set", "br0", "up"], check=True)
        nl = run_in_netns(f"/run/netns/{host}", R.Rtnl)
        bridge = nl.link_index("br0")
        times: dict[str, list[float]] = {s: [] for s in STEPS}
        for i in range(ports):
            ns = f"{tag}-{i}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            sandboxes.append(ns)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                mac = "02:00:00:00:%02x:%02x" % (i // 256, i % 256)
                t = [time.perf_counter()]
                echoed = nl.request(R.RTM_NEWLINK, R.F_ACK | R.F_CREATE | R.F_EXCL | R.F_ECHO,
                                    R.veth_request(f"v{i}", "eth0", peer_netns_fd=fd, peer_mac=mac, mtu=1500,
                                                   master=0), "veth")
                t.append(time.perf_counter())
                index, _ = R.link_and_peer(echoed[0])
                nl.set_alias(index, "pynet:endpoint:bench", no_ipv6_link_local=True)
                t.append(time.perf_counter())
                nl.request(R.RTM_NEWLINK, R.F_ACK, R.ifinfo(index) + R.attr(R.IFLA_MASTER, struct.pack("=I", bridge)),
                           "master")
                t.append(time.perf_counter())
                nl.link_up(index)
                t.append(time.perf_counter())
            finally:
                os.close(fd)
            for step, a, b in zip(STEPS, t, t[1:]):
                times[step].append((b - a) * 1000)
        nl.close()
        return times
    finally:
        for ns in sandboxes:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        subprocess.run(["ip", "netns", "del", host], check=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ports", type=int, default=500)
    p.add_argument("bridge_opts", nargs="*", help="options of `ip link add br0 type bridge`")
    args = p.parse_args()
    times = measure(args.ports, args.bridge_opts)
    print(f"ms per request, median of the first / last 20 of {args.ports} ports"
          f" (bridge options: {' '.join(args.bridge_opts) or 'kernel defaults'})")
    for step, xs in times.items():
        first, last = statistics.median(xs[:20]), statistics.median(xs[-20:])
        print(f"  {step:12s} {first:6.3f} → {last:6.3f}  ×{last / first:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
