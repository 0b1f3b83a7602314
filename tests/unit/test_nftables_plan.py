"""Golden batches of the nftables builders (no root, no kernel)."""

from __future__ import annotations

import pytest

from netstack.endpoint import PortBinding
from netstack.errors import InvalidParameter
from netstack.kernel.firewall import Firewall, NetworkRules, PortRules
from netstack.kernel.nftables import (
    Existing, NftablesFirewall, add_network_batch, chain_rules, hairpin_chain, parse_listing,
    plan_network_elements, plan_port_elements, remove_batch, remove_network_batch, setup_batch,
    sync_batch, teardown_batch,
)

NET = NetworkRules("n1", "br-t", ("10.77.0.0/24",), ("fd77::/64",))
HP = hairpin_chain("br-t")


def els(elements) -> list[str]:
    return [f"{e.set}: {e.render()}" for e in elements]


def ports(*b: PortBinding, v6: str = "fd77::2") -> PortRules:
    return PortRules("e1", "br-t", "10.77.0.2/24", v6, b)


def test_static_rules_v4_golden() -> None:
    assert [f"{c}: {r}" for c, r in chain_rules(4)] == [
        "forward: jump user",
        "forward: oifname @bridges ct state established,related accept",
        "forward: iifname . oifname vmap @icc",
        "forward: iifname @internal drop",
        "forward: oifname @internal drop",
        "forward: oifname . ip daddr . meta l4proto . th dport @published accept",
        "forward: oifname @bridges drop",
        "forward: iifname @bridges accept",
        "prerouting: ip daddr != 127.0.0.0/8 fib daddr type local jump ports",
        "output: fib daddr type local jump ports",
        "ports: meta l4proto { tcp, udp, sctp } dnat to ip daddr . meta l4proto . th dport map @dnat_ip",
        "ports: meta l4proto { tcp, udp, sctp } dnat to meta l4proto . th dport map @dnat_any",
        "postrouting: ct status dnat oifname vmap @hairpin",
        "postrouting: oifname @bridges fib saddr type local masquerade",
        "postrouting: iifname . oifname @same return",
        "postrouting: iifname @masq masquerade",
    ]


def test_static_rules_v6_never_dnat_loopback() -> None:
    rules = dict((c, r) for c, r in chain_rules(6) if c in ("prerouting", "output"))
    assert rules == {"prerouting": "ip6 daddr != ::1 fib daddr type local jump ports",
                     "output": "ip6 daddr != ::1 fib daddr type local jump ports"}
    assert "oifname . ip6 daddr . meta l4proto . th dport @published accept" in [r for _, r in chain_rules(6)]


def test_setup_never_flushes_user_and_declares_hash_sets_only() -> None:
    b = setup_batch((4, 6))
    assert "add chain ip pynet user\n" in b and "add chain ip6 pynet user\n" in b
    assert "flush chain ip pynet user" not in b and "flush chain ip6 pynet user" not in b
    assert "interval" not in b  # interval sets make libnftables read every element
    assert "add chain ip pynet forward { type filter hook forward priority 0 ; policy accept ; }" in b
    assert "add chain ip pynet postrouting { type nat hook postrouting priority 100 ; policy accept ; }" in b


def test_network_default_golden() -> None:
    assert add_network_batch(NET, (4,)).splitlines() == [
        f"add chain ip pynet {HP}",
        f"flush chain ip pynet {HP}",
        f"add rule ip pynet {HP} ip saddr {{ 10.77.0.0/24 }} masquerade",
        'add element ip pynet bridges { "br-t" }',
        'add element ip pynet same { "br-t" . "br-t" }',
        'add element ip pynet icc { "br-t" . "br-t" : accept }',
        f'add element ip pynet hairpin {{ "br-t" : jump {HP} }}',
        'add element ip pynet masq { "br-t" }',
    ]
    assert [l for l in add_network_batch(NET, (6,)).splitlines() if "saddr" in l] == [
        f"add rule ip6 pynet {HP} ip6 saddr {{ fd77::/64 }} masquerade"]


def test_network_remove_golden() -> None:
    got = remove_network_batch(NetworkRules("n", "br-t", ("10.77.0.0/24",), (), icc=False), (4, 6)).splitlines()
    assert got[0] == f"add chain ip pynet {HP}"  # the hairpin element's target must exist
    assert 'delete element ip pynet icc { "br-t" . "br-t" : drop }' in got
    assert got[-2:] == [f"flush chain ip pynet {HP}", f"delete chain ip pynet {HP}"]
    assert not [l for l in got if " ip6 " in l]  # no v6 subnet, nothing in ip6


@pytest.mark.parametrize("internal", [False, True])
@pytest.mark.parametrize("icc", [False, True])
@pytest.mark.parametrize("masq", [False, True])
def test_network_option_matrix(internal: bool, icc: bool, masq: bool) -> None:
    nr = NetworkRules("n", "br-x", ("10.1.0.0/16", "10.2.0.5/24"), (), internal=internal, icc=icc, masquerade=masq)
    got = els(plan_network_elements(nr, 4))
    assert got[:2] == ['bridges: "br-x"', 'same: "br-x" . "br-x"']
    assert f'icc: "br-x" . "br-x" : {"accept" if icc else "drop"}' in got
    assert ('internal: "br-x"' in got) is internal
    assert ('masq: "br-x"' in got) is (not internal and masq)
    assert plan_network_elements(nr, 6) == ()
    assert f"ip saddr {{ 10.1.0.0/16, 10.2.0.0/24 }} masquerade" in add_network_batch(nr, (4, 6))


def test_ports_single_golden() -> None:
    pr = ports(PortBinding("tcp", 80, 8080), PortBinding("udp", 53, 5353))
    assert els(plan_port_elements(pr, 4)) == [
        "dnat_any: tcp . 8080 : 10.77.0.2 . 80",
        "dnat_any: udp . 5353 : 10.77.0.2 . 53",
        'published: "br-t" . 10.77.0.2 . tcp . 80',
        'published: "br-t" . 10.77.0.2 . udp . 53',
    ]
    assert els(plan_port_elements(pr, 6))[0] == "dnat_any: tcp . 8080 : fd77::2 . 80"
    assert NftablesFirewall()._port_elements(ports(PortBinding("tcp", 80, 8080), v6="")) == list(
        plan_port_elements(ports(PortBinding("tcp", 80, 8080)), 4))


def test_ports_batch_is_two_elements_per_port() -> None:
    from netstack.kernel.nftables import add_batch
    b = add_batch(plan_port_elements(ports(PortBinding("tcp", 80, 8080), v6=""), 4))
    assert b.splitlines() == [
        "add element ip pynet dnat_any { tcp . 8080 : 10.77.0.2 . 80 }",
        'add element ip pynet published { "br-t" . 10.77.0.2 . tcp . 80 }',
    ]
    many = ports(*[PortBinding("tcp", 10000 + i, 20000 + i) for i in range(500)], v6="")
    assert len(plan_port_elements(many, 4)) == 1000


def test_ports_ranges() -> None:
    same = PortBinding("sctp", 9000, 9000, container_port_end=9001, host_port_end=9001)
    shifted = PortBinding("tcp", 80, 8000, container_port_end=90, host_port_end=8010)
    many_to_one = PortBinding("udp", 53, 7000, host_port_end=7002)
    got = els(plan_port_elements(ports(same, shifted, many_to_one), 4))
    dnat = [g for g in got if g.startswith("dnat")]
    assert dnat[:2] == ["dnat_any: sctp . 9000 : 10.77.0.2 . 9000", "dnat_any: sctp . 9001 : 10.77.0.2 . 9001"]
    assert dnat[2] == "dnat_any: tcp . 8000 : 10.77.0.2 . 80" and dnat[12] == "dnat_any: tcp . 8010 : 10.77.0.2 . 90"
    assert dnat[13:] == ["dnat_any: udp . 7000 : 10.77.0.2 . 53", "dnat_any: udp . 7001 : 10.77.0.2 . 53",
                         "dnat_any: udp . 7002 : 10.77.0.2 . 53"]
    pub = [g for g in got if g.startswith("published")]
    assert len(pub) == 2 + 11 + 1 and 'published: "br-t" . 10.77.0.2 . tcp . 90' in pub


def test_ports_host_ip() -> None:
    pr = ports(PortBinding("tcp", 80, 8080, host_ip="127.0.0.1"), PortBinding("tcp", 81, 8081, host_ip="::1"),
               PortBinding("tcp", 82, 8082, host_ip="fd00::9"), PortBinding("tcp", 83, 8083, host_ip="0.0.0.0"),
               PortBinding("tcp", 84, 8084, host_ip="::"))
    v4 = [g for g in els(plan_port_elements(pr, 4)) if g.startswith("dnat")]
    assert v4 == ["dnat_ip: 127.0.0.1 . tcp . 8080 : 10.77.0.2 . 80", "dnat_any: tcp . 8083 : 10.77.0.2 . 83"]
    v6 = [g for g in els(plan_port_elements(pr, 6)) if g.startswith("dnat")]
    assert v6 == ["dnat_ip: fd00::9 . tcp . 8082 : fd77::2 . 82", "dnat_any: tcp . 8084 : fd77::2 . 84"]
    assert plan_port_elements(ports(PortBinding("tcp", 80, 8080), v6=""), 6) == ()


def test_duplicate_keys_keep_first() -> None:
    pr = ports(PortBinding("tcp", 80, 8080), PortBinding("tcp", 81, 8080), PortBinding("tcp", 80, 8081))
    got = els(plan_port_elements(pr, 4))
    assert "dnat_any: tcp . 8080 : 10.77.0.2 . 80" in got and "dnat_any: tcp . 8080 : 10.77.0.2 . 81" not in got
    assert got.count('published: "br-t" . 10.77.0.2 . tcp . 80') == 1


def test_remove_is_add_then_delete() -> None:
    b = remove_batch(plan_port_elements(ports(PortBinding("tcp", 80, 8080), v6=""), 4)).splitlines()
    assert [l.split()[0] for l in b] == ["add", "add", "delete", "delete"]


def test_sync_keeps_user_deletes_orphans_and_dedupes() -> None:
    ex = {4: Existing(("user", "forward", "old"), (("set", "bridges"), ("map", "oldmap")))}
    other = PortRules("e2", "br-t", "10.77.0.3", "", (PortBinding("tcp", 81, 8080),))
    b = sync_batch((4,), ex, [NET], [ports(PortBinding("tcp", 80, 8080)), other]).splitlines()
    assert "flush chain ip pynet user" not in b and "delete chain ip pynet user" not in b
    assert b[:6] == ["flush chain ip pynet forward", "flush chain ip pynet old", "delete set ip pynet bridges",
                     "delete map ip pynet oldmap", "delete chain ip pynet forward", "delete chain ip pynet old"]
    assert "add element ip pynet dnat_any { tcp . 8080 : 10.77.0.2 . 80 }" in b  # first wins
    assert f"add rule ip pynet {HP} ip saddr {{ 10.77.0.0/24 }} masquerade" in b
    assert not [l for l in b if " ip6 " in l]


def test_teardown_golden() -> None:
    assert teardown_batch((4, 6)).splitlines() == [
        "add table ip pynet", "delete table ip pynet", "add table ip6 pynet", "delete table ip6 pynet",
        "add table ip pynet-dns", "delete table ip pynet-dns"]


def test_parse_listing() -> None:
    js = ('{"nftables": [{"map": {"family": "ip", "name": "dnat_any", "table": "pynet", "elem": '
          '[[{"concat": ["tcp", 8080]}, {"concat": ["10.77.0.2", 80]}]]}}, {"map": {"name": "hairpin", "elem": '
          '[["br-t", {"jump": {"target": "hp-1"}}]]}}, {"set": {"name": "bridges", "elem": ["br-t"]}}]}')
    text = "table ip pynet {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n" \
           "\t\tjump user\n\t}\n}\n"
    assert parse_listing(4, js, text) == ("ip forward: jump user", "ip @dnat_any: tcp . 8080 : 10.77.0.2 . 80",
                                          "ip @hairpin: br-t : jump hp-1", "ip @bridges: br-t")
    e = plan_port_elements(ports(PortBinding("tcp", 80, 8080)), 4)[0]
    assert e.listing() == "ip @dnat_any: tcp . 8080 : 10.77.0.2 . 80"


@pytest.mark.parametrize("nr", [
    NetworkRules("n", "this-name-is-too-long", ("10.0.0.0/24",), ()),
    NetworkRules("n", "br 0", ("10.0.0.0/24",), ()),
    NetworkRules("n", 'br"0', ("10.0.0.0/24",), ()),
    NetworkRules("n", "br0", ("10.0.0.0/33",), ()),
    NetworkRules("n", "br0", (), ("10.0.0.0/24",)),
    NetworkRules("", "br0", (), ()),
])
def test_invalid_network_refused_before_kernel(nr: NetworkRules) -> None:
    with pytest.raises(InvalidParameter):
        NftablesFirewall(netns="/nonexistent").add_network(nr)
    with pytest.raises(InvalidParameter):
        NftablesFirewall(netns="/nonexistent").sync([nr], [])


@pytest.mark.parametrize("b", [
    PortBinding("icmp", 80, 80), PortBinding("tcp", 0, 80), PortBinding("tcp", 80, 70000),
    PortBinding("tcp", 80, 8080, host_ip="1.2.3"), PortBinding("tcp", 80, 8000, container_port_end=85, host_port_end=8010),
])
def test_invalid_binding_refused_before_kernel(b: PortBinding) -> None:
    with pytest.raises(InvalidParameter):
        NftablesFirewall(netns="/nonexistent").add_ports(ports(b))
    with pytest.raises(InvalidParameter):
        NftablesFirewall(netns="/nonexistent").sandbox_dns_redirect(0, 53)


def test_satisfies_protocol() -> None:
    assert isinstance(NftablesFirewall(), Firewall)
    assert NftablesFirewall().name == "nftables"
