"""The invariant checker: does the store agree with the kernel, DNS and IPAM?

Used by the crash harness after every restart of pynetd (tests/chaos,
bench/chaos.py), by the concurrency tests, and usable by an operator on a
live pynetd: it only reads (the store through a read-only SQLite
connection, links and addresses through netlink, rules through
``iptables-legacy-save``, names through DNS queries sent from inside each
sandbox).

What must hold, for the bridge networks pynet makes (the others are
checked for store consistency only):

store
    no object left "creating"/"deleting" (start-up finishes or undoes
    them); every endpoint's network and sandbox are stored; no address
    handed out twice within a network (endpoints, gateway, aux addresses).
kernel <- store
    every network's bridge exists, carries pynet's alias and its gateway
    addresses; every endpoint's veth exists on that bridge, and the
    sandbox side has the endpoint's interface with its address; every
    sandbox's namespace exists and its default route goes through the
    endpoint Docker's rule makes the gateway.
kernel -> store
    no link aliased ``pynet:bridge:``/``pynet:endpoint:`` (nor a
    ``pnv*``/``br-*`` link) that no stored object owns; no namespace file
    under the exec root that no sandbox owns.
firewall
    the PYNET rules of the host namespace (IPv4 and IPv6) are exactly those
    planned from the store (``firewall.plan_all``), so no rule is missing
    and no rule is orphaned; the published ports of each sandbox are
    planned on its gateway endpoint, chosen by rule, not by the stored flag.
DNS
    inside every sandbox that has a listener, 127.0.0.11 answers each
    sandbox name with exactly the IPv4 addresses of the endpoints of that
    name on the networks the sandbox shares, and nothing for a name on no
    shared network -- asked from one client port inside each sandbox, the
    same port in every check (``CLIENT_PORT``), so that NAT state left by
    an earlier listener is caught the first time, not by chance.

``check()`` returns the violations as short sentences; an empty list means
every invariant holds.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sqlite3
import subprocess
from dataclasses import dataclass, field, replace

from netstack.endpoint import Endpoint, dns_names
from netstack.network import Network
from netstack.sandbox import HANDOFF, Sandbox
from netstack.store import endpoint_from_dict, network_from_dict, sandbox_from_dict

__all__ = ["State", "load_store", "check", "expected_rules"]

NO_DNS_DRIVERS = ("host", "null")


@dataclass
class State:
    networks: dict[str, Network] = field(default_factory=dict)
    sandboxes: dict[str, Sandbox] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)

    def eps_of_sandbox(self, sid: str) -> list[Endpoint]:
        return [e for e in self.endpoints.values() if e.sandbox_id == sid]


def load_store(data_root: str) -> State:
    """The store as it is on disk, read without taking a write lock."""
    path = os.path.join(data_root, "pynet.db")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        st = State()
        for (b,) in db.execute("SELECT body FROM networks"):
            n = network_from_dict(json.loads(b))
            st.networks[n.id] = n
        for (b,) in db.execute("SELECT body FROM sandboxes"):
            s = sandbox_from_dict(json.loads(b))
            st.sandboxes[s.id] = s
        for (b,) in db.execute("SELECT body FROM endpoints"):
            e = endpoint_from_dict(json.loads(b))
            st.endpoints[e.id] = e
        return st
    finally:
        db.close()


# -------------------------------------------------------------------- store

def _check_store(st: State) -> list[str]:
    out = []
    for kind, objs in (("network", st.networks), ("sandbox", st.sandboxes), ("endpoint", st.endpoints)):
        for o in objs.values():
            if o.state != "ready":
                out.append(f"store: {kind} {o.name} left in state {o.state!r}")
    for e in st.endpoints.values():
        if e.network_id not in st.networks:
            out.append(f"store: endpoint {e.name} ({e.id[:12]}) of a missing network {e.network_id[:12]}")
        if e.sandbox_id not in st.sandboxes:
            out.append(f"store: endpoint {e.name} ({e.id[:12]}) of a missing sandbox {e.sandbox_id[:12]}")
    for n in st.networks.values():
        seen: dict[str, str] = {}
        for c in n.ipv4 + n.ipv6:
            for who, a in [("gateway", c.gateway), *((f"aux {k}", v) for k, v in c.aux_addresses.items())]:
                if a:
                    if a in seen:
                        out.append(f"ipam: {a} on {n.name} handed to {seen[a]} and {who}")
                    seen[a] = who
        for e in st.endpoints.values():
            if e.network_id != n.id:
                continue
            for cidr in (e.ipv4, e.ipv6):
                if not cidr:
                    continue
                a = str(ipaddress.ip_interface(cidr).ip)
                if a in seen:
                    out.append(f"ipam: {a} on {n.name} handed to {seen[a]} and endpoint {e.name}")
                seen[a] = f"endpoint {e.name}"
    return out


# ------------------------------------------------------------------- kernel

def _links(ns_path: str) -> dict[str, dict]:
    """ifname -> {index, master, alias, kind, addrs} in the namespace at ns_path."""
    from netstack.kernel import links

    out: dict[str, dict] = {}
    with links.in_sandbox(ns_path) as ipr:
        for m in ipr.get_links():
            info = m.get_attr("IFLA_LINKINFO")
            out[m.get_attr("IFLA_IFNAME")] = {
                "index": m["index"], "master": m.get_attr("IFLA_MASTER"),
                "alias": m.get_attr("IFLA_IFALIAS") or "",
                "kind": info.get_attr("IFLA_INFO_KIND") if info else "", "addrs": set(),
            }
        by_index = {v["index"]: v for v in out.values()}
        for a in ipr.get_addr():
            link = by_index.get(a["index"])
            if link is not None:
                link["addrs"].add(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
        routes = []
        for r in ipr.get_routes(family=socket.AF_INET, table=254):
            if r["dst_len"] == 0:
                routes.append(r.get_attr("RTA_GATEWAY"))
    out["__default4__"] = {"gateways": routes}
    return out


def gateway_endpoint(st: State, sid: str) -> Endpoint | None:
    """Docker's rule, as the controller applies it: gateway priority, then
    not internal, then dual-stack, then network name."""
    cands = [e for e in st.eps_of_sandbox(sid)
             if e.driver_state.get("gateway4") or e.driver_state.get("gateway6")]
    if not cands:
        return None

    def key(e: Endpoint) -> tuple:
        n = st.networks[e.network_id]
        dual = bool(e.driver_state.get("gateway4")) and bool(e.driver_state.get("gateway6"))
        return (-e.gw_priority, n.internal, not dual, n.name)

    return min(cands, key=key)


def _check_kernel(st: State, host_ns: str, exec_root: str) -> list[str]:
    out = []
    host = _links(host_ns)
    owned_bridges = {n.driver_state.get("bridge"): n for n in st.networks.values() if n.driver == "bridge"}
    for n in st.networks.values():
        if n.driver != "bridge":
            continue
        br = str(n.driver_state.get("bridge", ""))
        link = host.get(br)
        if link is None:
            out.append(f"kernel: bridge {br} of network {n.name} missing")
            continue
        if link["alias"] != f"pynet:bridge:{n.id}":
            out.append(f"kernel: bridge {br} of network {n.name} has alias {link['alias']!r}")
        for c in n.ipv4 + n.ipv6:
            if c.gateway:
                want = f"{c.gateway}/{ipaddress.ip_network(c.subnet).prefixlen}"
                if want not in link["addrs"]:
                    out.append(f"kernel: bridge {br} of {n.name} lacks its gateway {want}")
    for e in st.endpoints.values():
        n = st.networks.get(e.network_id)
        if n is None or n.driver != "bridge":
            continue
        veth = f"pnv{e.id[:12]}"
        link = host.get(veth)
        if link is None:
            out.append(f"kernel: veth {veth} of endpoint {e.name} on {n.name} missing")
            continue
        br = host.get(str(n.driver_state.get("bridge", "")))
        if br is not None and link["master"] != br["index"]:
            out.append(f"kernel: veth {veth} of endpoint {e.name} not on bridge of {n.name}")
    for ifname, link in host.items():
        alias = link.get("alias", "")
        kind, _, owner = alias[len("pynet:"):].partition(":") if alias.startswith("pynet:") else ("", "", "")
        if kind == "endpoint" and owner not in st.endpoints:
            out.append(f"kernel: orphan veth {ifname} ({alias})")
        elif kind == "retired":
            out.append(f"kernel: retired link {ifname} never deleted")
        elif kind and kind != "endpoint" and owner not in st.networks:
            # bridge, macvlan (host access, own parent, VLAN), overlay, vxlan, ...
            out.append(f"kernel: orphan {kind} link {ifname} ({alias})")
        elif ifname.startswith("pnv") and not alias.startswith("pynet:"):
            out.append(f"kernel: unaliased pnv link {ifname}")
        elif ifname.startswith("br-") and ifname not in owned_bridges:
            out.append(f"kernel: orphan bridge {ifname}")
    out += _check_sandboxes(st)
    ns_dir = os.path.join(exec_root, "netns")
    keys = {s.key for s in st.sandboxes.values()}
    if os.path.isdir(ns_dir):
        for name in os.listdir(ns_dir):
            if os.path.join(ns_dir, name) not in keys:
                out.append(f"kernel: orphan sandbox namespace {os.path.join(ns_dir, name)}")
    return out


def _check_sandboxes(st: State) -> list[str]:
    from netstack.kernel import netns

    out = []
    for s in st.sandboxes.values():
        if s.key == HANDOFF:
            continue  # an engine's namespace (the Docker plugin): only its host-side link is pynet's to check
        if not netns.is_netns(s.key):
            out.append(f"kernel: namespace {s.key} of sandbox {s.name} missing")
            continue
        eps = st.eps_of_sandbox(s.id)
        inside = _links(s.key)
        for ifname, link in inside.items():
            if str(link.get("alias", "")).startswith("pynet:retired:"):
                out.append(f"kernel: retired interface {ifname} left in sandbox {s.name}")
        if not eps:
            continue
        for e in eps:
            n = st.networks.get(e.network_id)
            if n is None or n.driver not in ("bridge", "macvlan"):
                continue
            link = inside.get(e.ifname)
            if link is None:
                out.append(f"kernel: sandbox {s.name} lacks interface {e.ifname} of network {n.name}")
                continue
            for cidr in (e.ipv4,):
                if cidr and cidr not in link["addrs"]:
                    out.append(f"kernel: sandbox {s.name} {e.ifname} lacks {cidr} (has {sorted(link['addrs'])})")
        gw = gateway_endpoint(st, s.id)
        want = [str(gw.driver_state.get("gateway4"))] if gw is not None and gw.driver_state.get("gateway4") else []
        got = inside["__default4__"]["gateways"]
        if got != want:
            out.append(f"kernel: sandbox {s.name} default route via {got}, expected via {want}")
    return out


# ----------------------------------------------------------------- firewall

def expected_rules(st: State, *, shifted_portmap: bool = True) -> set[str]:
    """The PYNET rules (rendered as iptables-save prints them, prefixed
    with the family and table) that the store implies."""
    from netstack.drivers.bridge import parse_options
    from netstack.kernel import firewall as fw

    nets, ports = [], []
    for n in st.networks.values():
        if n.driver != "bridge" or "bridge" not in n.driver_state:
            continue
        cfg = parse_options(n)
        nets.append(fw.NetworkRules(
            network_id=n.id, bridge=str(n.driver_state["bridge"]),
            subnets4=tuple(c.subnet for c in n.ipv4), subnets6=tuple(c.subnet for c in n.ipv6),
            internal=n.internal, icc=cfg.icc, masquerade=cfg.masquerade,
        ))
    for s in st.sandboxes.values():
        gw = gateway_endpoint(st, s.id)
        if gw is None or not s.ports:
            continue
        n = st.networks[gw.network_id]
        if n.driver != "bridge" or n.internal:
            continue
        cfg = parse_options(n)
        bindings = tuple(replace(b, host_ip=cfg.host_binding_ipv4) if not b.host_ip and cfg.host_binding_ipv4 else b
                         for b in s.ports)
        ports.append(fw.PortRules(
            endpoint_id=gw.id, bridge=str(n.driver_state["bridge"]),
            ipv4=gw.ipv4.split("/")[0] if gw.ipv4 else "", ipv6=gw.ipv6.split("/")[0] if gw.ipv6 else "",
            bindings=bindings,
        ))
    out = set()
    for family in (4, 6):
        for r in fw.plan_all(nets, ports, family, shifted_portmap=shifted_portmap):
            out.add(f"v{family} {r.table} {r.render()}")
    return out


def kernel_rules(host_ns: str) -> set[str]:
    """PYNET rules of the namespace, from iptables-legacy-save (PYNET-USER,
    the user's chain, excepted)."""
    out = set()
    for family, tool in ((4, "iptables-legacy-save"), (6, "ip6tables-legacy-save")):
        text = subprocess.run(["nsenter", f"--net={host_ns}", tool], capture_output=True, text=True,
                              timeout=30, check=True).stdout
        table = ""
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith("-A ") and "PYNET" in line and not line.startswith("-A PYNET-USER "):
                out.add(f"v{family} {table} {line}")
    return out


def _check_firewall(st: State, host_ns: str) -> list[str]:
    want, got = expected_rules(st), kernel_rules(host_ns)
    out = [f"firewall: missing rule {r}" for r in sorted(want - got)]
    out += [f"firewall: orphan rule {r}" for r in sorted(got - want)]
    return out


# ---------------------------------------------------------------------- DNS

#: the checker's client port inside each sandbox: the same in every check,
#: as a stub resolver bound to one port is, so that an answer lost to NAT
#: state left from an earlier listener (pynetd restarted, listener re-opened
#: on other ports) is seen at the first check, not by chance
CLIENT_PORT = 10053


def _client(key: str) -> socket.socket:
    """A UDP socket inside the namespace `key`, on 127.0.0.1:CLIENT_PORT
    (or a port of the kernel's choosing if a process there holds that one)."""
    from netstack.kernel.netns import run_in_netns

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(("127.0.0.1", CLIENT_PORT))
        except OSError:
            pass  # taken: sendto picks a port
        return sock

    return run_in_netns(key, make)


def _query(key: str, name: str, timeout: float = 1.5, attempts: int = 3, *,
           sock: socket.socket | None = None) -> set[str] | None:
    """A-record answers for `name` from 127.0.0.11 inside the namespace
    `key` (None: no answer at all), sent from `sock` if given, else from a
    socket of its own on a port of the kernel's choosing.  Retries as a stub
    resolver does: UDP may drop a datagram on a loaded machine, which says
    nothing of the records."""
    from dnslib import QTYPE, DNSRecord

    from netstack.kernel.netns import run_in_netns

    own = sock is None
    if sock is None:
        sock = run_in_netns(key, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        sock.settimeout(timeout)
        for _ in range(attempts):
            q = DNSRecord.question(name, "A")
            sock.sendto(q.pack(), ("127.0.0.11", 53))
            try:
                while True:
                    data, _ = sock.recvfrom(4096)
                    r = DNSRecord.parse(data)
                    if r.header.id == q.header.id:
                        return {str(rr.rdata) for rr in r.rr if rr.rtype == QTYPE.A}
            except socket.timeout:
                continue
        return None
    except OSError:
        return None
    finally:
        if own:
            sock.close()


def _names(st: State, e: Endpoint) -> list[str]:
    s = st.sandboxes[e.sandbox_id]
    return dns_names(s.name, s.hostname, e.aliases)


def _check_dns(st: State) -> list[str]:
    from netstack.kernel import netns

    out = []
    all_names = sorted({s.name for s in st.sandboxes.values()})
    for s in st.sandboxes.values():
        nets = {e.network_id for e in st.eps_of_sandbox(s.id)
                if e.network_id in st.networks and st.networks[e.network_id].driver not in NO_DNS_DRIVERS}
        if not nets or s.key == HANDOFF:  # the engine's own resolver serves a HANDOFF sandbox
            continue
        if not netns.is_netns(s.key):
            continue  # reported by the kernel checks
        sock = _client(s.key)
        try:
            for name in all_names:
                want = {str(ipaddress.ip_interface(e.ipv4).ip) for e in st.endpoints.values()
                        if e.network_id in nets and e.ipv4 and e.sandbox_id in st.sandboxes
                        and name.lower() in (x.lower() for x in _names(st, e))}
                got = _query(s.key, name, sock=sock)
                if got is None:
                    out.append(f"dns: no answer in sandbox {s.name} for {name}")
                elif got != want:
                    out.append(f"dns: sandbox {s.name} resolves {name} to {sorted(got)}, expected {sorted(want)}")
        finally:
            sock.close()
    return out


def check(data_root: str, exec_root: str, host_ns: str, *, dns: bool = True,
          firewall: bool = True) -> list[str]:
    """Every violation of the invariants above, as sentences (empty: all hold).
    `host_ns` is the path of the daemon's network namespace."""
    st = load_store(data_root)
    out = _check_store(st)
    out += _check_kernel(st, host_ns, exec_root)
    if firewall:
        out += _check_firewall(st, host_ns)
    if dns:
        out += _check_dns(st)
    return out
