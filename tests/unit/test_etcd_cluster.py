"""The etcd client's edges and the cluster store's logic over an in-memory
etcd (the same txn semantics the JSON gateway gives: create_revision == 0,
mod_revision ==), including address uniqueness under concurrent claims."""

from __future__ import annotations

import http.server
import ipaddress
import json
import socket
import threading
import time
import types

import pytest

from netstack import etcd
from netstack.cluster import ClusterIpam, ClusterStore, _next_free
from netstack.errors import Conflict, Forbidden, Internal, InvalidParameter, Unavailable
from netstack.ipamapi import GLOBAL, PoolRequest
from netstack.network import IpamConfig, Network


def _wire(kvs):
    """Keys as etcd's JSON gateway sends them."""
    return [{"key": etcd.b64(v.key), "value": etcd.b64(v.value), "create_revision": str(v.create_revision),
             "mod_revision": str(v.mod_revision)} for v in kvs]


class FakeEtcd:
    """Just enough of EtcdClient, atomic under one lock."""

    def __init__(self) -> None:
        self.kv: dict[str, etcd.KeyValue] = {}
        self.rev = 1
        self.lock = threading.Lock()
        self.txns = 0

    def describe(self) -> str:
        return "etcd://fake"

    def get(self, key):
        with self.lock:
            return self.kv.get(key)

    def get_prefix(self, prefix):
        with self.lock:
            return [v for k, v in sorted(self.kv.items()) if k.startswith(prefix)], self.rev

    def _put(self, key, value, lease=0, *, bump=True):
        self.rev += bump
        old = self.kv.get(key)
        self.kv[key] = etcd.KeyValue(key, value, old.create_revision if old else self.rev, self.rev, lease)

    def put(self, key, value, *, lease=0):
        with self.lock:
            self._put(key, value, lease)
            return self.rev

    def delete(self, key, *, prefix=False):
        with self.lock:
            return self._delete(key, prefix)

    def _delete(self, key, prefix, *, bump=True):
        gone = [k for k in self.kv if (k.startswith(key) if prefix else k == key)]
        for k in gone:
            del self.kv[k]
        self.rev += bump
        return len(gone)

    def txn(self, compare, success, failure=None):
        ok, responses, _ = self.txn_rev(compare, success, failure)
        return ok, responses

    def txn_rev(self, compare, success, failure=None):
        with self.lock:
            self.txns += 1
            ok = all(self._holds(c) for c in compare)
            responses = []
            ops = success if ok else (failure or [])
            if any("request_range" not in op for op in ops):
                self.rev += 1               # as etcd: every write of one txn has the same revision
            for op in ops:
                if "request_put" in op:
                    r = op["request_put"]
                    self._put(etcd.unb64(r["key"]), etcd.unb64(r["value"]), int(r.get("lease", 0)), bump=False)
                    responses.append({"response_put": {}})
                elif "request_delete_range" in op:
                    r = op["request_delete_range"]
                    self._delete(etcd.unb64(r["key"]), "range_end" in r, bump=False)
                    responses.append({"response_delete_range": {}})
                elif "request_range" in op:
                    r = op["request_range"]
                    key = etcd.unb64(r["key"])
                    kvs = [v for k, v in sorted(self.kv.items()) if (k.startswith(key) if "range_end" in r else k == key)]
                    responses.append({"response_range": {"kvs": _wire(kvs)}})
            return ok, responses, self.rev

    def call(self, path, body):
        """The gateway's shape, for the two requests a claim makes."""
        if path == "/kv/range":
            assert "range_end" in body, "claims read whole pools"
            kvs, rev = self.get_prefix(etcd.unb64(body["key"]))
            return {"header": {"revision": str(rev)}, "kvs": _wire(kvs)}
        assert path == "/kv/txn", path
        ok, responses, rev = self.txn_rev(body["compare"], body["success"], body["failure"])
        return {"header": {"revision": str(rev)}, "succeeded": ok, "responses": responses}

    def close(self):
        pass

    def send(self, path, body):
        """Done on arrival, as etcd does; the answer is taken later."""
        answer = self.call(path, body)
        return types.SimpleNamespace(answer=lambda: answer)

    def _holds(self, c):
        kv = self.kv.get(etcd.unb64(c["key"]))
        if c["target"] == "CREATE":
            return (kv.create_revision if kv else 0) == int(c["create_revision"])
        return (kv.mod_revision if kv else 0) == int(c["mod_revision"])

    def lease_grant(self, ttl):
        return 7


def pool_req(cidr: str | None = None, **kw) -> PoolRequest:
    return PoolRequest(address_space=GLOBAL, pool=ipaddress.ip_network(cidr) if cidr else None, **kw)


# ------------------------------------------------------------- etcd client

def test_parse_endpoints():
    assert etcd.parse_endpoints("etcd://10.0.0.1:2379,10.0.0.2:2379") == [("10.0.0.1", 2379), ("10.0.0.2", 2379)]
    for bad in ("http://x:1", "etcd://", "etcd://host", "etcd://h:99999", "x"):
        with pytest.raises(InvalidParameter):
            etcd.parse_endpoints(bad)


def test_prefix_end():
    assert etcd.prefix_end("/pynet/") == "/pynet0"


def test_unreachable_etcd_is_unavailable_naming_every_endpoint():
    socks = [socket.socket() for _ in range(2)]
    for s in socks:
        s.bind(("127.0.0.1", 0))           # bound, never listening: refused
    ports = [s.getsockname()[1] for s in socks]
    client = etcd.EtcdClient([("127.0.0.1", p) for p in ports], timeout=1)
    with pytest.raises(Unavailable, match="unreachable") as err:
        client.get("/x")
    for p in ports:
        assert str(p) in str(err.value)
    for s in socks:
        s.close()


def test_gateway_wire_format_and_failover():
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body))
            if self.path == "/v3/kv/range":
                out = {"header": {"revision": "5"}, "kvs": [{"key": etcd.b64("/a"), "value": etcd.b64("v"),
                                                             "create_revision": "3", "mod_revision": "4"}]}
            else:
                self.send_response(400)
                self.end_headers()
                self.wfile.write(b'{"error": "bad", "code": 3}')
                return
            data = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    try:
        client = etcd.EtcdClient([("127.0.0.1", dead.getsockname()[1]), ("127.0.0.1", srv.server_address[1])])
        kv = client.get("/a")
        assert kv == etcd.KeyValue("/a", "v", 3, 4)
        assert seen[0] == ("/v3/kv/range", {"key": etcd.b64("/a")})
        with pytest.raises(Internal, match="bad"):
            client.put("/a", "x")
    finally:
        srv.shutdown()
        srv.server_close()
        dead.close()


@pytest.fixture
def keepalive_gateway():
    """A gateway stand-in on HTTP/1.1 keep-alive that hangs up, without
    saying so, after every third answer (an idle timeout, a restarted
    etcd).  Yields (port, requests seen as (client address, body))."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.client_address, body))
            data = b'{"header": {"revision": "9"}}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = len(seen) % 3 == 0

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv.server_address[1], seen
    finally:
        srv.shutdown()
        srv.server_close()


def test_connections_are_kept_alive_and_a_closed_one_is_replaced(keepalive_gateway):
    port, seen = keepalive_gateway
    client = etcd.EtcdClient([("127.0.0.1", port)])
    for i in range(7):
        assert client.put("/k", str(i)) == 9
    assert len(seen) == 7
    assert len({peer for peer, _ in seen}) == 3          # 3 + 3 + 1 requests on 3 connections
    client.close()


def test_a_request_is_sent_at_once_and_its_answer_taken_later(keepalive_gateway):
    """EtcdClient.send: etcd has the request before the caller asks for the
    answer (the overlay attach works on meanwhile).  On a connection the
    server hung up, the request is lost on the way; the answer then sends
    it again on a new connection: etcd sees every request exactly once."""
    port, seen = keepalive_gateway
    client = etcd.EtcdClient([("127.0.0.1", port)])
    for i in range(7):
        pending = client.send("/kv/put", {"key": etcd.b64("/k"), "value": etcd.b64(str(i))})
        if i == 0 or i % 3:     # not right after a hang-up
            deadline = time.monotonic() + 5
            while len(seen) <= i and time.monotonic() < deadline:
                time.sleep(0.001)
            assert len(seen) == i + 1                      # arrived, its answer not yet taken
        assert pending.answer() == {"header": {"revision": "9"}}
    assert [body["value"] for _, body in seen] == [etcd.b64(str(i)) for i in range(7)]
    assert len({peer for peer, _ in seen}) == 3
    client.close()


# ------------------------------------------------------------- cluster IPAM

def test_pools_clash_across_the_cluster():
    ipam = ClusterIpam(FakeEtcd(), "10.199.0.11")
    pool = ipam.request_pool(pool_req("10.210.0.0/24"))
    assert pool.pool_id == "global/10.210.0.0/24"
    with pytest.raises(Conflict, match="10.210.0.0/24"):
        ipam.request_pool(pool_req("10.210.0.128/25"))
    auto = ipam.request_pool(pool_req())
    assert auto.network == ipaddress.ip_network("10.0.0.0/24")
    ipam.release_pool(pool.pool_id)
    ipam.request_pool(pool_req("10.210.0.128/25"))


def test_addresses_gateway_first_then_round_robin_and_preferred_clash():
    ipam = ClusterIpam(FakeEtcd(), "h1")
    pid = ipam.request_pool(pool_req("10.9.0.0/29", aux_addresses=(ipaddress.ip_address("10.9.0.3"),))).pool_id
    assert str(ipam.request_address(pid, gateway=True)) == "10.9.0.1"
    got = [str(ipam.request_address(pid)) for _ in range(4)]
    assert got == ["10.9.0.2", "10.9.0.4", "10.9.0.5", "10.9.0.6"]   # .3 is aux, .7 broadcast
    with pytest.raises(Unavailable, match="no available"):
        ipam.request_address(pid)
    ipam.release_address(pid, ipaddress.ip_address("10.9.0.4"))
    with pytest.raises(Conflict, match="10.9.0.5"):
        ipam.request_address(pid, ipaddress.ip_address("10.9.0.5"))
    assert str(ipam.request_address(pid, ipaddress.ip_address("10.9.0.4"))) == "10.9.0.4"


def test_an_address_costs_one_round_trip_and_a_stale_view_recovers():
    fake = FakeEtcd()
    calls = []
    for name in ("get", "get_prefix", "txn_rev"):
        real = getattr(fake, name)
        setattr(fake, name, lambda *a, _real=real, _name=name, **kw: (calls.append(_name), _real(*a, **kw))[1])
    h1, h2 = ClusterIpam(fake, "h1"), ClusterIpam(fake, "h2")
    pid = h1.request_pool(pool_req("10.7.0.0/24")).pool_id
    assert str(h1.request_address(pid)) == "10.7.0.1"      # first use of the pool: one read, one claim
    calls.clear()
    assert [str(h1.request_address(pid)) for _ in range(3)] == ["10.7.0.2", "10.7.0.3", "10.7.0.4"]
    assert calls == ["txn_rev"] * 3                         # then one round trip each
    assert str(h2.request_address(pid)) == "10.7.0.5"       # the shared cursor goes on
    calls.clear()
    assert str(h1.request_address(pid)) == "10.7.0.6"       # h1's view was stale: the failed claim
    assert calls == ["txn_rev", "txn_rev"]                  # brought the pool back, no extra read
    h2.release_address(pid, ipaddress.ip_address("10.7.0.2"))   # h1 does not know: it skips .2 until
    assert str(h1.request_address(pid, ipaddress.ip_address("10.7.0.2"))) == "10.7.0.2"  # it learns


def test_a_full_view_is_read_again_before_giving_up():
    fake = FakeEtcd()
    h1, h2 = ClusterIpam(fake, "h1"), ClusterIpam(fake, "h2")
    pid = h1.request_pool(pool_req("10.6.0.0/30")).pool_id   # two addresses: .1 .2
    h1.request_address(pid)
    a = h2.request_address(pid)
    with pytest.raises(Unavailable, match="no available"):
        h1.request_address(pid)
    h2.release_address(pid, a)                              # h1's view still has .2 taken
    assert h1.request_address(pid) == a


def test_concurrent_claims_from_many_hosts_are_unique():
    fake = FakeEtcd()
    hosts = [ClusterIpam(fake, f"h{i}") for i in range(3)]
    pid = hosts[0].request_pool(pool_req("10.8.0.0/24")).pool_id
    got: list[str] = []
    lock = threading.Lock()

    def attach(ipam):
        for _ in range(40):
            a = str(ipam.request_address(pid))
            with lock:
                got.append(a)

    threads = [threading.Thread(target=attach, args=(h,)) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 120 and len(set(got)) == 120


def test_next_free_wraps_and_reports_full():
    assert _next_free(1, 5, 4, {4, 5}) == 1
    assert _next_free(1, 3, 1, {1, 2, 3}) is None


# ------------------------------------------------------------ cluster store

def overlay_net(name="ov", vni="") -> Network:
    opts = {"com.docker.network.driver.overlay.vxlanid_list": vni} if vni else {}
    return Network(id=(name * 64)[:64], name=name, driver="overlay", scope="global", options=opts,
                   ipv4=[IpamConfig(subnet="10.7.0.0/24", gateway="10.7.0.1", pool_id="global/10.7.0.0/24")])


def test_vni_allocation_and_clashes():
    fake = FakeEtcd()
    store = ClusterStore(fake, "10.199.0.11", node_id="n1", underlay_mtu=1500)
    a, b = overlay_net("a"), overlay_net("b")
    assert store.create_network(a) == ""
    store.create_network(b)
    assert a.options["com.docker.network.driver.overlay.vxlanid_list"] == "4096"
    assert b.options["com.docker.network.driver.overlay.vxlanid_list"] == "4097"
    assert a.options["com.docker.network.driver.mtu"] == "1450"
    with pytest.raises(Conflict, match="VNI 4096"):
        store.create_network(overlay_net("c", vni="4096"))
    with pytest.raises(Conflict, match="name a already exists"):
        store.create_network(overlay_net("a"))
    store.delete_network(a)
    store.create_network(overlay_net("c", vni="4096"))


def test_mtu_mismatch_warns_and_takes_the_smallest():
    fake = FakeEtcd()
    fake.put("/pynet/hosts/10.199.0.12", json.dumps({"vtep": "10.199.0.12", "mtu": 1400}))
    store = ClusterStore(fake, "10.199.0.11", node_id="n1", underlay_mtu=1500)
    n = overlay_net()
    warning = store.create_network(n)
    assert "differ" in warning and "1350" in warning
    assert n.options["com.docker.network.driver.mtu"] == "1350"


def test_delete_refused_while_another_host_has_endpoints():
    fake = FakeEtcd()
    store = ClusterStore(fake, "10.199.0.11", node_id="n1", underlay_mtu=1500)
    n = overlay_net()
    store.create_network(n)
    fake.put(f"/pynet/endpoints/10.199.0.13/{n.id}/ep1", json.dumps({"vtep": "10.199.0.13"}))
    with pytest.raises(Forbidden, match="10.199.0.13"):
        store.delete_network(n)


def test_advertising_an_address_another_live_node_holds_is_refused():
    fake = FakeEtcd()
    ClusterStore(fake, "10.199.0.11", node_id="n1", underlay_mtu=1500).register()
    ClusterStore(fake, "10.199.0.11", node_id="n1", underlay_mtu=1500).register()   # the same node again: fine
    with pytest.raises(Conflict, match="already advertised"):
        ClusterStore(fake, "10.199.0.11", node_id="n2", underlay_mtu=1500).register()


# ------------------------------------- endpoint attach: claim + publish in one txn

def registered(fake, vtep: str) -> ClusterStore:
    store = ClusterStore(fake, vtep, node_id="n-" + vtep, underlay_mtu=1500)
    store.register()
    return store


def counting(fake) -> list[str]:
    calls: list[str] = []
    for name in ("get", "get_prefix", "put", "delete", "txn_rev"):
        real = getattr(fake, name)
        setattr(fake, name, lambda *a, _real=real, _name=name, **kw: (calls.append(_name), _real(*a, **kw))[1])
    return calls


def endpoint_record(fake, net_id: str, ep_id: str) -> dict | None:
    kv = next((v for k, v in fake.kv.items() if k.startswith("/pynet/endpoints/") and k.endswith(f"/{net_id}/{ep_id}")),
              None)
    return json.loads(kv.value) if kv else None


def claims(fake, cidr: str) -> dict[str, str]:
    prefix = "/pynet/ipam/" + cidr.replace("/", "_") + "/"
    return {k[len(prefix):]: json.loads(v.value).get("host", "") for k, v in fake.kv.items()
            if k.startswith(prefix) and not k.endswith("~next")}


def test_attach_claims_and_publishes_in_one_transaction():
    fake = FakeEtcd()
    store = registered(fake, "10.199.0.11")
    v4 = store.ipam.request_pool(pool_req("10.7.0.0/24")).pool_id
    v6 = store.ipam.request_pool(pool_req("fd00:7::/64", v6=True)).pool_id
    store.ipam.request_address(v4)                           # the pool's view is read once, here
    store.ipam.request_address(v6)
    calls = counting(fake)
    got = store.begin_attach("net1", "ep1", "web", ["web", "www"], "02:42:0a:07:00:09", [(v4, None), (v6, None)]).result()
    assert calls == ["txn_rev"]                              # one write: both claims and the record
    assert [str(a) for a in got] == ["10.7.0.2", "fd00:7::2"]
    assert endpoint_record(fake, "net1", "ep1") == {
        "name": "web", "names": ["web", "www"], "mac": "02:42:0a:07:00:09", "vtep": "10.199.0.11",
        "ipv4": "10.7.0.2", "ipv6": "fd00:7::2"}
    assert fake.kv["/pynet/endpoints/10.199.0.11/net1/ep1"].lease == store.lease     # a dead host's record expires
    assert fake.kv["/pynet/ipam/10.7.0.0_24/10.7.0.2"].lease == 0        # its claim does not
    assert claims(fake, "10.7.0.0/24") == {"10.7.0.1": "10.199.0.11", "10.7.0.2": "10.199.0.11"}


def test_attach_lost_race_is_retried_with_nothing_half_made():
    fake = FakeEtcd()
    h1, h2 = registered(fake, "10.199.0.11"), registered(fake, "10.199.0.12")
    pid = h1.ipam.request_pool(pool_req("10.7.0.0/24")).pool_id
    h1.begin_attach("n", "a1", "a1", ["a1"], "02:00:00:00:00:01", [(pid, None)]).result()
    h2.begin_attach("n", "b1", "b1", ["b1"], "02:00:00:00:00:02", [(pid, None)]).result()   # h1's view is stale now
    calls = counting(fake)
    rev = fake.rev
    [addr] = h1.begin_attach("n", "a2", "a2", ["a2"], "02:00:00:00:00:03", [(pid, None)]).result()
    assert calls == ["txn_rev", "txn_rev"]                   # lost (cursor moved), retried from the read-back
    assert fake.rev == rev + 1                               # the lost try wrote nothing
    assert str(addr) == "10.7.0.3"
    rec = fake.kv["/pynet/endpoints/10.199.0.11/n/a2"]
    assert rec.create_revision == rec.mod_revision == fake.rev and json.loads(rec.value)["ipv4"] == "10.7.0.3"
    assert claims(fake, "10.7.0.0/24") == {"10.7.0.1": "10.199.0.11", "10.7.0.2": "10.199.0.12",
                                           "10.7.0.3": "10.199.0.11"}


def test_attach_of_a_taken_address_is_refused_and_writes_nothing():
    fake = FakeEtcd()
    h1, h2 = registered(fake, "10.199.0.11"), registered(fake, "10.199.0.12")
    pid = h1.ipam.request_pool(pool_req("10.7.0.0/24")).pool_id
    h1.begin_attach("n", "a1", "a1", ["a1"], "02:00:00:00:00:01", [(pid, ipaddress.ip_address("10.7.0.9"))]).result()
    before = dict(fake.kv)
    with pytest.raises(Conflict, match="10.7.0.9"):
        h2.begin_attach("n", "b1", "b1", ["b1"], "02:00:00:00:00:02", [(pid, ipaddress.ip_address("10.7.0.9"))]).result()
    assert fake.kv == before
    with pytest.raises(InvalidParameter, match="10.8.0.1"):  # checked before anything is sent
        h2.begin_attach("n", "b1", "b1", ["b1"], "02:00:00:00:00:02", [(pid, ipaddress.ip_address("10.8.0.1"))])
    assert fake.kv == before


def test_attach_in_a_full_pool_writes_nothing_and_an_unregistered_host_is_refused():
    fake = FakeEtcd()
    h1 = registered(fake, "10.199.0.11")
    pid = h1.ipam.request_pool(pool_req("10.6.0.0/30")).pool_id       # .1 .2
    h1.begin_attach("n", "a1", "a1", ["a1"], "m1", [(pid, None)]).result()
    h1.begin_attach("n", "a2", "a2", ["a2"], "m2", [(pid, None)]).result()
    before = dict(fake.kv)
    with pytest.raises(Unavailable, match="no available"):
        h1.begin_attach("n", "a3", "a3", ["a3"], "m3", [(pid, None)]).result()
    assert fake.kv == before
    fresh = ClusterStore(fake, "10.199.0.13", node_id="n3", underlay_mtu=1500)   # no lease yet
    with pytest.raises(Unavailable, match="not registered"):
        fresh.begin_attach("n", "c1", "c1", ["c1"], "m4", [(pid, None)])


def test_concurrent_attaches_from_many_hosts_are_unique_and_consistent():
    fake = FakeEtcd()
    hosts = [registered(fake, f"10.199.0.{11 + i}") for i in range(3)]
    pid = hosts[0].ipam.request_pool(pool_req("10.8.0.0/24")).pool_id
    got: list[str] = []
    lock = threading.Lock()

    def attach(i, store):
        for j in range(25):
            [a] = store.begin_attach("n", f"e{i}-{j}", "x", ["x"], "m", [(pid, None)]).result()
            with lock:
                got.append(str(a))

    threads = [threading.Thread(target=attach, args=(i, h)) for i, h in enumerate(hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 75 and len(set(got)) == 75
    records = {json.loads(v.value)["ipv4"]: json.loads(v.value)["vtep"]
               for k, v in fake.kv.items() if k.startswith("/pynet/endpoints/") and k.split("/")[-2] == "n"}
    assert records == claims(fake, "10.8.0.0/24")            # every claim has its record, from the same host
    for h in hosts:
        h.close()


def test_detach_withdraws_and_releases_in_one_transaction_or_leaves_it_to_the_sync():
    fake = FakeEtcd()
    store = registered(fake, "10.199.0.11")
    pid = store.ipam.request_pool(pool_req("10.7.0.0/24")).pool_id
    [a] = store.begin_attach("n", "a1", "a1", ["a1"], "m", [(pid, None)]).result()
    calls = counting(fake)
    store.detach_endpoint("n", "a1", [(pid, a)])
    assert calls == ["txn_rev"]
    assert endpoint_record(fake, "n", "a1") is None and claims(fake, "10.7.0.0/24") == {}

    def down(*a, **kw):
        raise Unavailable("cluster store etcd://fake is unreachable")

    [b] = store.begin_attach("n", "a2", "a2", ["a2"], "m", [(pid, None)]).result()
    fake.txn_rev = down
    store.detach_endpoint("n", "a2", [(pid, b)])              # no exception: a disconnect succeeds locally
    assert store.dirty.is_set()                              # and the agent's full sync withdraws it


def test_controller_undo_of_an_attach_takes_the_answer_and_removes_what_it_wrote():
    """The controller's side (Controller._undo_cluster_attach), over the
    same fake: a later step failed while the txn was in flight."""
    from types import SimpleNamespace

    from netstack.controller import Controller

    fake = FakeEtcd()
    store = registered(fake, "10.199.0.11")
    pid = store.ipam.request_pool(pool_req("10.7.0.0/24")).pool_id
    cfg = IpamConfig(subnet="10.7.0.0/24", pool_id=pid)
    net, ep = SimpleNamespace(id="n"), SimpleNamespace(id="a1")
    ctrl = SimpleNamespace(cluster=store)
    in_flight = store.begin_attach("n", "a1", "a1", ["a1"], "m", [(pid, None)])
    Controller._undo_cluster_attach(ctrl, net, ep, in_flight, [cfg])     # type: ignore[arg-type]
    assert endpoint_record(fake, "n", "a1") is None and claims(fake, "10.7.0.0/24") == {}

    before = dict(fake.kv)
    refused = store.begin_attach("n", "a2", "a2", ["a2"], "m", [(pid, ipaddress.ip_address("10.7.0.1"))])
    refused.result()
    taken = store.begin_attach("n", "a3", "a3", ["a3"], "m", [(pid, ipaddress.ip_address("10.7.0.1"))])
    Controller._undo_cluster_attach(ctrl, net, SimpleNamespace(id="a3"), taken, [cfg])   # Conflict: nothing to undo
    assert set(fake.kv) == set(before) | {"/pynet/endpoints/10.199.0.11/n/a2", "/pynet/ipam/10.7.0.0_24/10.7.0.1"}

    def down(*a, **kw):
        raise Unavailable("cluster store etcd://fake is unreachable")

    fake.txn_rev = down
    lost = store.begin_attach("n", "a4", "a4", ["a4"], "m", [(pid, ipaddress.ip_address("10.7.0.5"))])
    Controller._undo_cluster_attach(ctrl, net, SimpleNamespace(id="a4"), lost, [cfg])
    assert store.dirty.is_set()                              # maybe written: the full sync clears it
    store.close()


def test_a_host_watches_other_hosts_endpoints_and_never_its_own():
    """Its own attaches (and every IPAM key) wake nobody on the host that
    made them; an address that extends another's (.11 and .110) is not
    taken for it."""
    from netstack.cluster import endpoint_key, watch_ranges

    def watched(vtep: str, key: str) -> bool:
        return any(start <= key < end if end else key == start for start, end in watch_ranges(vtep))

    me = "10.199.0.11"
    assert not watched(me, endpoint_key(me, "n", "e"))
    for other in ("10.199.0.1", "10.199.0.110", "10.199.0.12", "10.199.0.2", "fd00::11", "9.9.9.9"):
        assert watched(me, endpoint_key(other, "n", "e")), other
    assert watched(me, "/pynet/networks/abc") and watched(me, "/pynet/hosts/10.199.0.11")
    for quiet in ("/pynet/hosts/10.199.0.12", "/pynet/ipam/10.7.0.0_24/10.7.0.2", "/pynet/ipam/10.7.0.0_24/~next",
                  "/pynet/pools", "/pynet/names/x", "/pynet/vnis/42"):
        assert not watched(me, quiet), quiet


def test_a_full_sync_republishes_this_hosts_records_under_their_keys_and_drops_the_rest():
    """What the agent writes back after (re)registering: a record for each
    endpoint it has (moved off an older key layout, endpoints/<net>/<ep>),
    none for endpoints it no longer has; other hosts' records untouched."""
    from types import SimpleNamespace

    from netstack.cluster import ClusterAgent, RemoteEndpoint

    fake = FakeEtcd()
    store = registered(fake, "10.199.0.11")
    value = json.dumps({"name": "web", "names": ["web"], "mac": "02:00:00:00:00:01", "vtep": "10.199.0.11",
                        "ipv4": "10.7.0.5", "ipv6": ""})
    fake.put("/pynet/endpoints/n/kept", value)                             # older layout, still attached
    fake.put("/pynet/endpoints/10.199.0.11/n/gone", value)                 # detached while etcd was away
    fake.put("/pynet/endpoints/10.199.0.12/n/theirs", value.replace("10.199.0.11", "10.199.0.12"))
    net = SimpleNamespace(id="n", scope="global", ipv4=[], ipv6=[])
    ep = SimpleNamespace(id="kept", network_id="n", state="ready", name="web", mac="02:00:00:00:00:01",
                         ipv4="10.7.0.5/24", ipv6="", driver_state={"dns_names": ["web"]})
    agent = ClusterAgent.__new__(ClusterAgent)
    agent.ctrl, agent.store = SimpleNamespace(endpoints={"kept": ep}, networks={"n": net}), store
    eps = [RemoteEndpoint.parse(kv) for k, kv in fake.kv.items() if k.startswith("/pynet/endpoints/")]
    agent._republish(eps, [], {"n": net})  # type: ignore[arg-type]
    assert sorted(k for k in fake.kv if k.startswith("/pynet/endpoints/")) == [
        "/pynet/endpoints/10.199.0.11/n/kept", "/pynet/endpoints/10.199.0.12/n/theirs"]
    assert fake.kv["/pynet/endpoints/10.199.0.11/n/kept"].lease == store.lease
