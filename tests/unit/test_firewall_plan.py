"""Golden rule sets of the pure firewall planner (no root, no kernel)."""

from __future__ import annotations

import pytest

from netstack.endpoint import PortBinding
from netstack.errors import InvalidParameter
from netstack.kernel.firewall import (
    Firewall, IptablesFirewall, NetworkRules, NoFirewall, PortRules, Rule,
    plan_all, plan_base, plan_dns_redirect, plan_network, plan_ports,
)


def lines(rules: tuple[Rule, ...], table: str | None = None) -> list[str]:
    return [r.render() for r in rules if table is None or r.table == table]


NET = NetworkRules("n1", "br-t", ("10.77.0.0/24",), ("fd77::/64",))


def test_base_v4_golden() -> None:
    assert lines(plan_base(4)) == [
        "-A FORWARD -j PYNET-USER",
        "-A FORWARD -j PYNET-FORWARD",
        "-A PYNET-FORWARD -j PYNET-CT",
        "-A PYNET-FORWARD -j PYNET-INTERNAL",
        "-A PYNET-FORWARD -j PYNET-INBOUND",
        "-A PYNET-FORWARD -j PYNET-OUTBOUND",
        "-A PREROUTING ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j PYNET-DNAT",
        "-A OUTPUT -m addrtype --dst-type LOCAL -j PYNET-DNAT",
        "-A POSTROUTING -j PYNET-POSTROUTING",
    ]


def test_base_v6_never_dnats_loopback() -> None:
    nat = lines(plan_base(6), "nat")
    assert nat[:2] == [
        "-A PREROUTING ! -d ::1/128 -m addrtype --dst-type LOCAL -j PYNET-DNAT",
        "-A OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j PYNET-DNAT",
    ]
    assert all(len(r.chain) <= 28 for f in (4, 6) for r in plan_base(f))


def test_network_default_golden() -> None:
    assert lines(plan_network(NET, 4)) == [
        "-A PYNET-CT -o br-t -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A PYNET-INBOUND -i br-t -o br-t -j ACCEPT",
        "-A PYNET-INBOUND -o br-t -j DROP",
        "-A PYNET-OUTBOUND -i br-t ! -o br-t -j ACCEPT",
        "-A PYNET-POSTROUTING -s 10.77.0.0/24 ! -o br-t -j MASQUERADE",
        "-A PYNET-POSTROUTING -o br-t -m addrtype --src-type LOCAL -j MASQUERADE",
        "-A PYNET-POSTROUTING -s 10.77.0.0/24 -o br-t -m conntrack --ctstate DNAT -j MASQUERADE",
    ]
    assert lines(plan_network(NET, 6), "nat")[0] == "-A PYNET-POSTROUTING -s fd77::/64 ! -o br-t -j MASQUERADE"
    assert all(r.family == 6 for r in plan_network(NET, 6))


@pytest.mark.parametrize("internal", [False, True])
@pytest.mark.parametrize("icc", [False, True])
@pytest.mark.parametrize("masq", [False, True])
def test_network_option_matrix(internal: bool, icc: bool, masq: bool) -> None:
    nr = NetworkRules("n", "br-x", ("10.1.0.0/16", "10.2.0.5/24"), (), internal=internal, icc=icc, masquerade=masq)
    got = lines(plan_network(nr, 4))
    assert ("-A PYNET-INBOUND -i br-x -o br-x -j ACCEPT" in got) is icc
    assert ("-A PYNET-INBOUND -i br-x -o br-x -j DROP" in got) is (not icc)
    assert "-A PYNET-INBOUND -o br-x -j DROP" in got
    assert ("-A PYNET-INTERNAL -i br-x ! -o br-x -j DROP" in got) is internal
    assert ("-A PYNET-INTERNAL ! -i br-x -o br-x -j DROP" in got) is internal
    assert ("-A PYNET-OUTBOUND -i br-x ! -o br-x -j ACCEPT" in got) is (not internal)
    outward = [l for l in got if "! -o br-x -j MASQUERADE" in l]
    assert outward == ([] if internal or not masq else [
        "-A PYNET-POSTROUTING -s 10.1.0.0/16 ! -o br-x -j MASQUERADE",
        "-A PYNET-POSTROUTING -s 10.2.0.0/24 ! -o br-x -j MASQUERADE",  # normalised to the network
    ])
    assert "-A PYNET-POSTROUTING -s 10.2.0.0/24 -o br-x -m conntrack --ctstate DNAT -j MASQUERADE" in got
    # accept ICC rule comes before the isolation DROP
    inbound = [l for l in got if l.startswith("-A PYNET-INBOUND")]
    assert inbound[-1] == "-A PYNET-INBOUND -o br-x -j DROP"
    assert plan_network(nr, 6) == ()  # no v6 subnet, no v6 rules


def ports(*b: PortBinding, v6: str = "fd77::2") -> PortRules:
    return PortRules("e1", "br-t", "10.77.0.2/24", v6, b)


def test_ports_single_golden() -> None:
    got = plan_ports(ports(PortBinding("tcp", 80, 8080), PortBinding("udp", 53, 5353)), 4)
    assert lines(got) == [
        "-A PYNET-DNAT -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.77.0.2:80",
        "-A PYNET-DNAT -p udp -m udp --dport 5353 -j DNAT --to-destination 10.77.0.2:53",
        "-A PYNET-INBOUND -d 10.77.0.2/32 ! -i br-t -o br-t -p tcp -m tcp --dport 80 -j ACCEPT",
        "-A PYNET-INBOUND -d 10.77.0.2/32 ! -i br-t -o br-t -p udp -m udp --dport 53 -j ACCEPT",
    ]
    assert lines(plan_ports(ports(PortBinding("tcp", 80, 8080)), 6)) == [
        "-A PYNET-DNAT -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd77::2]:80",
        "-A PYNET-INBOUND -d fd77::2/128 ! -i br-t -o br-t -p tcp -m tcp --dport 80 -j ACCEPT",
    ]


def test_ports_ranges() -> None:
    same = PortBinding("sctp", 9000, 9000, container_port_end=9005, host_port_end=9005)
    shifted = PortBinding("tcp", 80, 8000, container_port_end=90, host_port_end=8010)
    many_to_one = PortBinding("udp", 53, 7000, host_port_end=7002)
    got = lines(plan_ports(ports(same, shifted, many_to_one), 4), "nat")
    assert got == [
        "-A PYNET-DNAT -p sctp -m sctp --dport 9000:9005 -j DNAT --to-destination 10.77.0.2",
        "-A PYNET-DNAT -p tcp -m tcp --dport 8000:8010 -j DNAT --to-destination 10.77.0.2:80-90/8000",
        "-A PYNET-DNAT -p udp -m udp --dport 7000:7002 -j DNAT --to-destination 10.77.0.2:53",
    ]
    fallback = lines(plan_ports(ports(shifted), 4, shifted_portmap=False), "nat")
    assert len(fallback) == 11
    assert fallback[0] == "-A PYNET-DNAT -p tcp -m tcp --dport 8000 -j DNAT --to-destination 10.77.0.2:80"
    assert fallback[-1] == "-A PYNET-DNAT -p tcp -m tcp --dport 8010 -j DNAT --to-destination 10.77.0.2:90"
    assert "-A PYNET-INBOUND -d 10.77.0.2/32 ! -i br-t -o br-t -p tcp -m tcp --dport 80:90 -j ACCEPT" in lines(
        plan_ports(ports(shifted), 4))


def test_ports_host_ip() -> None:
    pr = ports(PortBinding("tcp", 80, 8080, host_ip="127.0.0.1"), PortBinding("tcp", 81, 8081, host_ip="::1"),
               PortBinding("tcp", 82, 8082, host_ip="fd00::9"), PortBinding("tcp", 83, 8083, host_ip="0.0.0.0"))
    v4 = lines(plan_ports(pr, 4), "nat")
    assert v4 == [
        "-A PYNET-DNAT -d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.77.0.2:80",
        "-A PYNET-DNAT -p tcp -m tcp --dport 8083 -j DNAT --to-destination 10.77.0.2:83",
    ]
    v6 = lines(plan_ports(pr, 6), "nat")  # ::1 is never DNATed; v4 host IPs skipped
    assert v6 == ["-A PYNET-DNAT -d fd00::9/128 -p tcp -m tcp --dport 8082 -j DNAT --to-destination [fd77::2]:82"]
    assert plan_ports(ports(PortBinding("tcp", 80, 8080), v6=""), 6) == ()


def test_ports_cost_two_rules_per_port() -> None:
    pr = ports(*[PortBinding("tcp", 10000 + i, 20000 + i) for i in range(500)], v6="")
    assert len(plan_ports(pr, 4)) == 1000


def test_duplicate_container_port_accept_once() -> None:
    pr = ports(PortBinding("tcp", 80, 8080), PortBinding("tcp", 80, 8081))
    assert len([r for r in plan_ports(pr, 4) if r.chain == "PYNET-INBOUND"]) == 1


def test_plan_all_orders_port_accepts_first() -> None:
    rules = plan_all([NET], [ports(PortBinding("tcp", 80, 8080))], 4)
    inbound = [r.render() for r in rules if r.chain == "PYNET-INBOUND"]
    assert inbound[0].startswith("-A PYNET-INBOUND -d 10.77.0.2/32")
    assert inbound[-1] == "-A PYNET-INBOUND -o br-t -j DROP"


def test_dns_redirect_golden() -> None:
    assert lines(plan_dns_redirect(5353, 5354)) == [
        "-A OUTPUT -d 127.0.0.11/32 -j PYNET-DNS",
        "-A PYNET-DNS -d 127.0.0.11/32 -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.11:5353",
        "-A PYNET-DNS -d 127.0.0.11/32 -p tcp -m tcp --dport 53 -j DNAT --to-destination 127.0.0.11:5354",
    ]


@pytest.mark.parametrize("nr", [
    NetworkRules("n", "this-name-is-too-long", ("10.0.0.0/24",), ()),
    NetworkRules("n", "br 0", ("10.0.0.0/24",), ()),
    NetworkRules("n", "br0", ("10.0.0.0/33",), ()),
    NetworkRules("n", "br0", ("fd00::/64",), ()),
    NetworkRules("n", "br0", (), ("10.0.0.0/24",)),
    NetworkRules("", "br0", (), ()),
])
def test_invalid_network(nr: NetworkRules) -> None:
    with pytest.raises(InvalidParameter):
        IptablesFirewall().add_network(nr)  # refused before any kernel access
    with pytest.raises(InvalidParameter):
        NoFirewall().add_network(nr)


@pytest.mark.parametrize("b", [
    PortBinding("icmp", 80, 80), PortBinding("tcp", 0, 80), PortBinding("tcp", 80, 70000),
    PortBinding("tcp", 80, 8080, host_ip="1.2.3"), PortBinding("tcp", 80, 8000, container_port_end=85, host_port_end=8010),
    PortBinding("tcp", 80, 8000, container_port_end=85), PortBinding("tcp", 90, 8000, container_port_end=80, host_port_end=7990),
])
def test_invalid_binding(b: PortBinding) -> None:
    with pytest.raises(InvalidParameter):
        IptablesFirewall().add_ports(ports(b))


def test_invalid_endpoint_address() -> None:
    with pytest.raises(InvalidParameter):
        IptablesFirewall().add_ports(PortRules("e", "br0", "fd00::1", "", ()))


def test_backends_satisfy_protocol() -> None:
    assert isinstance(NoFirewall(), Firewall)
    assert isinstance(IptablesFirewall(), Firewall)
    nf = NoFirewall()
    nf.setup(); nf.add_network(NET); nf.add_ports(ports(PortBinding("tcp", 80, 8080)))
    nf.sync([NET], []); nf.remove_network(NET); nf.teardown()
    assert nf.list_rules() == ()
    with pytest.raises(InvalidParameter):
        nf.sandbox_dns_redirect(0, 53)
