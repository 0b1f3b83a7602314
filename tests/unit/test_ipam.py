"""DefaultIpam: pools, reserved addresses, preferred/gateway/serial rules."""

from __future__ import annotations

import ipaddress

import pytest

import netstack.ipam
from netstack.errors import Conflict, InvalidParameter, NotFound, Unavailable
from netstack.ipam import (
    DEFAULT_GLOBAL_POOLS,
    DEFAULT_LOCAL_POOLS,
    DefaultIpam,
    overlaps,
    parse_default_pools,
)
from netstack.ipam._addresses import AddressSet
from netstack.ipamapi import GLOBAL, DefaultPool, Ipam, PoolRequest

net = ipaddress.ip_network
ip = ipaddress.ip_address


def req(pool: str | None = None, **kw: object) -> PoolRequest:
    if pool is not None:
        kw["pool"] = net(pool)
        kw.setdefault("v6", net(pool).version == 6)
    return PoolRequest(**kw)  # type: ignore[arg-type]


@pytest.fixture
def ipam() -> DefaultIpam:
    return DefaultIpam()


def test_exports_are_exact() -> None:
    assert sorted(netstack.ipam.__all__) == [
        "DEFAULT_GLOBAL_POOLS",
        "DEFAULT_LOCAL_POOLS",
        "DefaultIpam",
        "overlaps",
        "parse_default_pools",
    ]
    assert isinstance(DefaultIpam(), Ipam)


# -- pools -------------------------------------------------------------------


def test_default_pools_are_dockers() -> None:
    assert [(str(p.base), p.size) for p in DEFAULT_LOCAL_POOLS] == [
        ("172.17.0.0/16", 16),
        ("172.18.0.0/16", 16),
        ("172.19.0.0/16", 16),
        ("172.20.0.0/14", 16),
        ("172.24.0.0/14", 16),
        ("172.28.0.0/14", 16),
        ("192.168.0.0/16", 20),
    ]
    assert [(str(p.base), p.size) for p in DEFAULT_GLOBAL_POOLS] == [("10.0.0.0/8", 24)]


def test_default_picking_in_order(ipam: DefaultIpam) -> None:
    got = [ipam.request_pool(req()) for _ in range(3)]
    assert [str(p.network) for p in got] == ["172.17.0.0/16", "172.18.0.0/16", "172.19.0.0/16"]
    assert got[0].pool_id == "local/172.17.0.0/16"
    assert str(ipam.request_pool(req()).network) == "172.20.0.0/16"


def test_default_picking_walks_all_local_pools_then_192_168() -> None:
    ipam = DefaultIpam()
    nets = [ipam.request_pool(req()).network for _ in range(15 + 16)]
    assert str(nets[14]) == "172.31.0.0/16"
    assert str(nets[15]) == "192.168.0.0/20"
    assert str(nets[-1]) == "192.168.240.0/20"
    with pytest.raises(Unavailable, match="no available pool"):
        ipam.request_pool(req())


def test_default_picking_skips_excluded_and_explicit(ipam: DefaultIpam) -> None:
    ipam.request_pool(req("172.17.5.0/24"))
    routes = (net("172.18.0.0/15"), net("0.0.0.0/0"), net("fd00::/8"))
    picked = ipam.request_pool(req(exclude=routes))
    assert str(picked.network) == "172.20.0.0/16"


def test_default_picking_respects_global_space(ipam: DefaultIpam) -> None:
    a = ipam.request_pool(req(address_space=GLOBAL))
    b = ipam.request_pool(req(address_space=GLOBAL, exclude=(net("10.0.1.0/25"),)))
    assert (str(a.network), str(b.network)) == ("10.0.0.0/24", "10.0.2.0/24")
    assert a.pool_id == "global/10.0.0.0/24"


def test_configured_default_pools() -> None:
    ipam = DefaultIpam(
        local_pools=[parse_default_pools("base=10.10.0.0/16,size=24"),
                     DefaultPool(net("fd00:1::/48"), 64)],
        global_pools=[],
    )
    assert str(ipam.request_pool(req()).network) == "10.10.0.0/24"
    assert str(ipam.request_pool(req()).network) == "10.10.1.0/24"
    assert str(ipam.request_pool(req(v6=True)).network) == "fd00:1::/64"
    with pytest.raises(Unavailable, match="no default IPv4 address pool"):
        ipam.request_pool(req(address_space=GLOBAL))


def test_v6_without_pool_or_defaults_is_unavailable(ipam: DefaultIpam) -> None:
    with pytest.raises(Unavailable, match="IPv6.*specify a subnet"):
        ipam.request_pool(req(v6=True))


def test_invalid_default_pool_is_refused() -> None:
    with pytest.raises(InvalidParameter, match="10.0.0.0/16"):
        DefaultIpam(local_pools=[DefaultPool(net("10.0.0.0/16"), 8)])


def test_overlap_within_space_conflicts_naming_both(ipam: DefaultIpam) -> None:
    ipam.request_pool(req("10.1.0.0/16"))
    with pytest.raises(Conflict, match=r"10\.1\.2\.0/24.*10\.1\.0\.0/16"):
        ipam.request_pool(req("10.1.2.0/24"))
    with pytest.raises(Conflict):
        ipam.request_pool(req("10.0.0.0/8"))
    with pytest.raises(Conflict):
        ipam.request_pool(req("10.1.0.0/16", sub_pool=net("10.1.1.0/24")))


def test_spaces_are_independent(ipam: DefaultIpam) -> None:
    a = ipam.request_pool(req("10.1.0.0/16"))
    b = ipam.request_pool(req("10.1.0.0/16", address_space=GLOBAL))
    assert (a.pool_id, b.pool_id) == ("local/10.1.0.0/16", "global/10.1.0.0/16")


def test_families_do_not_overlap(ipam: DefaultIpam) -> None:
    ipam.request_pool(req("10.1.0.0/16"))
    ipam.request_pool(req("::/64"))


def test_release_pool_then_reuse(ipam: DefaultIpam) -> None:
    pool = ipam.request_pool(req("10.1.0.0/24"))
    ipam.request_address(pool.pool_id)
    ipam.release_pool(pool.pool_id)
    ipam.release_pool(pool.pool_id)  # unknown ids are ignored
    again = ipam.request_pool(req("10.1.0.0/24"))
    assert ipam.request_address(again.pool_id) == ip("10.1.0.1")
    first = ipam.request_pool(req())
    ipam.release_pool(first.pool_id)
    assert ipam.request_pool(req()).network == first.network


def test_unknown_space_and_family_mismatch(ipam: DefaultIpam) -> None:
    with pytest.raises(InvalidParameter, match="swarm"):
        ipam.request_pool(req(address_space="swarm"))
    with pytest.raises(InvalidParameter, match="10.0.0.0/24"):
        ipam.request_pool(req("10.0.0.0/24", v6=True))


def test_unknown_pool_id(ipam: DefaultIpam) -> None:
    with pytest.raises(NotFound, match="local/1.2.3.0/24"):
        ipam.request_address("local/1.2.3.0/24")
    with pytest.raises(NotFound):
        ipam.release_address("local/1.2.3.0/24", ip("1.2.3.4"))


# -- sub-pools and aux addresses ---------------------------------------------


def test_sub_pool_id_and_dynamic_range(ipam: DefaultIpam) -> None:
    pool = ipam.request_pool(req("10.2.0.0/16", sub_pool=net("10.2.5.0/30")))
    assert pool.pool_id == "local/10.2.0.0/16/10.2.5.0/30"
    assert pool.network == net("10.2.0.0/16")
    got = [ipam.request_address(pool.pool_id) for _ in range(4)]
    assert got == [ip(f"10.2.5.{i}") for i in range(4)]
    with pytest.raises(Unavailable, match="no available addresses in pool 10.2.0.0/16"):
        ipam.request_address(pool.pool_id)
    # static addresses anywhere in the subnet, the gateway from the pool
    assert ipam.request_address(pool.pool_id, ip("10.2.200.7")) == ip("10.2.200.7")
    assert ipam.request_address(pool.pool_id, gateway=True) == ip("10.2.0.1")


def test_sub_pool_outside_pool(ipam: DefaultIpam) -> None:
    with pytest.raises(InvalidParameter, match=r"10\.3\.0\.0/24.*10\.2\.0\.0/16"):
        ipam.request_pool(req("10.2.0.0/16", sub_pool=net("10.3.0.0/24")))
    with pytest.raises(InvalidParameter):
        ipam.request_pool(req(sub_pool=net("172.17.1.0/24")))


def test_aux_addresses_are_reserved(ipam: DefaultIpam) -> None:
    pool = ipam.request_pool(req("10.4.0.0/29", aux_addresses=(ip("10.4.0.1"), ip("10.4.0.3"))))
    got = [ipam.request_address(pool.pool_id) for _ in range(4)]
    assert got == [ip("10.4.0.2"), ip("10.4.0.4"), ip("10.4.0.5"), ip("10.4.0.6")]
    with pytest.raises(Conflict, match="10.4.0.3 is already in use"):
        ipam.request_address(pool.pool_id, ip("10.4.0.3"))
    ipam.release_address(pool.pool_id, ip("10.4.0.3"))  # reserved: ignored
    ipam.release_address(pool.pool_id, ip("10.4.0.4"))
    assert ipam.request_address(pool.pool_id) == ip("10.4.0.4")


def test_aux_address_outside_pool(ipam: DefaultIpam) -> None:
    with pytest.raises(InvalidParameter, match=r"10\.9\.9\.9.*10\.4\.0\.0/29"):
        ipam.request_pool(req("10.4.0.0/29", aux_addresses=(ip("10.9.9.9"),)))
    with pytest.raises(InvalidParameter, match="0.0.0.5"):
        ipam.request_pool(req("::/64", aux_addresses=(ip("0.0.0.5"),)))


# -- reserved addresses ------------------------------------------------------


def test_v4_network_and_broadcast_reserved(ipam: DefaultIpam) -> None:
    pool = ipam.request_pool(req("10.5.0.0/30"))
    assert [ipam.request_address(pool.pool_id) for _ in range(2)] == [
        ip("10.5.0.1"), ip("10.5.0.2")]
    with pytest.raises(Unavailable):
        ipam.request_address(pool.pool_id)
    with pytest.raises(InvalidParameter, match="10.5.0.0 is the network address"):
        ipam.request_address(pool.pool_id, ip("10.5.0.0"))
    with pytest.raises(InvalidParameter, match="10.5.0.3 is the broadcast address"):
        ipam.request_address(pool.pool_id, ip("10.5.0.3"))
    ipam.release_address(pool.pool_id, ip("10.5.0.0"))  # never freed
    with pytest.raises(Unavailable):
        ipam.request_address(pool.pool_id)


@pytest.mark.parametrize(
    ("cidr", "expected"),
    [
        ("10.6.0.0/31", ["10.6.0.0", "10.6.0.1"]),
        ("10.6.0.7/32", ["10.6.0.7"]),
        ("fd00::/127", ["fd00::", "fd00::1"]),
        ("fd00::9/128", ["fd00::9"]),
    ],
)
def test_point_to_point_pools_use_every_address(
    ipam: DefaultIpam, cidr: str, expected: list[str]
) -> None:
    pool = ipam.request_pool(req(cidr))
    assert [ipam.request_address(pool.pool_id) for _ in expected] == [ip(e) for e in expected]
    with pytest.raises(Unavailable):
        ipam.request_address(pool.pool_id)


def test_v6_64_reserves_only_subnet_router_anycast(ipam: DefaultIpam) -> None:
    pool = ipam.request_pool(req("fd00:1:2:3::/64"))
    assert ipam.request_address(pool.pool_id, gateway=True) == ip("fd00:1:2:3::1")
    assert ipam.request_address(pool.pool_id) == ip("fd00:1:2:3::2")
    last = ip("fd00:1:2:3:ffff:ffff:ffff:ffff")
    assert ipam.request_address(pool.pool_id, last) == last
    with pytest.raises(InvalidParameter, match="fd00:1:2:3:: is the network address"):
        ipam.request_address(pool.pool_id, ip("fd00:1:2:3::"))


def test_v6_48_and_small_v6_addresses_stay_v6(ipam: DefaultIpam) -> None:
    big = ipam.request_pool(req("fd00:abcd::/48", sub_pool=net("fd00:abcd:0:7::/64")))
    assert ipam.request_address(big.pool_id) == ip("fd00:abcd:0:7::")
    small = ipam.request_pool(req("::/120"))
    got = ipam.request_address(small.pool_id)
    assert got == ipaddress.IPv6Address("::1") and got.version == 6


# -- preferred, gateway, serial ----------------------------------------------


def test_preferred_rules(ipam: DefaultIpam) -> None:
    pool = ipam.request_pool(req("10.7.0.0/24", sub_pool=net("10.7.0.128/25")))
    assert ipam.request_address(pool.pool_id, ip("10.7.0.9")) == ip("10.7.0.9")
    with pytest.raises(Conflict, match="address 10.7.0.9 is already in use"):
        ipam.request_address(pool.pool_id, ip("10.7.0.9"))
    with pytest.raises(InvalidParameter, match=r"10\.8\.0\.1.*10\.7\.0\.0/24"):
        ipam.request_address(pool.pool_id, ip("10.8.0.1"))
    with pytest.raises(InvalidParameter, match="fd00::1"):
        ipam.request_address(pool.pool_id, ip("fd00::1"))
    ipam.release_address(pool.pool_id, ip("10.7.0.9"))
    assert ipam.request_address(pool.pool_id, ip("10.7.0.9")) == ip("10.7.0.9")


def test_release_outside_pool_and_free_address(ipam: DefaultIpam) -> None:
    pool = ipam.request_pool(req("10.7.0.0/24"))
    ipam.release_address(pool.pool_id, ip("10.7.0.77"))  # free: no-op
    with pytest.raises(InvalidParameter, match="10.9.0.1"):
        ipam.release_address(pool.pool_id, ip("10.9.0.1"))


def test_gateway_is_first_free_and_does_not_move_cursor(ipam: DefaultIpam) -> None:
    pool = ipam.request_pool(req("10.8.0.0/24"))
    assert ipam.request_address(pool.pool_id) == ip("10.8.0.1")
    assert ipam.request_address(pool.pool_id, gateway=True) == ip("10.8.0.2")
    assert ipam.request_address(pool.pool_id) == ip("10.8.0.3")
    ipam.release_address(pool.pool_id, ip("10.8.0.1"))
    assert ipam.request_address(pool.pool_id, gateway=True) == ip("10.8.0.1")
    assert ipam.request_address(pool.pool_id, ip("10.8.0.1") + 100, gateway=True) == ip(
        "10.8.0.101")


def test_serial_released_address_not_returned_next(ipam: DefaultIpam) -> None:
    pool = ipam.request_pool(req("10.9.0.0/29"))
    a, b, c = (ipam.request_address(pool.pool_id) for _ in range(3))
    ipam.release_address(pool.pool_id, b)
    assert ipam.request_address(pool.pool_id) == ip("10.9.0.4")
    assert ipam.request_address(pool.pool_id) == ip("10.9.0.5")
    assert ipam.request_address(pool.pool_id) == ip("10.9.0.6")
    # wrapped around: only now does the released one come back
    assert ipam.request_address(pool.pool_id) == b
    with pytest.raises(Unavailable):
        ipam.request_address(pool.pool_id)
    assert {a, c} == {ip("10.9.0.1"), ip("10.9.0.3")}


def test_exhaustion_then_release(ipam: DefaultIpam) -> None:
    pool = ipam.request_pool(req("10.10.0.0/24"))
    got = {ipam.request_address(pool.pool_id) for _ in range(254)}
    assert len(got) == 254
    with pytest.raises(Unavailable, match="no available addresses in pool 10.10.0.0/24"):
        ipam.request_address(pool.pool_id)
    ipam.release_address(pool.pool_id, ip("10.10.0.200"))
    assert ipam.request_address(pool.pool_id) == ip("10.10.0.200")


def test_dense_pool_finds_the_holes() -> None:
    """A /14 filled up except a few holes: each search crosses long full runs."""
    ipam = DefaultIpam()
    pool = ipam.request_pool(req("10.0.0.0/14"))
    size = (1 << 18) - 2
    for _ in range(size):
        ipam.request_address(pool.pool_id)
    holes = [ip("10.3.255.254"), ip("10.0.0.1"), ip("10.1.128.0"), ip("10.2.0.63")]
    for hole in holes:
        ipam.release_address(pool.pool_id, hole)
    found = [ipam.request_address(pool.pool_id) for _ in holes]
    assert found == sorted(holes)
    with pytest.raises(Unavailable):
        ipam.request_address(pool.pool_id)


def test_address_set_skips_full_blocks_exactly() -> None:
    s = AddressSet(0, 1 << 20, 0, 1 << 20)
    for a in range(0, 4096 * 3 + 5):
        s.take(a)
    assert s.next_free(0, 1 << 20) == 4096 * 3 + 5
    assert s.next_free(0, 4096 * 3 + 4) is None
    s.give_back(4096 + 64 * 7 + 3)
    assert s.next_free(0, 1 << 20) == 4096 + 64 * 7 + 3
    assert s.next_free(4096 + 64 * 7 + 4, 1 << 20) == 4096 * 3 + 5
    assert len(s) == 4096 * 3 + 4


# -- helpers -----------------------------------------------------------------


def test_overlaps() -> None:
    assert overlaps(net("10.0.0.0/8"), net("10.1.0.0/16"))
    assert overlaps(net("10.1.0.0/16"), net("10.0.0.0/8"))
    assert not overlaps(net("10.0.0.0/24"), net("10.0.1.0/24"))
    assert overlaps(net("fd00::/64"), net("fd00::1/128"))
    assert not overlaps(net("0.0.0.0/0"), net("::/0"))


def test_parse_default_pools() -> None:
    assert parse_default_pools("base=10.10.0.0/16,size=24") == DefaultPool(net("10.10.0.0/16"), 24)
    assert parse_default_pools(" size=64 , base=fd00::/48") == DefaultPool(net("fd00::/48"), 64)


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "junk",
        "base=10.10.0.0/16",
        "size=24",
        "base=10.10.0.0/16,size=24,extra=1",
        "base=10.10.0.0/16,base=10.11.0.0/16",
        "base=10.10.0.1/16,size=24",
        "base=banana,size=24",
        "base=10.10.0.0/16,size=x",
        "base=10.10.0.0/16,size=8",
        "base=10.10.0.0/16,size=33",
        "base=10.10.0.0/16,size=-1",
    ],
)
def test_parse_default_pools_rejects_junk(spec: str) -> None:
    with pytest.raises(InvalidParameter):
        parse_default_pools(spec)
