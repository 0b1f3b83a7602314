"""resolv.conf: the host's upstreams, and the file a sandbox gets.

As Docker: the sandbox's file names only the embedded resolver, keeps the
host's ``search``/``domain`` and ``options`` lines, and adds ``options
ndots:0`` unless an ndots is already set; the host's nameservers become the
resolver's upstreams, dialled from the daemon's namespace, so a loopback
stub works.  When the host file lists only systemd-resolved's stub
(127.0.0.53), the real servers are read from systemd's own file instead, as
Docker does.
"""

from __future__ import annotations

import ipaddress

__all__ = ["EMBEDDED_ADDRESS", "host_upstreams", "parse_nameservers", "sandbox_resolv_conf"]

EMBEDDED_ADDRESS = "127.0.0.11"
SYSTEMD_STUB = "127.0.0.53"
SYSTEMD_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"


def _lines(text: str) -> list[list[str]]:
    out = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if words:
            out.append(words)
    return out


def parse_nameservers(text: str) -> list[str]:
    """The nameserver addresses of a resolv.conf, in order, without our own
    address (forwarding to ourselves would loop) or unparsable entries."""
    servers = []
    for words in _lines(text):
        if words[0] == "nameserver" and len(words) > 1:
            addr = words[1].split("%", 1)[0]
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                continue
            if addr != EMBEDDED_ADDRESS:
                servers.append(addr)
    return servers


def host_upstreams(path: str = "/etc/resolv.conf",
                   systemd_path: str = SYSTEMD_RESOLV_CONF) -> list[tuple[str, int]]:
    """(address, 53) for every nameserver the host uses; [] if none."""
    try:
        with open(path) as f:
            servers = parse_nameservers(f.read())
    except OSError:
        servers = []
    if servers == [SYSTEMD_STUB]:
        try:
            with open(systemd_path) as f:
                servers = parse_nameservers(f.read()) or servers
        except OSError:
            pass
    return [(s, 53) for s in servers]


def sandbox_resolv_conf(host_resolv_conf_text: str) -> str:
    """The resolv.conf written into a sandbox on a user-defined network."""
    search: list[str] = []
    options: list[str] = []
    for words in _lines(host_resolv_conf_text):
        if words[0] in ("search", "domain"):
            search = words[1:]  # the last one wins, as in the libc stub
        elif words[0] == "options":
            options.extend(words[1:])
    if not any(o.startswith("ndots:") for o in options):
        options.append("ndots:0")
    lines = [f"nameserver {EMBEDDED_ADDRESS}"]
    if search:
        lines.append("search " + " ".join(search))
    lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"
