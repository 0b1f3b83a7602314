"""API robustness: hypothesis drives malformed and boundary input at every
operation of the OpenAPI document pynetd serves (GET /openapi.json).

For every request: no 5xx, no traceback text in the answer, and a refused
request (4xx) changes nothing (networks, sandboxes, links and PYNET rules
are compared before and after).  Plus a DNS fuzz run against a running
pynetd's sandbox listener (127.0.0.11 inside a sandbox), with the resolver
still answering correctly afterwards.

(schemathesis is not used: it is not installed in this environment and the
hand-written strategies below follow the same document; see
docs/reliability.md.)
"""

from __future__ import annotations

import json
import os
import random
import re
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netstack.testing.hosts import Daemon, NetnsHost

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("PYNET_FUZZ_EXAMPLES", "40"))
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+")


def raw_request(path: str, method: str, target: str, body: bytes | None, ctype: str = "application/json") -> tuple[int, bytes]:
    """One HTTP/1.1 request over the UNIX socket, bytes exactly as given."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect(path)
        head = f"{method} {target} HTTP/1.1\r\nHost: pynet\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        s.sendall(head.encode("latin-1") + b"\r\n" + (body or b""))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    finally:
        s.close()
    status = int(data.split(b" ", 2)[1])
    return status, data


# ---------------------------------------------------------------- strategies

_WEIRD_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "a" * 300, "../../etc", "10.0.0.0/33", "::/129", "0.0.0.0/0", "255.255.255.255",
                     "-1", "65536", "br-x y", "\x00", "😀", "${x}", "%s%n", "bridge", "host", "none", "null",
                     "macvlan", "overlay", "10.50.0.0/24", "10.50.0.1", "8080:80", "1-65535:1-65535",
                     "127.0.0.1::80/udp", "eth0", "lo", "/proc/self/ns/net", "/run/netns"]),
)
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**63, max_value=2**64),
                     st.floats(allow_nan=False), _WEIRD_TEXT)
_ANY = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_WEIRD_TEXT, inner, max_size=4)), max_leaves=12)


def _from_schema(schema: dict, comps: dict, depth: int = 0) -> st.SearchStrategy:
    """Values that mostly fit the schema, often do not (wrong types,
    boundary strings, extra fields)."""
    if "$ref" in schema:
        return _from_schema(comps[schema["$ref"].rsplit("/", 1)[1]], comps, depth)
    if "oneOf" in schema:
        return st.one_of(*[_from_schema(s, comps, depth) for s in schema["oneOf"]])
    wrong = _ANY if depth < 3 else _SCALARS
    kind = schema.get("type")
    if kind == "object" and "properties" in schema and depth < 4:
        fields = {k: _from_schema(v, comps, depth + 1) for k, v in schema["properties"].items()}
        fitting = st.fixed_dictionaries({}, optional=fields)
        return st.one_of(fitting, fitting, wrong)
    if kind == "object":
        return st.one_of(st.dictionaries(_WEIRD_TEXT, _WEIRD_TEXT, max_size=3), wrong)
    if kind == "array":
        return st.one_of(st.lists(_from_schema(schema.get("items", {}), comps, depth + 1), max_size=3), wrong)
    if kind == "string":
        return st.one_of(_WEIRD_TEXT, _WEIRD_TEXT, _SCALARS)
    if kind == "integer":
        return st.one_of(st.integers(min_value=-2**70, max_value=2**70), _SCALARS)
    if kind == "boolean":
        return st.one_of(st.booleans(), _SCALARS)
    return wrong


#: a process id no process has (pid_max is at most 2**22)
NO_PID = 2**22 + 7


def contained(value: object) -> object:
    """The fuzzed body with every process id and namespace path pointed away
    from this machine's real processes: pynetd runs in the test's namespace,
    but a sandbox "by pid" or "by path" may name any namespace, and a valid
    request would then put an interface and a default route into it."""
    if isinstance(value, dict):
        return {k: (NO_PID if k.lower() == "pid" and isinstance(v, int) and not isinstance(v, bool) else
                    "/nonexistent/netns" if isinstance(v, str) and v.startswith(("/proc", "/run", "/var/run"))
                    else contained(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [contained(v) for v in value]
    return value


def _body_bytes(value: object) -> st.SearchStrategy:
    encoded = json.dumps(contained(value)).encode()
    return st.sampled_from([encoded, encoded, encoded[: len(encoded) // 2], b"\xff\xfe" + encoded, b"{" * 200,
                            b"null", b"[]", b""])


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def api():
    host = NetnsHost("pnf")
    d = Daemon(host, extra_args=["--dns-upstream", "127.0.0.1:9"])
    try:
        d.start()
        c = d.client()
        # Something to refer to, so that the fuzzer can also hit real objects.
        c.network_create({"Name": "fz", "IPAM": {"Config": [{"Subnet": "10.50.0.0/24"}]}})
        c.sandbox_create({"Name": "fzs", "Networks": ["fz"], "Ports": ["8080:80"]})
        yield d
    except BaseException:
        print(d.log())
        raise
    finally:
        d.close()
        host.close()


def snapshot(d: Daemon) -> tuple:
    c = d.client()
    nets = sorted((n["Name"], n["Id"], json.dumps(n["IPAM"], sort_keys=True)) for n in c.networks())
    sbs = sorted((s["Name"], json.dumps(s["Networks"], sort_keys=True), json.dumps(s["Ports"], sort_keys=True))
                 for s in c.sandboxes())
    links = sorted(l["ifname"] for l in json.loads(d.host.exec(["ip", "-j", "link"]).stdout))
    rules = sorted(l for l in d.host.exec(["iptables-legacy-save"]).stdout.splitlines() if l.startswith("-A"))
    return nets, sbs, links, rules


def operations(doc: dict) -> list[tuple[str, str, dict]]:
    return [(path, method, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def test_openapi_document_is_served_and_covers_every_route(api):
    doc = api.client().request("GET", "/openapi.json")
    assert doc["openapi"].startswith("3.")
    from netstack.api.server import make_app

    served = set()
    for r in make_app(object()).router.routes():
        info = r.resource.get_info() if r.resource is not None else {}
        path = info.get("path") or info.get("formatter", "")
        if "{version}" not in path:
            served.add((path, r.method.lower()))
    documented = {(p, m) for p, m, _ in operations(doc)}
    assert served == documented
    assert len(documented) == SLOTS, "every operation gets one fuzz slot: set SLOTS to the count"


# Operations that change nothing on success are fuzzed freely; the mutating
# ones too, but a success must be a deliberate one (a 2xx is then followed by
# no check of "no change").
SLOTS = 17  # the operations in the document (checked below: a new one needs a slot)


@pytest.mark.parametrize("index", range(SLOTS))
def test_fuzz_every_operation(api, index):
    doc = api.client().request("GET", "/openapi.json")
    ops = operations(doc)
    if index >= len(ops):
        pytest.skip("fewer operations than slots")  # not a kernel feature: only the slot count
    path, method, op = ops[index]
    comps = doc["components"]["schemas"]
    body_schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    params = op.get("parameters", [])

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        ref=st.one_of(st.sampled_from(["fz", "fzs", "none", "host", "nosuch", "f", ""]), _WEIRD_TEXT),
        query=st.dictionaries(st.sampled_from([p["name"] for p in params if p["in"] == "query"] + ["x"]),
                              _WEIRD_TEXT, max_size=2),
        body=(_from_schema(body_schema, comps).flatmap(_body_bytes) if body_schema else st.none()),
        version=st.sampled_from(["", "/v1.47", "/v1.24", "/v1.99", "/v0.1", "/v1.44"]),
    )
    def run(ref, query, body, version):
        from urllib.parse import quote

        target = version + path.replace("{id}", quote(ref, safe="") or "%20")
        for p in params:  # other path parameters: a documented value, or the fuzzed text
            if p["in"] == "path" and p["name"] != "id":
                value = p.get("schema", {}).get("enum", [ref])[len(ref) % len(p.get("schema", {}).get("enum", [ref]))]
                target = target.replace("{" + p["name"] + "}", quote(value, safe="") or "%20")
        if query:
            target += "?" + "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in query.items())
        before = snapshot(api) if method != "get" else None
        status, raw = raw_request(api.socket, method.upper(), target, body)
        text = raw.decode("utf-8", "replace")
        assert status < 500, f"{method.upper()} {target} {body!r} -> {status}\n{text}"
        assert not TRACEBACK.search(text), text
        if before is not None and status >= 400:
            assert snapshot(api) == before, f"refused {method.upper()} {target} {body!r} changed state"
        if before is not None and status < 300:
            _undo(api, before)

    run()


def _undo(d: Daemon, before: tuple) -> None:
    """A fuzzed request that succeeded (e.g. a create with a valid body):
    remove what it made, so the next example starts from the same state."""
    c = d.client()
    names = {n for n, _, _ in before[0]}
    sbs = {s for s, _, _ in before[1]}
    for s in c.sandboxes():
        if s["Name"] not in sbs:
            c.sandbox_remove(s["Id"], force=True)
    for n in c.networks():
        if n["Name"] not in names:
            c.network_remove(n["Id"])
    if not any(s["Name"] == "fzs" for s in c.sandboxes()):
        c.sandbox_create({"Name": "fzs", "Networks": ["fz"], "Ports": ["8080:80"]})
    elif "fz" not in c.sandbox_inspect("fzs")["Networks"]:
        c.network_connect("fz", {"Container": "fzs"})


def test_dns_listener_of_a_sandbox_survives_fuzz(api):
    """Random and mutated packets at 127.0.0.11:53 inside a sandbox of a
    running pynetd; afterwards names still resolve correctly."""
    from dnslib import DNSRecord

    from netstack import invariants
    from netstack.kernel.netns import run_in_netns

    key = api.client().sandbox_inspect("fzs")["Key"]
    n = int(os.environ.get("PYNET_DNS_FUZZ_PACKETS", "20000"))
    rng = random.Random(5)
    seeds = [DNSRecord.question(q, t).pack() for q in ("fzs", "fzs.fz", "nosuch", "x" * 60) for t in ("A", "AAAA", "PTR", "ANY")]
    sock = run_in_netns(key, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        sock.setblocking(False)
        for i in range(n):
            p = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 6)):
                op = rng.random()
                if op < 0.5 and p:
                    p[rng.randrange(len(p))] = rng.randrange(256)
                elif op < 0.75:
                    p = p[: rng.randrange(len(p) + 1)]
                else:
                    p += bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
            if i % 50 == 0:
                p = bytearray(os.urandom(rng.randint(0, 600)))
            try:
                sock.sendto(bytes(p), ("127.0.0.11", 53))
            except BlockingIOError:
                pass
            try:
                while True:
                    sock.recv(4096)
            except BlockingIOError:
                pass
    finally:
        sock.close()
    ip = api.client().sandbox_inspect("fzs")["Networks"]["fz"]["IPAddress"]
    assert invariants._query(key, "fzs") == {ip}
    assert invariants.check(api.data_root, api.exec_root, api.host.path) == []
