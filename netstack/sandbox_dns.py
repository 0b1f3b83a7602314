"""The embedded DNS as the controller sees it: records follow endpoints,
and each sandbox on a network with DNS gets a listener at 127.0.0.11.

The listener's sockets are made inside the sandbox's namespace on
kernel-chosen ports; a DNAT rule there sends 127.0.0.11:53 to them, so a
process in the container can still bind 0.0.0.0:53 itself (Docker's trick).
The records and the serving thread live in netstack.dns.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from netstack.dns.records import RecordTable
from netstack.dns.server import DnsServer, open_sandbox_sockets
from netstack.kernel.fds import move_high

log = logging.getLogger("pynet.dns")

#: drivers whose endpoints get no embedded DNS (Docker: host and none)
NO_DNS_DRIVERS = ("host", "null")

Redirect = Callable[[str, int, int], None]


def iptables_redirect(sandbox_key: str, udp_port: int, tcp_port: int) -> None:
    from netstack.kernel.firewall import IptablesFirewall

    IptablesFirewall(netns=sandbox_key, ipv6=False).sandbox_dns_redirect(udp_port, tcp_port)


def default_redirect() -> Redirect:
    """nftables in-process when libnftables is there (~1 ms a sandbox),
    else a python-iptables commit (~10 ms)."""
    from netstack.kernel import nft

    return nft_redirect if nft.available() else iptables_redirect


def nft_redirect(sandbox_key: str, udp_port: int, tcp_port: int) -> None:
    from netstack.kernel import nft
    from netstack.kernel.netns import run_in_netns

    run_in_netns(sandbox_key, lambda: nft.run(nft.dns_redirect_batch(udp_port, tcp_port)))


class SandboxDns:
    def __init__(self, *, upstreams: list[tuple[str, int]] | None = None,
                 redirect: Redirect | None = None, bind_53: bool = False) -> None:
        """redirect: how 127.0.0.11:53 reaches the listener (default: nft,
        else iptables); bind_53: no redirect at all, the listener takes
        port 53 itself (for hosts without a firewall backend)."""
        self.records = RecordTable()
        self.server = DnsServer(self.records, upstreams=upstreams)
        self.redirect = None if bind_53 else (redirect or default_redirect())
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
        if self.redirect is None:
            udp, tcp, _, _ = open_sandbox_sockets_on_53(sb.key)
        else:
            udp, tcp, udp_port, tcp_port = open_sandbox_sockets(sb.key)
            try:
                self.redirect(sb.key, udp_port, tcp_port)
            except BaseException:
                udp.close()
                tcp.close()
                raise
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


def open_sandbox_sockets_on_53(key: str) -> tuple[Any, Any, int, int]:
    """Without a firewall to redirect, the resolver takes port 53 itself."""
    import socket

    from netstack.kernel.netns import run_in_netns

    def make() -> tuple[Any, Any, int, int]:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        udp.bind(("127.0.0.11", 53))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("127.0.0.11", 53))
        tcp.listen(64)
        return udp, tcp, 53, 53

    return run_in_netns(key, make)
