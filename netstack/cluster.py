"""Global scope: overlay networks, their IPAM and the peer table in etcd.

Layering (each uses only the ones above it):

    netstack.etcd      the etcd v3 JSON-gateway client
    ClusterIpam        netstack.ipamapi.Ipam over etcd: pools and addresses
                       unique across hosts, claimed with transactions
    ClusterStore       what the controller calls for global networks:
                       create/delete a network (name, VNI, record in one
                       txn), publish/withdraw an endpoint, the host lease
    ClusterAgent       the background side: keeps the lease alive, watches
                       etcd and turns remote endpoints into the overlay
                       driver's peers and the resolver's records, adopts
                       networks made elsewhere, reconciles periodically

Keys (all under /pynet/):

    hosts/<vtep>               {"node", "vtep", "mtu", "hostname"}    leased
    networks/<id>              the Network record (no host-local state)
    names/<name>, vnis/<vni>   network id: uniqueness by create_revision == 0
    pools                      {cidr: {...}}: one key, changed by CAS, so an
                               overlap check and the claim are one step
    ipam/<cidr>/<address>      {"host": vtep} | {"aux": true}
    ipam/<cidr>/~next          the round-robin cursor
    endpoints/<vtep>/<net id>/<ep id>
                               {"name", "names", "ipv4", "ipv6", "mac", "vtep"}  leased;
                               written in the same txn as its address claims

What a host watches (`watch_ranges`, one stream): networks/, its own
hosts/ key, and the endpoints of every other host -- the host's own
attaches and all IPAM keys wake nobody there, and etcd sends each attach to
the other hosts only, as one event.

Why the split between leased and durable keys: a host that dies loses its
endpoint records (and so its peers' FDB entries and DNS names) when its
lease expires, but keeps its address claims.  When it returns, its
sandboxes still hold those addresses and it re-publishes them; an address
is never handed to someone else while a possibly-live sandbox holds it
(stale FDB/ARP after IP reuse is a classic overlay failure, LANDSCAPE #12).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterator, Sequence

from netstack.errors import Conflict, Forbidden, InvalidParameter, PynetError, Unavailable
from netstack.etcd import (
    EtcdClient, Event, KeyValue, Pending, cmp_absent, cmp_mod, op_delete, op_put, op_range, parse_endpoints,
    prefix_end, range_answer, range_kvs, range_request, txn_answer, txn_request,
)
from netstack.ipamapi import GLOBAL, IPAddress, IPNetwork, Pool, PoolRequest

if TYPE_CHECKING:
    from netstack.controller import Controller
    from netstack.endpoint import Endpoint
    from netstack.network import Network
    from netstack.sandbox import Sandbox

log = logging.getLogger("pynet.cluster")

PREFIX = "/pynet/"
K_HOSTS = PREFIX + "hosts/"
K_NETWORKS = PREFIX + "networks/"
K_NAMES = PREFIX + "names/"
K_VNIS = PREFIX + "vnis/"
K_POOLS = PREFIX + "pools"
K_IPAM = PREFIX + "ipam/"
K_ENDPOINTS = PREFIX + "endpoints/"
CURSOR = "~next"

DEFAULT_TTL = 10
MAX_RETRIES = 64
TXN_MAX_OPS = 100          # etcd's default --max-txn-ops is 128

#: an exchange with etcd written as a generator: it yields each request it
#: needs, as (path, body), is sent back the answer, and returns its result
Steps = Generator[tuple[str, dict[str, Any]], dict[str, Any], list[IPAddress]]


class InFlight:
    """Steps begun on this thread: the first request is sent at once and
    its answer taken only when `result()` is called, so the caller's own
    work overlaps etcd's round trip without a second thread (whose Python
    would take the GIL from the caller's).  Later requests, if any (a lost
    race), are plain round trips inside `result()`.  Like a future, the
    result (or the error) is kept: asking again does no I/O."""

    def __init__(self, etcd: EtcdClient, steps: Steps) -> None:
        self._etcd, self._steps = etcd, steps
        self._value: list[IPAddress] | None = None
        self._error: BaseException | None = None
        self._pending: Pending | None = None
        try:
            self._pending = etcd.send(*next(steps))
        except StopIteration as done:
            self._value = done.value
        except Exception as exc:
            self._error = exc

    def result(self) -> list[IPAddress]:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            try:
                answer = pending.answer()
                while True:
                    answer = self._etcd.call(*self._steps.send(answer))
            except StopIteration as done:
                self._value = done.value
            except Exception as exc:
                self._error = exc
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


def _pool_key(net: IPNetwork) -> str:
    return K_IPAM + str(net).replace("/", "_") + "/"


def _parse_pool_id(pool_id: str) -> tuple[IPNetwork, IPNetwork | None]:
    parts = pool_id.split("/")
    if len(parts) not in (3, 5) or parts[0] != GLOBAL:
        raise InvalidParameter(f"unknown global pool {pool_id!r}")
    net = ipaddress.ip_network("/".join(parts[1:3]))
    sub = ipaddress.ip_network("/".join(parts[3:5])) if len(parts) == 5 else None
    return net, sub


def _hosts_of(net: IPNetwork, sub: IPNetwork | None) -> tuple[int, int]:
    """First and last assignable address (as ints) of the pool's range."""
    rng = sub or net
    first, last = int(rng.network_address), int(rng.broadcast_address)
    if net.version == 4 and net.prefixlen < 31:
        first = max(first, int(net.network_address) + 1)
        last = min(last, int(net.broadcast_address) - 1)
    elif net.version == 6 and net.prefixlen < 127:
        first = max(first, int(net.network_address) + 1)  # subnet-router anycast
    return first, last


# ------------------------------------------------------------------------ IPAM

class ClusterIpam:
    """Pools and addresses of global networks, claimed in etcd.

    Allocation is round-robin from a shared cursor, so a just-released
    address is not handed out again at once; a claim is a txn that only
    succeeds if the address key does not exist yet, so two hosts picking
    the same candidate at the same moment cannot both win: the loser
    re-reads and takes the next free one.

    One round trip per address: the host remembers each pool's claims and
    the cursor's revision from its last read or write, and the claim's txn
    also compares the cursor, so it only succeeds if nobody allocated in
    the pool since; when it fails, its failure branch reads the pool, and
    the next try works from that.  (Releases by other hosts are missed
    until then: harmless, the cursor moves on past them anyway.)  Called
    under the controller's lock, like the rest of the store."""

    def __init__(self, etcd: EtcdClient, owner: str, on_lost_write: Callable[[], None] = lambda: None) -> None:
        self.etcd = etcd
        self.owner = owner
        self.on_lost_write = on_lost_write
        # pool key prefix -> (claimed addresses as ints, cursor or None, cursor's mod_revision or 0)
        self._view: dict[str, tuple[set[int], int | None, int]] = {}

    def _read_view(self, prefix: str, kvs: list[KeyValue]) -> tuple[set[int], int | None, int]:
        taken = {int(ipaddress.ip_address(k.key[len(prefix):])) for k in kvs if not k.key.endswith(CURSOR)}
        cur = next((k for k in kvs if k.key.endswith(CURSOR)), None)
        view = (taken, int(ipaddress.ip_address(cur.value)) if cur else None, cur.mod_revision if cur else 0)
        self._view[prefix] = view
        return view

    def request_pool(self, request: PoolRequest) -> Pool:
        from netstack.ipam import DEFAULT_GLOBAL_POOLS, overlaps
        from netstack.ipam._pools import first_free_subnet

        if request.address_space != GLOBAL:
            raise InvalidParameter(f"the cluster IPAM serves the global address space, not {request.address_space!r}")
        for _ in range(MAX_RETRIES):
            kv = self.etcd.get(K_POOLS)
            pools: dict[str, Any] = json.loads(kv.value) if kv else {}
            taken = [ipaddress.ip_network(c) for c in pools]
            if request.pool is None:
                net = first_free_subnet(DEFAULT_GLOBAL_POOLS, taken + list(request.exclude), 6 if request.v6 else 4)
                if net is None:
                    raise Unavailable("no free default pool left in the global address space")
            else:
                net = request.pool
                clash = next((t for t in taken if overlaps(t, net)), None)
                if clash is not None:
                    raise Conflict(f"invalid pool request: subnet {net} overlaps {clash}, the pool of another global network")
            sub = request.sub_pool
            for a in request.aux_addresses:
                if a not in net:
                    raise InvalidParameter(f"auxiliary address {a} is not in subnet {net}")
            pools[str(net)] = {"sub_pool": str(sub) if sub else "", "owner": self.owner}
            ops = [op_put(K_POOLS, json.dumps(pools, sort_keys=True))]
            ops += [op_put(_pool_key(net) + str(a), json.dumps({"aux": True})) for a in request.aux_addresses]
            ok, _ = self.etcd.txn([cmp_mod(K_POOLS, kv.mod_revision) if kv else cmp_absent(K_POOLS)], ops)
            if ok:
                self._view.pop(_pool_key(net), None)
                return Pool(pool_id=f"{GLOBAL}/{net}" + (f"/{sub}" if sub else ""), network=net)
        raise Unavailable("the global pool table is too busy: gave up after retries")

    def release_pool(self, pool_id: str) -> None:
        net, _ = _parse_pool_id(pool_id)
        self._view.pop(_pool_key(net), None)
        try:
            for _ in range(MAX_RETRIES):
                kv = self.etcd.get(K_POOLS)
                pools = json.loads(kv.value) if kv else {}
                if str(net) not in pools:
                    self.etcd.delete(_pool_key(net), prefix=True)
                    return
                del pools[str(net)]
                ok, _ = self.etcd.txn([cmp_mod(K_POOLS, kv.mod_revision)],  # type: ignore[union-attr]
                                      [op_put(K_POOLS, json.dumps(pools, sort_keys=True)),
                                       op_delete(_pool_key(net), prefix=True)])
                if ok:
                    return
        except Unavailable as exc:
            log.warning("pool %s not released in the cluster store (%s); the next sync does it", net, exc)
            self.on_lost_write()

    def check_address(self, pool_id: str, preferred: IPAddress) -> None:
        """InvalidParameter unless `preferred` can be assigned in the pool
        (no I/O: callers check before starting anything)."""
        net, _ = _parse_pool_id(pool_id)
        if preferred not in net:
            raise InvalidParameter(f"address {preferred} is not in subnet {net}")
        first, last = _hosts_of(net, None)
        if not first <= int(preferred) <= last:
            raise InvalidParameter(f"address {preferred} cannot be assigned in subnet {net}")

    def request_address(self, pool_id: str, preferred: IPAddress | None = None, *,
                        gateway: bool = False) -> IPAddress:
        return self.claim([(pool_id, preferred)], gateway=gateway)[0]

    def claim(self, requests: Sequence[tuple[str, IPAddress | None]],
              with_ops: Callable[[list[IPAddress]], list[dict[str, Any]]] | None = None, *,
              gateway: bool = False) -> list[IPAddress]:
        """One address from each (pool id, preferred address or None) in one
        transaction, together with `with_ops(addresses)` (an endpoint's
        record: the claim and the publish are one write)."""
        return InFlight(self.etcd, self.claim_steps(requests, with_ops, gateway=gateway)).result()

    def claim_steps(self, requests: Sequence[tuple[str, IPAddress | None]],
                    with_ops: Callable[[list[IPAddress]], list[dict[str, Any]]] | None = None, *,
                    gateway: bool = False) -> Steps:
        """`claim` as the etcd requests it makes, for `InFlight` to run.

        A preferred address is claimed if its key is absent (else
        Conflict); any other comes from this host's view of the pool and
        the txn also compares the pool's cursor.  A lost race (another
        host allocated in the pool since our view) fails the whole txn:
        nothing of it is written, its failure branch reads the pools back,
        and the next try works from that."""
        value = json.dumps({"host": self.owner, **({"gateway": True} if gateway else {})})
        plans = []
        for pool_id, preferred in requests:
            net, sub = _parse_pool_id(pool_id)
            if preferred is not None:
                self.check_address(pool_id, preferred)
            plans.append((_pool_key(net), preferred, *_hosts_of(net, sub), sub or net))
        fresh: set[str] = set()
        for prefix, preferred, *_ in plans:
            if preferred is None and prefix not in self._view:
                kvs, _rev = range_answer((yield range_request(prefix, prefix=True)))
                self._read_view(prefix, kvs)
                fresh.add(prefix)
        for _ in range(MAX_RETRIES):
            compare: list[dict[str, Any]] = []
            ops: list[dict[str, Any]] = []
            chosen: list[IPAddress] = []
            for prefix, preferred, first, last, rng in plans:
                if preferred is None:
                    taken, cursor, cursor_rev = self._view[prefix]
                    start = first if gateway else (first - 1 if cursor is None else cursor) + 1
                    candidate = _next_free(first, last, start, taken)
                    if candidate is None:
                        if prefix not in fresh:        # our view may miss releases by other hosts
                            kvs, _rev = range_answer((yield range_request(prefix, prefix=True)))
                            self._read_view(prefix, kvs)
                            fresh.add(prefix)
                            break
                        raise Unavailable(f"no available addresses in subnet {rng}")
                    addr: IPAddress = ipaddress.ip_address(candidate)
                    if not gateway:
                        compare.append(cmp_mod(prefix + CURSOR, cursor_rev) if cursor_rev
                                       else cmp_absent(prefix + CURSOR))
                        ops.append(op_put(prefix + CURSOR, str(addr)))
                else:
                    addr = preferred
                compare.append(cmp_absent(prefix + str(addr)))
                ops.append(op_put(prefix + str(addr), value))
                chosen.append(addr)
            else:
                if with_ops is not None:
                    ops += with_ops(chosen)
                ok, responses, rev = txn_answer((yield txn_request(compare, ops,
                                                                   [op_range(p[0], prefix=True) for p in plans])))
                if ok:
                    for (prefix, preferred, *_), addr in zip(plans, chosen):
                        view = self._view.get(prefix)
                        if view is None:
                            continue
                        view[0].add(int(addr))
                        if preferred is None and not gateway:
                            self._view[prefix] = (view[0], int(addr), rev)
                    return chosen
                for i, (prefix, preferred, *_) in enumerate(plans):
                    taken = self._read_view(prefix, range_kvs(responses[i]) if i < len(responses) else [])[0]
                    fresh.add(prefix)
                    if preferred is not None and int(preferred) in taken:
                        raise Conflict(f"address {preferred} is already in use in the cluster")
        nets = ", ".join(str(p[4]) for p in plans)
        raise Unavailable(f"subnet {nets}: too much contention for addresses, gave up after retries")

    def release_address(self, pool_id: str, address: IPAddress) -> None:
        net, _ = _parse_pool_id(pool_id)
        view = self._view.get(_pool_key(net))
        if view is not None:
            view[0].discard(int(address))
        try:
            self.etcd.delete(_pool_key(net) + str(address))
        except Unavailable as exc:
            log.warning("address %s not released in the cluster store (%s); the next sync does it", address, exc)
            self.on_lost_write()


def _next_free(first: int, last: int, start: int, taken: set[int]) -> int | None:
    """The first address from `start` (wrapping to `first`) not in `taken`."""
    if start > last or start < first:
        start = first
    size = last - first + 1
    if len(taken) >= size and all(first <= t <= last for t in taken):
        return None
    candidate = start
    for _ in range(min(size, len(taken) + 1)):
        if candidate not in taken:
            return candidate
        candidate = first if candidate >= last else candidate + 1
    return None


# ----------------------------------------------------------------------- store

@dataclasses.dataclass(frozen=True, slots=True)
class RemoteEndpoint:
    id: str
    network_id: str
    name: str
    names: tuple[str, ...]
    ipv4: str                        # plain address or ""
    ipv6: str
    mac: str
    vtep: str
    key: str                         # where the record is (a full sync moves one of an older layout)

    @classmethod
    def parse(cls, kv: KeyValue) -> "RemoteEndpoint":
        net_id, ep_id = endpoint_ids(kv.key)
        d = json.loads(kv.value)
        return cls(id=ep_id, network_id=net_id, name=d.get("name", ""), names=tuple(d.get("names", ())),
                   ipv4=d.get("ipv4", ""), ipv6=d.get("ipv6", ""), mac=d.get("mac", ""), vtep=d.get("vtep", ""),
                   key=kv.key)


def endpoint_key(vtep: str, net_id: str, ep_id: str) -> str:
    return K_ENDPOINTS + f"{vtep}/{net_id}/{ep_id}"


def endpoint_ids(key: str) -> tuple[str, str]:
    """(network id, endpoint id) of an endpoint record's key."""
    net_id, ep_id = key.rsplit("/", 2)[1:]
    return net_id, ep_id


def watch_ranges(vtep: str) -> list[tuple[str, str]]:
    """The key ranges host `vtep` watches: other hosts' endpoints (its own
    split the endpoints range in two), the networks, its own host key (a
    delete: its lease expired)."""
    own = K_ENDPOINTS + vtep + "/"
    return [(K_ENDPOINTS, own), (prefix_end(own), prefix_end(K_ENDPOINTS)),
            (K_NETWORKS, prefix_end(K_NETWORKS)), (K_HOSTS + vtep, "")]


def network_record(net: "Network") -> str:
    d = dataclasses.asdict(net)
    d["driver_state"] = {}
    d["state"] = "ready"
    return json.dumps(d, sort_keys=True)


class ClusterStore:
    """The controller's seam for global-scope networks.  Every method is
    called under the controller's lock and raises Unavailable, naming the
    store, when etcd cannot be reached."""

    def __init__(self, etcd: EtcdClient, vtep: str, *, node_id: str, underlay_mtu: int,
                 ttl: int = DEFAULT_TTL) -> None:
        self.etcd = etcd
        self.vtep = vtep
        self.node_id = node_id
        self.underlay_mtu = underlay_mtu
        self.ttl = ttl
        self.lease = 0
        self.dirty = threading.Event()   # a write was lost while etcd was away
        self.ipam = ClusterIpam(etcd, vtep, on_lost_write=self.dirty.set)

    # -- host lease ----------------------------------------------------------

    def register(self) -> None:
        """Take a new lease and claim this host's VTEP key with it.  Refuses
        when another live node advertises the same address."""
        lease = self.etcd.lease_grant(self.ttl)
        key = K_HOSTS + self.vtep
        value = json.dumps({"node": self.node_id, "vtep": self.vtep, "mtu": self.underlay_mtu,
                            "hostname": socket.gethostname()})
        ok, _ = self.etcd.txn([cmp_absent(key)], [op_put(key, value, lease)])
        if not ok:
            current = self.etcd.get(key)
            owner = json.loads(current.value).get("node") if current else self.node_id
            if owner != self.node_id:
                raise Conflict(f"address {self.vtep} is already advertised by another live pynet host ({owner})")
            self.etcd.put(key, value, lease=lease)
        self.lease = lease

    def keepalive(self) -> bool:
        """False when the lease has expired (the host must re-register)."""
        return bool(self.lease) and self.etcd.lease_keepalive(self.lease) > 0

    # -- networks ------------------------------------------------------------

    def create_network(self, net: "Network") -> str:
        """Claim the network's name and VNI and write its record, in one
        transaction.  Sets the VNI (and a cluster-wide MTU) into the
        network's options.  Returns a warning, or ""."""
        from netstack.drivers.overlay.options import (
            FIRST_AUTO_VNI, MAX_VNI, OPT_MTU, OPT_VNI, VXLAN_OVERHEAD, parse_vni,
        )

        hosts, _ = self.etcd.get_prefix(K_HOSTS)
        mtus = {json.loads(h.value).get("vtep", ""): int(json.loads(h.value).get("mtu", 0)) for h in hosts}
        mtus[self.vtep] = self.underlay_mtu
        warning = ""
        if len(set(mtus.values())) > 1:
            warning = ("underlay MTUs differ between hosts (" + ", ".join(f"{v} {m}" for v, m in sorted(mtus.items()))
                       + f"): the overlay uses the smallest, {min(mtus.values()) - VXLAN_OVERHEAD}")
            log.warning("network %s: %s", net.name, warning)
        if OPT_MTU not in net.options:
            net.options[OPT_MTU] = str(min(mtus.values()) - VXLAN_OVERHEAD)
        wanted = parse_vni(net.options[OPT_VNI]) if net.options.get(OPT_VNI) else None
        for _ in range(MAX_RETRIES):
            if wanted is None:
                used, _ = self.etcd.get_prefix(K_VNIS)
                taken = {int(k.key[len(K_VNIS):]) for k in used}
                vni = next(v for v in range(FIRST_AUTO_VNI, MAX_VNI + 1) if v not in taken)
            else:
                vni = wanted
            net.options[OPT_VNI] = str(vni)
            ok, responses = self.etcd.txn(
                [cmp_absent(K_NAMES + net.name), cmp_absent(K_VNIS + str(vni))],
                [op_put(K_NETWORKS + net.id, network_record(net)), op_put(K_NAMES + net.name, net.id),
                 op_put(K_VNIS + str(vni), net.id)],
            )
            if ok:
                return warning
            if self.etcd.get(K_NAMES + net.name) is not None:
                raise Conflict(f"network with name {net.name} already exists in the cluster")
            if wanted is not None:
                owner = self.etcd.get(K_VNIS + str(vni))
                raise Conflict(f"VNI {vni} is already used by global network {owner.value[:12] if owner else '?'}")
        raise Unavailable("could not allocate a VNI: too much contention")

    def delete_network(self, net: "Network") -> None:
        """Remove the network everywhere: refused while any host still has
        an endpoint on it.  Frees its name, VNI, pools and addresses."""
        # (keys are by host first: all endpoints are read, a rare request)
        eps = [e for e in self.etcd.get_prefix(K_ENDPOINTS)[0] if endpoint_ids(e.key)[0] == net.id]
        if eps:
            where = sorted({json.loads(e.value).get("vtep", "?") for e in eps})
            raise Forbidden(f"error while removing network: network {net.name} id {net.id} has active endpoints"
                            f" on hosts {', '.join(where)}")
        vni = net.options.get("com.docker.network.driver.overlay.vxlanid_list", "")
        self.etcd.txn([], [op_delete(K_NETWORKS + net.id), op_delete(K_NAMES + net.name),
                           *([op_delete(K_VNIS + vni)] if vni else [])])
        for c in net.ipv4 + net.ipv6:
            self.ipam.release_pool(c.pool_id)

    def networks(self) -> list["Network"]:
        from netstack.store import network_from_dict

        kvs, _ = self.etcd.get_prefix(K_NETWORKS)
        return [network_from_dict(json.loads(k.value)) for k in kvs]

    # -- endpoints -----------------------------------------------------------

    def endpoint_value(self, ep: "Endpoint", names: list[str]) -> str:
        return self._endpoint_json(ep.name, names, ep.mac, ep.ipv4.split("/")[0] if ep.ipv4 else "",
                                   ep.ipv6.split("/")[0] if ep.ipv6 else "")

    def _endpoint_json(self, name: str, names: list[str], mac: str, ipv4: str, ipv6: str) -> str:
        return json.dumps({"name": name, "names": names, "mac": mac, "vtep": self.vtep, "ipv4": ipv4, "ipv6": ipv6},
                          sort_keys=True)

    def begin_attach(self, net_id: str, ep_id: str, name: str, names: list[str], mac: str,
                     requests: Sequence[tuple[str, IPAddress | None]]) -> InFlight:
        """Claim the endpoint's addresses (one per (pool id, preferred or
        None)) and publish its record (leased: peer entry + names for every
        host) in ONE transaction, sent now; `result()` of what this returns
        gives the addresses, in request order, once the caller has done its
        kernel work.  A lost race is retried by the claim with nothing
        written.  What can be checked without I/O is checked here, before
        anything is sent."""
        lease = self.lease
        if not lease:
            raise Unavailable(f"cluster store {self.etcd.describe()} is unreachable (this host is not registered yet)")
        for pool_id, preferred in requests:
            if preferred is not None:
                self.ipam.check_address(pool_id, preferred)
        key = endpoint_key(self.vtep, net_id, ep_id)

        def publish(addrs: list[IPAddress]) -> list[dict[str, Any]]:
            v4 = next((str(a) for a in addrs if a.version == 4), "")
            v6 = next((str(a) for a in addrs if a.version == 6), "")
            return [op_put(key, self._endpoint_json(name, names, mac, v4, v6), lease)]

        return InFlight(self.etcd, self.ipam.claim_steps(requests, publish))

    def detach_endpoint(self, net_id: str, ep_id: str, addresses: Sequence[tuple[str, IPAddress]]) -> None:
        """Withdraw the endpoint's record and release its addresses, in one
        transaction.  Never raises Unavailable: with etcd away the agent's
        next full sync (on reconnect) does it."""
        ops = [op_delete(endpoint_key(self.vtep, net_id, ep_id))]
        for pool_id, addr in addresses:
            net, _ = _parse_pool_id(pool_id)
            view = self.ipam._view.get(_pool_key(net))
            if view is not None:
                view[0].discard(int(addr))
            ops.append(op_delete(_pool_key(net) + str(addr)))
        try:
            self.etcd.txn([], ops)
        except Unavailable as exc:
            log.warning("endpoint %s not withdrawn from the cluster store (%s); the next sync does it", ep_id[:12], exc)
            self.dirty.set()

    def close(self) -> None:
        self.etcd.close()


def new_node_id() -> str:
    return secrets.token_hex(8)


def load_node_id(data_root: str) -> str:
    """A stable identity for this host across restarts (the VTEP key's owner)."""
    import os

    path = os.path.join(data_root, "node-id")
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        node = new_node_id()
        os.makedirs(data_root, exist_ok=True)
        with open(path, "w") as f:
            f.write(node + "\n")
        return node


def connect(store_url: str, advertise: str, data_root: str, *, ttl: int = DEFAULT_TTL) -> ClusterStore:
    """Validate the daemon's cluster flags (no network I/O: etcd may come
    later) and build the store.  `advertise` is an address this host must
    have, or the name of an interface holding one."""
    from netstack.kernel import links

    endpoints = parse_endpoints(store_url)
    if not advertise:
        raise InvalidParameter("--cluster-store needs --cluster-advertise ADDR (this host's underlay address)")
    with contextlib.closing(links.host()) as ipr:
        addr = advertise.split(":")[0] if advertise.count(":") == 1 else advertise
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            idx = links.index_of(ipr, addr)
            if idx is None:
                raise InvalidParameter(f"--cluster-advertise {advertise!r}: neither an address nor an interface") from None
            found = [m.get_attr("IFA_ADDRESS") for m in ipr.get_addr(index=idx, family=socket.AF_INET)]
            if not found:
                raise InvalidParameter(f"--cluster-advertise {advertise!r}: the interface has no IPv4 address")
            addr = found[0]
        owner = links.address_owner(ipr, addr)
    if owner is None:
        raise InvalidParameter(f"--cluster-advertise {addr}: this host has no such address")
    _ifname, mtu = owner
    return ClusterStore(EtcdClient(endpoints), addr, node_id=load_node_id(data_root), underlay_mtu=mtu, ttl=ttl)


# ----------------------------------------------------------------------- agent

class ClusterAgent:
    """Keeps this host in the cluster: lease, watch, peers, names.

    Two threads: `watch` runs sessions (register, full sync, then apply
    events as they come); `keeper` renews the lease every ttl/3 and runs
    the reconcile loop.  A lost lease or an unreachable etcd aborts the
    session; the next one re-registers and re-syncs from scratch, which is
    how the host catches up after etcd or the host itself comes back.
    Everything that touches the model runs under the controller's lock."""

    def __init__(self, ctrl: "Controller", store: ClusterStore, *, reconcile_interval: float = 5.0) -> None:
        self.ctrl = ctrl
        self.store = store
        self.reconcile_interval = reconcile_interval
        self.remote: dict[str, dict[str, RemoteEndpoint]] = {}
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._abort: Callable[[], None] = lambda: None
        self._threads: list[threading.Thread] = []
        self.repairs = 0

    @property
    def driver(self) -> Any:
        return self.ctrl.drivers.get("overlay")  # type: ignore[attr-defined]

    def start(self) -> None:
        for name, fn in (("cluster-watch", self._watch_loop), ("cluster-keeper", self._keeper_loop)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._abort()
        for t in self._threads:
            t.join(timeout=5)
        self.store.close()

    # -- sessions --------------------------------------------------------------

    def _watch_loop(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self._session()
            except Conflict as exc:
                log.error("cluster: %s", exc)
            except PynetError as exc:
                if self.connected.is_set() or backoff >= 1:
                    log.warning("cluster store lost: %s", exc)
            except Exception:
                log.exception("cluster session failed")
            self.connected.clear()
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 1.0)

    def _session(self) -> None:
        self.store.register()
        rev = self.full_sync()
        self.connected.set()
        log.info("cluster: registered %s, synced at revision %d", self.store.vtep, rev)

        def on_open(abort: Callable[[], None]) -> None:
            self._abort = abort

        for events in self.store.etcd.watch(watch_ranges(self.store.vtep), rev + 1, self._stop, on_open=on_open):
            with self.ctrl.lock:
                for ev in events:
                    self._apply_event(ev)

    def _keeper_loop(self) -> None:
        last_reconcile = time.monotonic()
        while not self._stop.wait(max(0.2, self.store.ttl / 3)):
            if not self.connected.is_set():
                continue
            try:
                alive = self.store.keepalive()
            except PynetError as exc:
                log.warning("cluster: lease keepalive failed: %s", exc)
                alive = False
            if not alive or self.store.dirty.is_set():
                self.store.dirty.clear()
                self._abort()      # the watch session restarts: register + full sync
                continue
            if time.monotonic() - last_reconcile >= self.reconcile_interval:
                last_reconcile = time.monotonic()
                self.reconcile()

    # -- state -----------------------------------------------------------------

    def full_sync(self) -> int:
        """Make this host agree with etcd: adopt and drop networks,
        re-publish local endpoints under the current lease, clear our stale
        records and claims, and rebuild remote peers and names."""
        kvs, rev = self.store.etcd.get_prefix(PREFIX)
        from netstack.store import network_from_dict

        nets = {k.key[len(K_NETWORKS):]: network_from_dict(json.loads(k.value))
                for k in kvs if k.key.startswith(K_NETWORKS)}
        eps = [RemoteEndpoint.parse(k) for k in kvs if k.key.startswith(K_ENDPOINTS)]
        claims = [k for k in kvs if k.key.startswith(K_IPAM) and not k.key.endswith(CURSOR)]
        with self.ctrl.lock:
            # Drop first: a network made since in place of a dropped one may
            # reuse its VNI (or name), which the old one still holds here.
            for net in list(self.ctrl.networks.values()):
                if net.scope == "global" and net.state == "ready" and net.id not in nets:
                    self._drop(net)
            for net in nets.values():
                if net.id not in self.ctrl.networks:
                    self._adopt(net)
            self._republish(eps, claims, nets)
            self.remote = {}
            for rep in eps:
                if rep.vtep != self.store.vtep and rep.network_id in nets:
                    self.remote.setdefault(rep.network_id, {})[rep.id] = rep
            for net_id in nets:
                self._program(net_id, dns_reset=True)
        return rev

    def _republish(self, eps: list[RemoteEndpoint], claims: list[KeyValue], nets: dict[str, "Network"]) -> None:
        ctrl = self.ctrl
        local = {e.id: e for e in ctrl.endpoints.values()
                 if e.state == "ready" and ctrl.networks.get(e.network_id) is not None
                 and ctrl.networks[e.network_id].scope == "global"}
        vtep = self.store.vtep
        ops = [op_put(endpoint_key(vtep, e.network_id, e.id),
                      self.store.endpoint_value(e, list(e.driver_state.get("dns_names") or [e.name])),  # type: ignore[call-overload]
                      self.store.lease) for e in local.values()]
        # this host's records of endpoints it no longer has (or under an older key layout)
        ops += [op_delete(r.key) for r in eps
                if r.vtep == vtep and (r.id not in local or r.key != endpoint_key(vtep, r.network_id, r.id))]
        held = {ipaddress.ip_interface(c).ip for e in local.values() for c in (e.ipv4, e.ipv6) if c}
        held |= {ipaddress.ip_address(c.gateway) for n in nets.values() for c in n.ipv4 + n.ipv6 if c.gateway}
        for k in claims:
            d = json.loads(k.value)
            if d.get("host") == self.store.vtep and ipaddress.ip_address(k.key.rsplit("/", 1)[1]) not in held:
                ops.append(op_delete(k.key))
        for i in range(0, len(ops), TXN_MAX_OPS):
            self.store.etcd.txn([], ops[i:i + TXN_MAX_OPS])

    def _apply_event(self, ev: Event) -> None:
        key = ev.kv.key
        if key.startswith(K_NETWORKS):
            net_id = key[len(K_NETWORKS):]
            if ev.kind == "put" and net_id not in self.ctrl.networks:
                from netstack.store import network_from_dict

                self._adopt(network_from_dict(json.loads(ev.kv.value)))
                self._program(net_id, dns_reset=True)
            elif ev.kind == "delete" and net_id in self.ctrl.networks:
                self._drop(self.ctrl.networks[net_id])
        elif key.startswith(K_ENDPOINTS):
            net_id, ep_id = endpoint_ids(key)
            if ev.kind == "put":
                rep = RemoteEndpoint.parse(ev.kv)
                if rep.vtep == self.store.vtep:
                    return
                self.remote.setdefault(net_id, {})[ep_id] = rep
                self._program(net_id, added=rep)
            else:
                gone = self.remote.get(net_id, {}).pop(ep_id, None)
                if gone is not None:
                    self._program(net_id, removed=gone)
        elif key == K_HOSTS + self.store.vtep and ev.kind == "delete":
            log.warning("cluster: this host's lease expired; re-registering")
            self._abort()

    def _program(self, net_id: str, *, added: RemoteEndpoint | None = None,
                 removed: RemoteEndpoint | None = None, dns_reset: bool = False) -> None:
        from netstack.drivers.overlay import Peer

        net = self.ctrl.networks.get(net_id)
        if net is None or net.state != "ready" or net.driver != "overlay":
            return
        remote = self.remote.get(net_id, {})
        if dns_reset or (added is None and removed is None):
            self.driver.set_peers(net, [Peer(r.id, r.mac, r.vtep, r.ipv4, r.ipv6) for r in remote.values()])
        else:  # one watch event: only its entries (every host pays this for every attach anywhere)
            if removed is not None:
                self.driver.remove_peer(net, removed.id)
            if added is not None:
                self.driver.add_peer(net, Peer(added.id, added.mac, added.vtep, added.ipv4, added.ipv6))
        records = getattr(self.ctrl.dns, "records", None)
        if records is None:
            return
        if removed is not None:
            records.remove_endpoint(net_id, removed.id)
        todo = [added] if added is not None else list(remote.values()) if dns_reset else []
        for r in todo:
            records.add_endpoint(net_id, net.name, r.id, list(r.names or (r.name,)), r.ipv4 or None, r.ipv6 or None)
        if dns_reset:
            records.set_network_internal(net_id, net.internal)

    def reconcile(self) -> None:
        """Repair drift between the peers etcd describes and the kernel."""
        with self.ctrl.lock:
            for net_id in list(self.remote) + [n.id for n in self.ctrl.networks.values() if n.driver == "overlay"]:
                net = self.ctrl.networks.get(net_id)
                if net is None or net.state != "ready" or net.driver != "overlay":
                    continue
                try:
                    if not self.driver.network_exists(net):
                        log.warning("reconcile: network %s: kernel objects missing, re-created", net.name)
                        self.driver.delete_network(net)
                        net.driver_state = dict(self.driver.create_network(net))
                    for what in self.driver.repair_network(net):
                        self.repairs += 1
                        log.warning("reconcile: network %s: put back %s", net.name, what)
                    from netstack.drivers.overlay import Peer

                    plan = self.driver.set_peers(net, [Peer(r.id, r.mac, r.vtep, r.ipv4, r.ipv6)
                                                       for r in self.remote.get(net_id, {}).values()])
                except Exception as exc:
                    log.warning("reconcile of %s failed: %s", net.name, exc)
                    continue
                if plan:
                    self.repairs += 1
                    log.warning("reconcile: network %s: repaired %s", net.name, plan)

    def _adopt(self, net: "Network") -> None:
        """A global network made on another host: make it here too."""
        ctrl = self.ctrl
        if any(n.name == net.name for n in ctrl.networks.values()):
            log.warning("cluster: network %s (%s) not adopted: a local network has that name", net.name, net.short_id)
            return
        clash = ctrl.subnet_clash(net)
        if clash:
            log.error("cluster: network %s (%s) not adopted: %s", net.name, net.short_id, clash)
            return
        driver = ctrl._driver(net.driver)
        net.state = "creating"
        ctrl._commit(networks=[net])
        try:
            net.driver_state = dict(driver.create_network(net))
            try:
                ctrl._program_network(net, driver)
            except Exception:
                ctrl._collect(lambda: driver.delete_network(net))
                raise
        except Exception as exc:
            ctrl._forget_network(net)
            log.error("cluster: cannot make network %s on this host: %s", net.name, exc)
            return
        net.state = "ready"
        ctrl._commit(networks=[net])
        log.info("cluster: adopted network %s (%s)", net.name, net.short_id)

    def _drop(self, net: "Network") -> None:
        """A global network removed in the cluster: remove it here."""
        ctrl = self.ctrl
        for ep in ctrl.endpoints_of_network(net.id):
            sb = ctrl.sandboxes.get(ep.sandbox_id)
            if sb is not None:
                ctrl._disconnect(net, sb, ep)
        driver = ctrl._driver(net.driver)
        errors = ctrl._collect(lambda: ctrl._unprogram_network(net, driver), lambda: driver.delete_network(net))
        ctrl._forget_network(net)
        self.remote.pop(net.id, None)
        records = getattr(ctrl.dns, "records", None)
        if records is not None:
            records.remove_network(net.id)
        log.info("cluster: network %s removed (by another host)%s", net.name, f": {errors}" if errors else "")
