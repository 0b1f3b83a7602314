"""Attach a network namespace to a pynet network, read back its addresses,
detach it: what a container runtime does for each container.

Two ways to drive pynet from Python, same steps:

    in process   netstack.Controller on a data root of its own (no daemon)
    client       netstack.Client talking to a running pynetd

    python examples/attach_namespace.py --data-root /tmp/pynet-example
    python examples/attach_namespace.py --host unix:///run/pynet/pynet.sock

Needs root.  The in-process mode creates a bridge in the namespace it runs
in, so try it inside a scratch one:
``ip netns add scratch; nsenter --net=/run/netns/scratch python examples/...``.
It prints one JSON line: the interfaces the API reports and the addresses
the kernel shows inside the namespace, both before detaching.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys

import netstack

SUBNET = "10.123.0.0/24"


def kernel_addresses(ns: str) -> list[str]:
    """Global addresses inside namespace `ns`, as the kernel has them."""
    out = subprocess.run(["ip", "-n", ns, "-j", "addr", "show"], check=True, capture_output=True, text=True)
    return sorted(
        f"{a['ifname']} {i['local']}/{i['prefixlen']}"
        for a in json.loads(out.stdout) for i in a.get("addr_info", []) if i.get("scope") == "global"
    )


def in_process(data_root: str, ns: str) -> dict[str, object]:
    from netstack.kernel.firewall import NoFirewall

    ctrl = netstack.Controller(data_root, exec_root=f"{data_root}/run", firewall=NoFirewall())
    ctrl.start()
    try:
        ctrl.create_network(netstack.NetworkCreate(
            name="example", subnets=(netstack.SubnetRequest(subnet=SUBNET),)))
        try:
            sb = ctrl.create_sandbox(netstack.SandboxCreate(name="demo", key=f"/run/netns/{ns}"))
            ctrl.connect("example", "demo", netstack.EndpointConfig(aliases=("web",)))
            api = [{"ifname": e.ifname, "ipv4": e.ipv4, "mac": e.mac} for e in ctrl.endpoints_of_sandbox(sb.id)]
            kernel = kernel_addresses(ns)
            ctrl.disconnect("example", "demo")
            ctrl.delete_sandbox("demo")
        finally:
            ctrl.delete_network("example")
    finally:
        ctrl.close()
    return {"api": api, "kernel": kernel, "after": kernel_addresses(ns)}


def with_client(host: str, ns: str) -> dict[str, object]:
    with netstack.Client(host) as c:
        c.network_create({"Name": "example", "IPAM": {"Config": [{"Subnet": SUBNET}]}})
        try:
            c.sandbox_create({"Name": "demo", "Key": f"/run/netns/{ns}"})
            c.network_connect("example", {"Container": "demo", "EndpointConfig": {"Aliases": ["web"]}})
            nets = c.sandbox_inspect("demo")["Networks"]
            api = [{"ifname": n["IfName"], "ipv4": f"{n['IPAddress']}/{n['IPPrefixLen']}", "mac": n["MacAddress"]}
                   for n in nets.values()]
            kernel = kernel_addresses(ns)
            c.network_disconnect("example", {"Container": "demo"})
            c.sandbox_remove("demo")
        finally:
            c.network_remove("example")
    return {"api": api, "kernel": kernel, "after": kernel_addresses(ns)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--data-root", help="run a Controller in process on this data root")
    mode.add_argument("--host", help="talk to the pynetd at this socket (unix:///PATH)")
    args = p.parse_args()
    # The runtime's side: a namespace for the "container".
    ns = f"pynet-example-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        result = in_process(args.data_root, ns) if args.data_root else with_client(args.host, ns)
    except netstack.PynetError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
