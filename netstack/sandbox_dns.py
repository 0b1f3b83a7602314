"""The embedded DNS as the controller sees it: records follow endpoints,
and each sandbox on a network with DNS gets a listener at 127.0.0.11.

The listener's sockets are made inside the sandbox's namespace on
kernel-chosen ports; rules there send 127.0.0.11:53 to them, so a process
in the container can still bind 0.0.0.0:53 itself (Docker's trick, though
Docker's rule is a DNAT and pynet's a stateless rewrite).
A listener opened again for the same sandbox (after a restart of pynetd, or
once the sandbox rejoins a network) must not leave clients behind on the
old ports through NAT state the kernel keeps: see `NftRedirect`.
The records and the serving thread live in netstack.dns.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Protocol

from netstack.dns.records import RecordTable
from netstack.dns.resolvconf import EMBEDDED_ADDRESS
from netstack.dns.server import DnsServer, bind_pair, bind_sandbox_sockets, open_sandbox_sockets
from netstack.kernel.fds import move_high

log = logging.getLogger("pynet.dns")

#: drivers whose endpoints get no embedded DNS (Docker: host and none)
NO_DNS_DRIVERS = ("host", "null")

Opened = tuple[socket.socket, socket.socket]


class Listener(Protocol):
    """How a sandbox's listener is opened and reached from 127.0.0.11:53."""

    def open(self, sandbox_key: str) -> Opened:
        """Bound UDP and listening TCP sockets, made inside the sandbox, with
        127.0.0.11:53 leading to them once this returns."""
        ...


class NftRedirect:
    """Kernel-chosen ports, and 127.0.0.11:53 rewritten to them statelessly
    (queries' destination port, answers' source port: `nft.dns_redirect_batch`)
    by libnftables in-process (~1 ms a sandbox), all in one visit to the
    namespace.  No NAT, so no connection tracking in the sandbox: no
    per-packet cost on its other traffic, and no NAT state that could keep
    a client on the ports of an earlier listener.

    A re-opened listener (pynetd restarted; the sandbox left its last
    network and joined one again) takes the ports the namespace's rules
    already name when they are free.  When they must change, the rules are
    rewritten, and conntrack entries an earlier DNAT redirect (older pynet,
    or the iptables fallback) left are deleted (`forget_stale_entries`)."""

    def open(self, sandbox_key: str) -> Opened:
        from netstack.kernel import nft
        from netstack.kernel.netns import run_in_netns

        def inside() -> Opened:
            has_table, before = nft.dns_redirect_state()
            udp, tcp, udp_port, tcp_port = bind_sandbox_sockets(EMBEDDED_ADDRESS, before)
            try:
                if (udp_port, tcp_port) != before:
                    nft.run(nft.dns_redirect_batch(udp_port, tcp_port, replace=has_table))
                    forget_stale_entries(udp_port, tcp_port)  # ~0.1 ms when nothing is tracked
            except BaseException:
                udp.close()
                tcp.close()
                raise
            return udp, tcp

        return run_in_netns(sandbox_key, inside)


class IptablesRedirect:
    """The fallback without libnftables: a python-iptables commit (~10 ms).
    The rule is not read back, so ports always change; entries made under
    an earlier rule are deleted after it is rewritten."""

    def open(self, sandbox_key: str) -> Opened:
        from netstack.kernel.firewall import IptablesFirewall
        from netstack.kernel.netns import run_in_netns

        udp, tcp, udp_port, tcp_port = open_sandbox_sockets(sandbox_key)
        try:
            IptablesFirewall(netns=sandbox_key, ipv6=False).sandbox_dns_redirect(udp_port, tcp_port)
            run_in_netns(sandbox_key, lambda: forget_stale_entries(udp_port, tcp_port))
        except BaseException:
            udp.close()
            tcp.close()
            raise
        return udp, tcp


class Port53:
    """No redirect at all (hosts without a firewall backend): the listener
    takes port 53 itself."""

    def open(self, sandbox_key: str) -> Opened:
        from netstack.kernel.netns import run_in_netns

        return run_in_netns(sandbox_key, lambda: bind_pair(EMBEDDED_ADDRESS, 53, 53)[:2])


def default_listener() -> Listener:
    """nftables in-process when libnftables is there, else iptables."""
    from netstack.kernel import nft

    return NftRedirect() if nft.available() else IptablesRedirect()


def forget_stale_entries(udp_port: int, tcp_port: int) -> None:
    """In the sandbox's namespace (the caller enters it), after the redirect
    was rewritten to these ports: delete the conntrack entries of
    127.0.0.11:53 that still lead elsewhere.  Rewritten first, so that no
    new stale entry can appear behind the deletion."""
    from netstack.errors import PynetError
    from netstack.kernel import conntrack

    try:
        n = conntrack.delete_stale_dnat(EMBEDDED_ADDRESS, 53, {socket.IPPROTO_UDP: udp_port,
                                                               socket.IPPROTO_TCP: tcp_port})
    except (OSError, PynetError) as exc:  # no ctnetlink: new clients are served, returning ones may not be
        log.warning("dns: cannot delete the NAT entries of an earlier listener: %s", exc)
        return
    if n:
        log.info("dns: %d NAT entries of an earlier listener deleted", n)


class SandboxDns:
    def __init__(self, *, upstreams: list[tuple[str, int]] | None = None,
                 listener: Listener | None = None, bind_53: bool = False) -> None:
        """listener: how a sandbox's listener is opened and reached from
        127.0.0.11:53 (default: nft redirect, else iptables); bind_53: no
        redirect at all, the listener takes port 53 itself (for hosts
        without a firewall backend)."""
        self.records = RecordTable()
        self.server = DnsServer(self.records, upstreams=upstreams)
        self.listener = Port53() if bind_53 else (listener or default_listener())
        self._listening: set[str] = set()
        self.server.start()

    @staticmethod
    def serves(driver: str) -> bool:
        return driver not in NO_DNS_DRIVERS

    def add_endpoint(self, net: Any, sb: Any, ep: Any, names: list[str], sandbox_endpoints: list[Any]) -> None:
        """Called when `ep` joins `sb`: its names become visible on `net` and
        the sandbox's listener is opened if it has none yet."""
        if not self.serves(net.driver):
            return
        self.records.set_network_internal(net.id, net.internal)
        self.records.add_endpoint(
            net.id, net.name, ep.id, names,
            ep.ipv4.split("/")[0] if ep.ipv4 else None, ep.ipv6.split("/")[0] if ep.ipv6 else None,
        )
        self.records.set_sandbox_networks(sb.id, sorted({e.network_id for e in sandbox_endpoints} | {net.id}))
        if sb.id not in self._listening:
            self._listen(sb)

    def _listen(self, sb: Any) -> None:
        udp, tcp = self.listener.open(sb.key)
        self.server.add_sandbox(sb.id, move_high(udp), move_high(tcp))
        self._listening.add(sb.id)

    def remove_endpoint(self, net: Any, sb: Any, ep: Any, remaining: list[Any]) -> None:
        """Called when `ep` leaves: its names go, in the same operation."""
        if not self.serves(net.driver):
            return
        self.records.remove_endpoint(net.id, ep.id)
        self.records.set_sandbox_networks(sb.id, sorted({e.network_id for e in remaining}))
        if not remaining and sb.id in self._listening:
            self.remove_sandbox(sb.id)

    def remove_sandbox(self, sandbox_id: str) -> None:
        self.records.remove_sandbox(sandbox_id)
        if sandbox_id in self._listening:
            self.server.remove_sandbox(sandbox_id)
            self._listening.discard(sandbox_id)

    def stop(self) -> None:
        self.server.stop()

