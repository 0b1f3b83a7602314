"""The hosts and resolv.conf content pynet keeps for each sandbox, for the
runtime to bind-mount (and for `pynet sandbox exec`)."""

from __future__ import annotations

import os

HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)

EMBEDDED_DNS = "127.0.0.11"


def hosts_content(entries: list[tuple[str, list[str]]]) -> str:
    """entries: (address, names) of the sandbox's own endpoints."""
    lines = [HOSTS_HEADER]
    for address, names in entries:
        if address and names:
            lines.append(f"{address}\t{' '.join(names)}\n")
    return "".join(lines)


def host_resolv_conf(path: str = "/etc/resolv.conf") -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def resolv_conf(host_text: str, *, embedded_dns: bool) -> str:
    """With the embedded resolver: nameserver 127.0.0.11, the host's search
    and options kept, ndots:0 unless set (as Docker).  Without: the host's
    file minus loopback nameservers, which mean nothing in a sandbox."""
    search: list[str] = []
    options: list[str] = []
    servers: list[str] = []
    for line in host_text.splitlines():
        words = line.split()
        if not words or words[0].startswith(("#", ";")):
            continue
        if words[0] == "nameserver" and len(words) > 1:
            servers.append(words[1])
        elif words[0] in ("search", "domain"):
            search = words[1:]
        elif words[0] == "options":
            options.extend(words[1:])
    out: list[str] = []
    if embedded_dns:
        out.append(f"nameserver {EMBEDDED_DNS}")
        if not any(o.startswith("ndots:") for o in options):
            options.append("ndots:0")
    else:
        out.extend(f"nameserver {s}" for s in servers if not s.startswith("127.") and s != "::1")
    if search:
        out.append("search " + " ".join(search))
    if options:
        out.append("options " + " ".join(options))
    return "\n".join(out) + "\n"


def write_atomic(path: str, content: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(content)
    os.replace(tmp, path)
