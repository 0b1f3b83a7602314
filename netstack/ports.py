"""Port publishing specs: parse `-p [HOSTIP:][HOSTPORT:]CPORT[/PROTO]`,
pick ephemeral host ports, and find clashes.  Pure logic."""

from __future__ import annotations

import ipaddress
from typing import Iterable

from netstack.endpoint import PortBinding
from netstack.errors import Conflict, InvalidParameter, Unavailable

PROTOCOLS = ("tcp", "udp", "sctp")


def _port_range(text: str, spec: str) -> tuple[int, int]:
    lo_s, sep, hi_s = text.partition("-")
    try:
        lo = int(lo_s)
        hi = int(hi_s) if sep else 0
    except ValueError:
        raise InvalidParameter(f"invalid port {text!r} in {spec!r}") from None
    for p in (lo, hi) if sep else (lo,):
        if not 1 <= p <= 65535:
            raise InvalidParameter(f"invalid port {p} in {spec!r}: must be 1-65535")
    if sep and hi < lo:
        raise InvalidParameter(f"invalid port range {text!r} in {spec!r}: end before start")
    if sep and hi == lo:
        hi = 0
    return lo, hi


def parse(spec: str) -> PortBinding:
    """One -p spec.  Host port 0 means "pick one at publish time"."""
    body, _, proto = spec.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOCOLS:
        raise InvalidParameter(f"invalid protocol {proto!r} in {spec!r}: use tcp, udp or sctp")
    host_ip = ""
    if body.startswith("["):  # [::1]:8080:80
        end = body.find("]")
        if end < 0:
            raise InvalidParameter(f"invalid port spec {spec!r}: unclosed '['")
        host_ip, body = body[1:end], body[end + 2:]
        parts = body.split(":")
    else:
        parts = body.split(":")
        if len(parts) == 3:
            host_ip = parts.pop(0)
    if len(parts) > 2 or not parts[-1]:
        raise InvalidParameter(f"invalid port spec {spec!r}: expected [HOSTIP:][HOSTPORT:]PORT[/PROTO]")
    if host_ip:
        try:
            host_ip = str(ipaddress.ip_address(host_ip))
        except ValueError:
            raise InvalidParameter(f"invalid host IP {host_ip!r} in {spec!r}") from None
    cport, cend = _port_range(parts[-1], spec)
    hport, hend = (0, 0)
    if len(parts) == 2 and parts[0]:
        hport, hend = _port_range(parts[0], spec)
    if hport and (hend - hport if hend else 0) != (cend - cport if cend else 0):
        raise InvalidParameter(f"invalid port spec {spec!r}: host and container ranges differ in size")
    if not hport and cend:
        raise InvalidParameter(f"invalid port spec {spec!r}: a container port range needs a host port range")
    return PortBinding(proto=proto, container_port=cport, host_port=hport, host_ip=host_ip,
                       container_port_end=cend, host_port_end=hend)


def _span(b: PortBinding) -> range:
    return range(b.host_port, (b.host_port_end or b.host_port) + 1)


def clashes(a: PortBinding, b: PortBinding) -> bool:
    if a.proto != b.proto:
        return False
    if a.host_ip and b.host_ip and a.host_ip != b.host_ip:
        return False
    ra, rb = _span(a), _span(b)
    return ra.start < rb.stop and rb.start < ra.stop


def check_clashes(wanted: list[PortBinding], taken: Iterable[PortBinding]) -> None:
    taken = list(taken)
    for i, w in enumerate(wanted):
        for t in taken + wanted[:i]:
            if clashes(w, t):
                raise Conflict(
                    f"port {w.host_ip or '0.0.0.0'}:{w.host_port}/{w.proto} is already allocated"
                    f" (by {t.spec()})"
                )


def local_port_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 49153, 65535


def assign_host_ports(wanted: list[PortBinding], taken: Iterable[PortBinding]) -> list[PortBinding]:
    """Give every binding without a host port a free ephemeral one."""
    taken = list(taken)
    lo, hi = local_port_range()
    out: list[PortBinding] = []
    for w in wanted:
        if w.host_port:
            out.append(w)
            continue
        for port in range(lo, hi + 1):
            cand = PortBinding(w.proto, w.container_port, port, w.host_ip)
            if not any(clashes(cand, t) for t in taken + out):
                out.append(cand)
                break
        else:
            raise Unavailable(f"no free host port for {w.container_port}/{w.proto} in {lo}-{hi}")
    return out
