"""pynetd: the daemon.  One asyncio loop serves the HTTP API on a UNIX
socket (and, with mutual TLS only, on TCP); controller work runs in worker
threads under the controller's lock; DNS listeners run in the resolver's
own thread.

    pynetd [--data-root DIR] [--exec-root DIR] [-H unix:///PATH]... [--group GROUP]
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import grp
import logging
import os
import signal
import socket
import ssl
import sys
from typing import Any

from netstack.errors import InvalidParameter, PynetError

log = logging.getLogger("pynetd")

DEFAULT_SOCKET = "unix:///run/pynet/pynet.sock"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pynetd", description="The pynet networking daemon.")
    p.add_argument("--data-root", default=os.environ.get("PYNET_DATA_ROOT", "/var/lib/pynet"),
                   help="where the store lives (default /var/lib/pynet)")
    p.add_argument("--exec-root", default=os.environ.get("PYNET_EXEC_ROOT", "/run/pynet"),
                   help="runtime files: sandbox namespaces (default /run/pynet)")
    p.add_argument("-H", "--host", action="append", dest="hosts",
                   help=f"socket to listen on (default {DEFAULT_SOCKET}); tcp://ADDR:PORT needs --tlsverify")
    p.add_argument("--group", default="", help="group owning the UNIX socket (mode 0660)")
    p.add_argument("--tlsverify", action="store_true", help="require client certificates (mutual TLS)")
    p.add_argument("--tlscacert", default="")
    p.add_argument("--tlscert", default="")
    p.add_argument("--tlskey", default="")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--no-dns", action="store_true", help="disable the embedded DNS resolver")
    p.add_argument("--dns-upstream", action="append", default=[], metavar="ADDR[:PORT]",
                   help="upstream resolver for names the embedded DNS does not know"
                        " (default: the nameservers of --resolv-conf)")
    p.add_argument("--resolv-conf", default="/etc/resolv.conf",
                   help="the host's resolv.conf: upstreams, search domains and options (default /etc/resolv.conf)")
    p.add_argument("--firewall", default="iptables", choices=["iptables", "nftables", "none"],
                   help="firewall backend (default iptables)")
    p.add_argument("--plugin-socket", default="", metavar="PATH",
                   help="also serve Docker's remote network driver and IPAM plugin protocols on this UNIX"
                        " socket, e.g. /run/docker/plugins/pynet.sock (the plugin is named after the file)")
    p.add_argument("--cluster-store", default="", metavar="etcd://HOST:PORT[,HOST:PORT...]",
                   help="etcd holding global (overlay) networks, shared by every host of the cluster")
    p.add_argument("--cluster-advertise", default="", metavar="ADDR",
                   help="this host's underlay address (or interface), also its VXLAN endpoint")
    p.add_argument("--cluster-ttl", type=int, default=int(os.environ.get("PYNET_CLUSTER_TTL", "10")),
                   help="seconds after which a silent host's endpoints leave the cluster (default 10)")
    return p.parse_args(argv)


def check_hosts(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Validated listen addresses as (kind, address)."""
    out = []
    for h in args.hosts or [DEFAULT_SOCKET]:
        if h.startswith("unix://"):
            out.append(("unix", h[len("unix://"):]))
        elif h.startswith("tcp://"):
            if not (args.tlsverify and args.tlscacert and args.tlscert and args.tlskey):
                raise InvalidParameter(
                    f"refusing to listen on {h} without mutual TLS: give --tlsverify --tlscacert --tlscert --tlskey"
                )
            out.append(("tcp", h[len("tcp://"):]))
        else:
            raise InvalidParameter(f"invalid -H {h!r}: use unix:///PATH or tcp://ADDR:PORT")
    return out


def lock_data_root(data_root: str) -> int:
    os.makedirs(data_root, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(data_root, "pynetd.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise PynetError(f"another pynetd is already running on data root {data_root}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def unix_listener(path: str, group: str) -> socket.socket:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)  # stale: the data-root lock proves no other pynetd owns it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            sock.close()
            raise InvalidParameter(f"unknown group {group!r} for the socket") from None
        os.chown(path, 0, gid)
    sock.listen(128)
    return sock


def tls_context(args: argparse.Namespace) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=args.tlscacert)
    ctx.load_cert_chain(args.tlscert, args.tlskey)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def build_controller(args: argparse.Namespace) -> Any:
    from netstack.controller import Controller

    firewall: Any
    if args.firewall == "none":
        from netstack.kernel.firewall import NoFirewall

        firewall = NoFirewall()
    elif args.firewall == "nftables":
        from netstack.kernel.nftables import NftablesFirewall

        firewall = NftablesFirewall()
        firewall.setup()
    else:
        from netstack.kernel.firewall import IptablesFirewall

        firewall = IptablesFirewall()
        firewall.setup()
    dns = None
    if not args.no_dns:
        from netstack.sandbox_dns import SandboxDns

        # Without a firewall there is no DNAT: the resolver then binds port 53 itself.
        dns = SandboxDns(upstreams=parse_upstreams(args), bind_53=args.firewall == "none")
    cluster = None
    if args.cluster_store or args.cluster_advertise:
        from netstack import cluster as clustermod

        if not args.cluster_store:
            raise InvalidParameter("--cluster-advertise needs --cluster-store etcd://HOST:PORT")
        cluster = clustermod.connect(args.cluster_store, args.cluster_advertise, args.data_root, ttl=args.cluster_ttl)
    ctrl = Controller(args.data_root, exec_root=args.exec_root, firewall=firewall, dns=dns,
                      host_resolv_conf=args.resolv_conf, cluster=cluster)
    if cluster is not None:
        ctrl.drivers.get("overlay").attach_cluster(cluster.vtep, cluster.underlay_mtu)
    return ctrl


def parse_upstreams(args: argparse.Namespace) -> list[tuple[str, int]]:
    from netstack.dns.resolvconf import host_upstreams

    if not args.dns_upstream:
        return host_upstreams(args.resolv_conf)
    out = []
    for u in args.dns_upstream:
        addr, _, port = u.rpartition(":") if u.count(":") == 1 else (u, "", "53")
        try:
            out.append((addr, int(port or 53)))
        except ValueError:
            raise InvalidParameter(f"invalid --dns-upstream {u!r}: expected ADDR[:PORT]") from None
    return out


async def serve(args: argparse.Namespace, ctrl: Any, listeners: list[tuple[str, str]]) -> None:
    from aiohttp import web

    from netstack.api.server import make_app

    app = make_app(ctrl)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sites = []
    for kind, addr in listeners:
        if kind == "unix":
            site: Any = web.SockSite(runner, unix_listener(addr, args.group))
        else:
            host, _, port = addr.rpartition(":")
            site = web.TCPSite(runner, host or "0.0.0.0", int(port), ssl_context=tls_context(args))
        await site.start()
        sites.append(site)
        log.info("listening on %s://%s", kind, addr)
    plugin_runner = None
    if args.plugin_socket:
        from netstack.api.plugin import make_plugin_app

        plugin_runner = web.AppRunner(make_plugin_app(ctrl), access_log=None, handle_signals=False)
        await plugin_runner.setup()
        await web.SockSite(plugin_runner, unix_listener(args.plugin_socket, args.group)).start()
        log.info("serving the Docker plugin protocols on unix://%s", args.plugin_socket)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("pynetd ready", file=sys.stderr, flush=True)
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
    if plugin_runner is not None:
        await plugin_runner.cleanup()
        if os.path.exists(args.plugin_socket):
            os.unlink(args.plugin_socket)
    for kind, addr in listeners:
        if kind == "unix" and os.path.exists(addr):
            os.unlink(addr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from netstack.kernel.fds import raise_nofile_limit

    raise_nofile_limit()
    try:
        listeners = check_hosts(args)
        lock_fd = lock_data_root(args.data_root)
        ctrl = build_controller(args)
        repairs = ctrl.start()
        for r in repairs:
            log.info("start-up repair: %s", r)
        agent = None
        if getattr(ctrl, "cluster", None) is not None:
            from netstack.cluster import ClusterAgent

            agent = ClusterAgent(ctrl, ctrl.cluster)
            agent.start()
            # Serve with the cluster's state if etcd answers soon; without
            # it local networks work and the agent keeps trying.
            if not agent.connected.wait(3):
                log.warning("cluster store %s not reachable yet: overlay operations fail until it is",
                            args.cluster_store)
        from netstack import faults

        faults.arm()
    except PynetError as exc:
        print(f"pynetd: {exc.message}", file=sys.stderr)
        return 1
    try:
        asyncio.run(serve(args, ctrl, listeners))
    finally:
        if agent is not None:
            agent.stop()
        if getattr(ctrl, "dns", None) is not None:
            ctrl.dns.stop()
        ctrl.close()
        os.close(lock_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
