"""Input checks shared by every entry point (API, Python API, plugins).
Pure: each raises InvalidParameter naming the offending value."""

from __future__ import annotations

import ipaddress
import re

from netstack.errors import InvalidParameter
from netstack.requests import SubnetRequest

NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
HOSTNAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,62})(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,62}))*$")
ALIAS_RE = re.compile(r"^[a-zA-Z0-9_]([a-zA-Z0-9_.-]{0,252})$")


def check_name(name: str, what: str = "network") -> None:
    if not name:
        raise InvalidParameter(f"{what} name is required")
    if not NAME_RE.match(name):
        raise InvalidParameter(
            f"invalid {what} name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, up to 128 characters"
        )


def check_hostname(name: str) -> None:
    if name and (len(name) > 253 or not HOSTNAME_RE.match(name)):
        raise InvalidParameter(f"invalid hostname {name!r}")


def check_alias(alias: str) -> None:
    if not ALIAS_RE.match(alias):
        raise InvalidParameter(f"invalid alias {alias!r}")


def parse_subnet(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidParameter(f"invalid subnet {text!r}: not a CIDR") from None
    if str(net) != text and text != net.with_prefixlen and "/" not in text:
        raise InvalidParameter(f"invalid subnet {text!r}: a prefix length is required")
    if net.network_address != ipaddress.ip_interface(text).ip:
        raise InvalidParameter(f"invalid subnet {text!r}: host bits are set (did you mean {net}?)")
    return net


def parse_address(text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InvalidParameter(f"invalid {what} {text!r}: not an IP address") from None


def check_subnet_request(req: SubnetRequest) -> None:
    """Everything of one --subnet group that can be checked without IPAM."""
    if not req.subnet:
        if req.ip_range or req.gateway or req.aux_addresses:
            raise InvalidParameter("--ip-range, --gateway and --aux-address need a --subnet")
        return
    net = parse_subnet(req.subnet)
    if req.ip_range:
        rng = parse_subnet(req.ip_range)
        if rng.version != net.version or not rng.subnet_of(net):  # type: ignore[arg-type]
            raise InvalidParameter(f"ip-range {req.ip_range} is not inside subnet {req.subnet}")
    if req.gateway:
        gw = parse_address(req.gateway, "gateway")
        if gw not in net:
            raise InvalidParameter(f"gateway {req.gateway} is not inside subnet {req.subnet}")
        if net.version == 4 and net.prefixlen < 31 and gw in (net.network_address, net.broadcast_address):
            raise InvalidParameter(f"gateway {req.gateway} is the network or broadcast address of {req.subnet}")
    for name, addr in req.aux_addresses:
        a = parse_address(addr, f"aux address {name}")
        if a not in net:
            raise InvalidParameter(f"aux address {name}={addr} is not inside subnet {req.subnet}")


def parse_bool_option(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise InvalidParameter(f"invalid value {value!r} for option {key}: expected true or false")


def check_known_options(options: dict[str, str], known: tuple[str, ...], driver: str) -> None:
    """Every -o key must be one the driver knows: a typo is an error, not a no-op."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InvalidParameter(f"unknown option {unknown[0]!r} for the {driver} driver (known: {', '.join(known)})")
