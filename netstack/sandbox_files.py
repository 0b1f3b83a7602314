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
    """With the embedded resolver: Docker's file (nameserver 127.0.0.11, the
    host's search and options, ndots:0).  Without: the host's file minus
    loopback nameservers, which mean nothing inside a sandbox."""
    from netstack.dns.resolvconf import sandbox_resolv_conf

    if embedded_dns:
        return sandbox_resolv_conf(host_text)
    out = []
    for line in host_text.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and len(words) > 1 and (words[1].startswith("127.") or words[1] == "::1"):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def write_in_place(path: str, content: str) -> None:
    """Rewrite the file in place, and only when its content changes.

    In place, as Docker does, because a runtime bind-mounts this very inode
    into the container: a rename would leave the container reading the old
    file.  The new bytes go in before the tail is cut, so a reader never
    sees an empty file; it also spares the filesystem an inode per change
    (ext4's inode allocator slows down with every recently freed one)."""
    data = content.encode()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        if os.pread(fd, len(data) + 1, 0) == data:
            return
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
