"""Property tests: DefaultIpam against a brute-force model.

The model keeps, per pool, the taken addresses as a plain set and the serial
cursor, and predicts every answer (which address, or which error).  Pools
are small (v4 /22../32, v6 /118../128) and their bases close together, so
overlaps, exhaustion and wrap-around all happen within a few steps.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from netstack.errors import Conflict, InvalidParameter, Unavailable
from netstack.ipam import DefaultIpam, overlaps
from netstack.ipam._addresses import AddressSet
from netstack.ipamapi import GLOBAL, LOCAL, IPAddress, IPNetwork, PoolRequest

V4_BASE = int(ipaddress.IPv4Address("10.0.0.0"))
V6_BASE = int(ipaddress.IPv6Address("fd00::"))


@st.composite
def pool_requests(draw: st.DrawFn) -> PoolRequest:
    v6 = draw(st.booleans())
    bits = 128 if v6 else 32
    prefix = draw(st.integers(bits - 10, bits))
    size = 1 << (bits - prefix)
    # bases within 4096 addresses of each other: pools collide often
    start = (V6_BASE if v6 else V4_BASE) + draw(st.integers(0, 4096 // size - 1)) * size
    network = ipaddress.ip_network((start, prefix))
    sub_pool = None
    if draw(st.booleans()):
        sub_prefix = draw(st.integers(prefix, bits))
        sub_size = 1 << (bits - sub_prefix)
        sub_start = start + draw(st.integers(0, size // sub_size - 1)) * sub_size
        sub_pool = ipaddress.ip_network((sub_start, sub_prefix))
    aux = draw(st.lists(st.integers(0, size - 1), max_size=3))
    return PoolRequest(
        address_space=draw(st.sampled_from([LOCAL, GLOBAL])),
        pool=network,
        sub_pool=sub_pool,
        v6=v6,
        aux_addresses=tuple(ipaddress.ip_address(start + a) for a in aux),
    )


@dataclass
class Model:
    network: IPNetwork
    lo: int  # dynamic range (sub-pool or pool)
    hi: int
    edges: set[int]
    aux: set[int]
    taken: set[int] = field(default_factory=set)
    cursor: int = 0

    @classmethod
    def of(cls, request: PoolRequest) -> Model:
        net = request.pool
        assert net is not None
        first, last = int(net.network_address), int(net.broadcast_address)
        edges: set[int] = set()
        if net.max_prefixlen - net.prefixlen > 1:
            edges = {first, last} if net.version == 4 else {first}
        span = request.sub_pool or net
        lo, hi = int(span.network_address), int(span.broadcast_address)
        aux = {int(a) for a in request.aux_addresses}
        return cls(net, lo, hi, edges, aux, taken=edges | aux, cursor=lo - 1)

    @property
    def first(self) -> int:
        return int(self.network.network_address)

    @property
    def last(self) -> int:
        return int(self.network.broadcast_address)

    def next_serial(self) -> int | None:
        n = self.hi - self.lo + 1
        start = self.cursor + 1 if self.cursor < self.hi else self.lo
        for i in range(n):
            candidate = self.lo + (start - self.lo + i) % n
            if candidate not in self.taken:
                return candidate
        return None

    def first_free(self) -> int | None:
        return next((a for a in range(self.first, self.last + 1) if a not in self.taken), None)


def to_ip(model: Model, address: int) -> IPAddress:
    if model.network.version == 6:
        return ipaddress.IPv6Address(address)
    return ipaddress.IPv4Address(address)


class IpamMachine(RuleBasedStateMachine):
    pool_ids = Bundle("pool_ids")

    def __init__(self) -> None:
        super().__init__()
        self.ipam = DefaultIpam()
        self.models: dict[str, Model] = {}
        self.spaces: dict[str, str] = {}

    @rule(target=pool_ids, request=pool_requests())
    def request_pool(self, request: PoolRequest) -> str:
        assert request.pool is not None
        clash = any(
            self.spaces[pid] == request.address_space and overlaps(m.network, request.pool)
            for pid, m in self.models.items()
        )
        try:
            pool = self.ipam.request_pool(request)
        except Conflict:
            assert clash
            return "none"
        assert not clash and pool.network == request.pool
        self.models[pool.pool_id] = Model.of(request)
        self.spaces[pool.pool_id] = request.address_space
        return pool.pool_id

    @rule(pool_id=consumes(pool_ids))
    def release_pool(self, pool_id: str) -> None:
        self.ipam.release_pool(pool_id)
        self.models.pop(pool_id, None)

    @rule(pool_id=pool_ids, gateway=st.booleans())
    def request_dynamic(self, pool_id: str, gateway: bool) -> None:
        model = self.models.get(pool_id)
        if model is None:
            return
        expected = model.first_free() if gateway else model.next_serial()
        try:
            got = int(self.ipam.request_address(pool_id, gateway=gateway))
        except Unavailable:
            assert expected is None
            return
        assert got == expected
        assert got not in model.taken
        if not gateway:
            assert model.lo <= got <= model.hi
            model.cursor = got
        model.taken.add(got)

    @rule(pool_id=pool_ids)
    def fill(self, pool_id: str) -> None:
        model = self.models.get(pool_id)
        if model is None:
            return
        free = {a for a in range(model.lo, model.hi + 1) if a not in model.taken}
        got = []
        while True:
            try:
                got.append(int(self.ipam.request_address(pool_id)))
            except Unavailable:
                break
        assert sorted(got) == sorted(free)
        model.taken |= free
        if got:
            model.cursor = got[-1]

    @rule(pool_id=pool_ids, offset=st.integers(-2, 1030))
    def request_preferred(self, pool_id: str, offset: int) -> None:
        model = self.models.get(pool_id)
        if model is None:
            return
        address = model.first + offset
        try:
            got = self.ipam.request_address(pool_id, to_ip(model, address))
        except InvalidParameter:
            assert not model.first <= address <= model.last or address in model.edges
            return
        except Conflict:
            assert address in model.taken and address not in model.edges
            return
        assert int(got) == address and address not in model.taken
        model.taken.add(address)

    @rule(pool_id=pool_ids, data=st.data())
    def release_address(self, pool_id: str, data: st.DataObject) -> None:
        model = self.models.get(pool_id)
        if model is None:
            return
        address = data.draw(st.integers(model.first, model.last))
        if data.draw(st.booleans()) and model.taken:
            address = data.draw(st.sampled_from(sorted(model.taken)))
        self.ipam.release_address(pool_id, to_ip(model, address))
        if address not in model.edges and address not in model.aux:
            model.taken.discard(address)

    @invariant()
    def pools_never_overlap_within_a_space(self) -> None:
        pools = list(self.ipam.pools().items())
        for i, (id_a, a) in enumerate(pools):
            for id_b, b in pools[i + 1:]:
                assert id_a.split("/")[0] != id_b.split("/")[0] or not overlaps(a, b)
        assert set(self.ipam.pools()) == set(self.models)


IpamMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestIpamMachine = IpamMachine.TestCase


@settings(max_examples=100, deadline=None)
@given(
    runs=st.lists(st.tuples(st.integers(0, 1 << 13), st.integers(0, 6000)), max_size=4),
    freed=st.lists(st.integers(0, 1 << 13), max_size=20),
    queries=st.lists(st.tuples(st.integers(0, 1 << 13), st.integers(0, 1 << 14)), max_size=10),
)
def test_next_free_matches_brute_force(
    runs: list[tuple[int, int]], freed: list[int], queries: list[tuple[int, int]]
) -> None:
    """Long taken runs, a few holes punched in them: the block-skipping scan
    finds exactly the lowest free address of every range."""
    top = (1 << 13) + 6000
    addresses = AddressSet(0, top, 0, top)
    taken: set[int] = set()
    for start, length in runs:
        for a in range(start, start + length):
            if a not in taken:
                addresses.take(a)
                taken.add(a)
    for a in freed:
        addresses.give_back(a)
        taken.discard(a)
    assert len(addresses) == len(taken)
    for start, stop in queries + [(0, top)]:
        expected = next((a for a in range(start, stop + 1) if a not in taken), None)
        assert addresses.next_free(start, stop) == expected
