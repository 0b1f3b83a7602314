"""The Controller: the one entry point of the CNM model.

It owns the networks, sandboxes and endpoints, the driver registry, the IPAM
allocator, the firewall, the resolver and the store, and is the only place
that calls them.  Every public method is one operation under one lock
(serialized, so the model needs no locks of its own), and follows one line:

    validate everything             nothing touched yet
    step, step, step ...            each registers its undo on an ExitStack
    store.commit                    the operation is done
    (failure anywhere)              the undo stack unwinds, newest first

Crash safety: an object is written with state "creating"/"deleting" before
its kernel work starts, so `start()` can finish or undo whatever a crash
interrupted, then repairs drift between the store and the kernel.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import os
import secrets
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from netstack import ports as portspec
from netstack import sandbox_files
from netstack.driverapi import HostAddressing, LowerLinked, NetworkDriver, Reconciling
from netstack.endpoint import Endpoint, EndpointTable, PortBinding, dns_names
from netstack.errors import (
    Conflict, Forbidden, InvalidParameter, NotFound, PynetError, Unavailable,
)
from netstack.ipamapi import LOCAL, GLOBAL, Ipam, PoolRequest
from netstack.network import PREDEFINED, IpamConfig, Network
from netstack.requests import Attachment, EndpointConfig, NetworkCreate, SandboxCreate
from netstack.sandbox import HANDOFF, Sandbox
from netstack.store import Store
from netstack import validation
from netstack.kernel.rtnl import Rtnl
from netstack.faults import crashpoint

if TYPE_CHECKING:
    from netstack.cluster import InFlight

log = logging.getLogger("pynet.controller")

#: network name -> driver of the networks every pynet has and nobody removes
PREDEFINED_DRIVERS = {"none": "null", "host": "host"}


def new_id() -> str:
    return secrets.token_hex(32)


def now_rfc3339() -> str:
    ns = time.time_ns()
    dt = datetime.datetime.fromtimestamp(ns // 1_000_000_000, tz=datetime.timezone.utc)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ns % 1_000_000_000:09d}Z"


def _cidr(address: str, subnet: str) -> str:
    return f"{address}/{ipaddress.ip_network(subnet).prefixlen}"


class Controller:
    def __init__(
        self,
        data_root: str,
        *,
        exec_root: str = "/run/pynet",
        ipam: Ipam | None = None,
        firewall: object | None = None,
        drivers: object | None = None,
        dns: object | None = None,
        host_resolv_conf: str = "/etc/resolv.conf",
        cluster: object | None = None,
    ) -> None:
        from netstack.drivers import Registry

        self.data_root = data_root
        self.exec_root = exec_root
        self.store = Store(data_root)
        if ipam is None:
            from netstack.ipam import DefaultIpam

            ipam = DefaultIpam()
        self.ipam = ipam
        if firewall is None:
            from netstack.kernel.firewall import IptablesFirewall

            firewall = IptablesFirewall()
        self.firewall = firewall
        self.drivers = drivers if drivers is not None else Registry()
        self.dns = dns
        self.host_resolv_conf = host_resolv_conf
        # Global scope (netstack.cluster.ClusterStore): global networks'
        # records, IPAM and endpoints live there; None = a single host.
        self.cluster = cluster
        self.lock = threading.RLock()
        self.networks: dict[str, Network] = {}
        self.sandboxes: dict[str, Sandbox] = {}
        self._endpoints = EndpointTable()
        self.repairs: list[str] = []
        self._sandbox_rtnl: dict[str, Rtnl] = {}
        self._sandbox_ifindex: dict[str, int] = {}  # endpoint id -> its interface's index in the sandbox

    # ------------------------------------------------------------------ lookups

    def _ipam_for(self, net: Network) -> Ipam:
        """Global networks allocate cluster-wide (etcd), local ones here."""
        if net.scope == GLOBAL and self.cluster is not None:
            return self.cluster.ipam  # type: ignore[attr-defined,no-any-return]
        return self.ipam

    def _driver(self, name: str) -> NetworkDriver:
        if not self.drivers.known(name):  # type: ignore[attr-defined]
            raise NotFound(f'plugin "{name}" not found')
        return self.drivers.get(name)  # type: ignore[attr-defined,no-any-return]

    @staticmethod
    def _find(objs: dict, ref: str, kind: str) -> object:
        if ref in objs:
            return objs[ref]
        for o in objs.values():
            if o.name == ref:
                return o
        matches = [o for i, o in objs.items() if ref and i.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidParameter(f"{kind} {ref} is ambiguous ({len(matches)} matches found based on ID prefix)")
        raise NotFound(f"{kind} {ref} not found")

    def network(self, ref: str) -> Network:
        with self.lock:
            net = self._find(self.networks, ref, "network")
            self._refresh_link_states(self.endpoints_of_network(net.id))  # type: ignore[attr-defined]
            return net  # type: ignore[return-value]

    def sandbox(self, ref: str) -> Sandbox:
        with self.lock:
            sb = self._find(self.sandboxes, ref, "sandbox")
            self._refresh_link_states(self.endpoints_of_sandbox(sb.id))  # type: ignore[attr-defined]
            return sb  # type: ignore[return-value]

    def _refresh_link_states(self, eps: list[Endpoint]) -> None:
        """Live `link_state` of endpoints whose driver is LowerLinked, for
        inspect (kept in memory only: the next commit may store a stale one,
        the next inspect overwrites it)."""
        for ep in eps:
            net, sb = self.networks.get(ep.network_id), self.sandboxes.get(ep.sandbox_id)
            if net is None or sb is None or not self.drivers.known(net.driver):  # type: ignore[attr-defined]
                continue
            driver = self.drivers.get(net.driver)  # type: ignore[attr-defined]
            if isinstance(driver, LowerLinked):
                ep.driver_state["link_state"] = driver.endpoint_state(net, ep, sb.key)

    def list_networks(self) -> list[Network]:
        with self.lock:
            return [n for n in self.networks.values() if n.state == "ready"]

    def list_sandboxes(self) -> list[Sandbox]:
        with self.lock:
            return [s for s in self.sandboxes.values() if s.state == "ready"]

    @property
    def endpoints(self) -> EndpointTable:
        return self._endpoints

    @endpoints.setter
    def endpoints(self, endpoints: dict[str, Endpoint]) -> None:
        self._endpoints = EndpointTable(endpoints)

    def endpoints_of_network(self, network_id: str) -> list[Endpoint]:
        return self._endpoints.of_network(network_id)

    def endpoints_of_sandbox(self, sandbox_id: str) -> list[Endpoint]:
        eps = self._endpoints.of_sandbox(sandbox_id)
        return sorted(eps, key=lambda e: int(e.ifname[3:]) if e.ifname[3:].isdigit() else 0)

    # ----------------------------------------------------------------- networks

    def create_network(self, req: NetworkCreate) -> tuple[Network, str]:
        """Create a network; returns it and a warning ("" if none)."""
        with self.lock:
            return self._create_network(req)

    def _create_network(self, req: NetworkCreate, *, predefined: bool = False) -> tuple[Network, str]:
        validation.check_name(req.name)
        if req.name in PREDEFINED and not predefined:
            raise Forbidden(f"{req.name} is a pre-defined network and cannot be created")
        if any(n.name == req.name for n in self.networks.values()):
            raise Conflict(f"network with name {req.name} already exists")
        driver = self._driver(req.driver)
        scope = req.scope or driver.capability.data_scope
        if scope not in ("local", "global", "swarm"):
            raise InvalidParameter(f"invalid scope {req.scope!r}: use local or global")
        if scope != driver.capability.data_scope:
            raise InvalidParameter(f"the {req.driver} driver does not support scope {scope}")
        if scope == GLOBAL and self.cluster is None:
            raise Unavailable(f"{req.driver} networks are global: start pynetd with"
                              " --cluster-store etcd://HOST:PORT --cluster-advertise ADDR")
        if req.ipam_driver not in ("", "default", "null"):
            raise NotFound(f'plugin "{req.ipam_driver}" not found')
        for s in req.subnets:
            validation.check_subnet_request(s)
        v4 = [s for s in req.subnets if not s.subnet or validation.parse_subnet(s.subnet).version == 4]
        v6 = [s for s in req.subnets if s.subnet and validation.parse_subnet(s.subnet).version == 6]
        if v6 and not req.enable_ipv6:
            raise InvalidParameter(f"IPv6 subnet {v6[0].subnet} given but IPv6 is not enabled (use --ipv6)")
        if req.enable_ipv6 and not v6 and driver.capability.needs_gateway:
            raise InvalidParameter("--ipv6 needs an IPv6 --subnet: no default IPv6 pool is configured")
        net = Network(
            id=new_id(), name=req.name, driver=req.driver, scope=scope, created=now_rfc3339(),
            ipam_driver=req.ipam_driver or "default", ipam_options=dict(req.ipam_options),
            enable_ipv4=req.enable_ipv4, enable_ipv6=req.enable_ipv6, internal=req.internal,
            attachable=req.attachable, ingress=req.ingress, options=dict(req.options),
            labels=dict(req.labels), state="creating",
        )
        driver.validate(net, [n for n in self.networks.values()])
        uses_ipam = driver.capability.needs_gateway or bool(req.subnets)
        with contextlib.ExitStack() as undo:
            if uses_ipam and req.enable_ipv4:
                net.ipv4 = self._allocate_pools(net, v4 or [None], undo, driver.capability.needs_gateway)
            if uses_ipam and req.enable_ipv6:
                net.ipv6 = self._allocate_pools(net, v6, undo, driver.capability.needs_gateway)
            if isinstance(driver, HostAddressing):
                self._reserve_host_addresses(net, driver.reserved_addresses(net))
            clash = self.subnet_clash(net)
            if clash:
                raise Conflict(f"invalid pool request: {clash}")
            warning = ""
            if scope == GLOBAL:
                warning = self.cluster.create_network(net)  # type: ignore[attr-defined]
                undo.callback(self.cluster.delete_network, net)  # type: ignore[attr-defined]
            self._commit(networks=[net])
            undo.callback(self._forget_network, net)
            crashpoint("network-create:stored")
            net.driver_state = dict(driver.create_network(net))
            undo.callback(driver.delete_network, net)
            crashpoint("network-create:kernel")
            self._program_network(net, driver)
            undo.callback(self._unprogram_network, net, driver)
            net.state = "ready"
            self._commit(networks=[net])
            undo.pop_all()
        log.info("created network %s (%s, %s)", net.name, net.driver, net.short_id)
        return net, warning

    def _allocate_pools(self, net: Network, reqs: list, undo: contextlib.ExitStack, gateway: bool) -> list[IpamConfig]:
        space = GLOBAL if net.scope == "global" else LOCAL
        out: list[IpamConfig] = []
        for r in reqs:
            pool_req = PoolRequest(
                address_space=space,
                pool=validation.parse_subnet(r.subnet) if r and r.subnet else None,
                sub_pool=validation.parse_subnet(r.ip_range) if r and r.ip_range else None,
                v6=bool(r and r.subnet and ":" in r.subnet),
                exclude=tuple(self._host_routes(net.scope)) if not (r and r.subnet) else (),
                aux_addresses=tuple(ipaddress.ip_address(a) for _, a in (r.aux_addresses if r else ())),
            )
            ipam = self._ipam_for(net)
            pool = ipam.request_pool(pool_req)
            undo.callback(ipam.release_pool, pool.pool_id)
            cfg = IpamConfig(
                subnet=str(pool.network), ip_range=r.ip_range if r and r.ip_range else None,
                aux_addresses=dict(r.aux_addresses) if r else {}, pool_id=pool.pool_id,
            )
            if r and r.gateway:
                cfg.gateway = str(ipam.request_address(pool.pool_id, ipaddress.ip_address(r.gateway)))
            elif gateway:
                cfg.gateway = str(ipam.request_address(pool.pool_id, gateway=True))
            out.append(cfg)
        return out

    def _reserve_host_addresses(self, net: Network, wanted: dict[str, str] | object) -> None:
        """Addresses a driver takes for the host (see HostAddressing),
        recorded as aux addresses: replayed on restart, freed with the pool."""
        # Named addresses first, so that "any free one" cannot take them.
        for name, address in sorted(dict(wanted).items(), key=lambda kv: not kv[1]):  # type: ignore[call-overload]
            for c in net.ipv4 + net.ipv6:
                if name in c.aux_addresses:
                    continue
                if not address:
                    c.aux_addresses[name] = str(self.ipam.request_address(c.pool_id))
                elif ipaddress.ip_address(address) in ipaddress.ip_network(c.subnet):
                    if address in (c.gateway, *c.aux_addresses.values()):
                        continue
                    c.aux_addresses[name] = str(self.ipam.request_address(c.pool_id, ipaddress.ip_address(address)))

    def _host_routes(self, scope: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """Routes a new network of `scope` must not overlap: all but those of
        its own address space's networks (whose IPAM knows them), so local
        and global networks avoid each other's subnets too."""
        from netstack.kernel import links

        own = {c.subnet for n in self.networks.values() if n.scope == scope for c in n.ipv4 + n.ipv6}
        return [ipaddress.ip_network(r) for r in links.routed_networks() if r not in own]

    def subnet_clash(self, net: Network) -> str:
        """Why `net` cannot live on this host beside its networks of the
        other address space ('' if it can).  Bridge and overlay networks
        both hold their gateway on a bridge of this host, in one routing
        table; two IPAMs, one per space, do not see each other's pools."""
        from netstack.ipam import overlaps

        if not self._driver(net.driver).capability.masquerades:
            return ""
        for other in self.networks.values():
            if other.scope == net.scope or other.id == net.id or not self._driver(other.driver).capability.masquerades:
                continue
            for a in net.ipv4 + net.ipv6:
                for b in other.ipv4 + other.ipv6:
                    if overlaps(ipaddress.ip_network(a.subnet), ipaddress.ip_network(b.subnet)):
                        return f"subnet {a.subnet} overlaps {b.subnet} of network {other.name} on this host"
        return ""

    def _forget_network(self, net: Network) -> None:
        with self.store.transaction() as tx:
            tx.delete_network(net.id)
        self.networks.pop(net.id, None)

    def delete_network(self, ref: str) -> Network:
        with self.lock:
            net = self._find(self.networks, ref, "network")
            assert isinstance(net, Network)
            if net.predefined and net.name in PREDEFINED_DRIVERS:
                raise Forbidden(f"{net.name} is a pre-defined network and cannot be removed")
            eps = self.endpoints_of_network(net.id)
            if eps:
                raise Forbidden(
                    f"error while removing network: network {net.name} id {net.id} has active endpoints"
                    f" ({', '.join(sorted(e.name for e in eps))})"
                )
            self._delete_network(net)
            return net

    def _delete_network(self, net: Network) -> None:
        if net.scope == GLOBAL and self.cluster is not None:
            # First, so that a refusal (endpoints on other hosts, etcd
            # away) leaves everything as it was.
            self.cluster.delete_network(net)  # type: ignore[attr-defined]
        net.state = "deleting"
        self._commit(networks=[net])
        crashpoint("network-delete:marked")
        driver = self._driver(net.driver)
        errors = self._collect(
            lambda: self._unprogram_network(net, driver),
            lambda: driver.delete_network(net),
        )
        for c in net.ipv4 + net.ipv6:
            self._ipam_for(net).release_pool(c.pool_id)
        self._forget_network(net)
        if errors:
            log.warning("network %s removed with errors: %s", net.name, errors)

    def prune_networks(self, keep: Callable[[Network], bool] = lambda n: False) -> list[str]:
        with self.lock:
            removed = []
            for net in sorted(self.networks.values(), key=lambda n: n.name):
                if net.name in PREDEFINED or self.endpoints_of_network(net.id) or keep(net):
                    continue
                self._delete_network(net)
                removed.append(net.name)
            return removed

    def _program_network(self, net: Network, driver: NetworkDriver) -> None:
        rules = self._network_rules(net, driver)
        if rules is not None:
            self.firewall.add_network(rules)  # type: ignore[attr-defined]

    def _unprogram_network(self, net: Network, driver: NetworkDriver) -> None:
        rules = self._network_rules(net, driver)
        if rules is not None:
            self.firewall.remove_network(rules)  # type: ignore[attr-defined]

    def _network_rules(self, net: Network, driver: NetworkDriver) -> object | None:
        if not driver.capability.masquerades or "bridge" not in net.driver_state:
            return None
        from netstack.kernel.firewall import NetworkRules

        cfg = driver.config(net)  # type: ignore[attr-defined]
        return NetworkRules(
            network_id=net.id, bridge=str(net.driver_state["bridge"]),
            subnets4=tuple(c.subnet for c in net.ipv4), subnets6=tuple(c.subnet for c in net.ipv6),
            internal=net.internal, icc=cfg.icc, masquerade=cfg.masquerade,
        )

    # ---------------------------------------------------------------- sandboxes

    def create_sandbox(self, req: SandboxCreate) -> Sandbox:
        with self.lock:
            return self._create_sandbox(req)

    def _create_sandbox(self, req: SandboxCreate) -> Sandbox:
        sid = new_id()
        name = req.name or f"sandbox-{sid[:8]}"
        validation.check_name(name, "sandbox")
        validation.check_hostname(req.hostname)
        if any(s.name == name for s in self.sandboxes.values()):
            raise Conflict(f'sandbox name "{name}" is already in use by sandbox {self.sandbox(name).id}')
        if req.key and req.pid:
            raise InvalidParameter("give either a netns path or a pid, not both")
        from netstack.kernel import netns

        if req.key and req.key != HANDOFF and not netns.is_netns(req.key):
            raise InvalidParameter(f"{req.key} is not a network namespace")
        if req.pid and not os.path.exists(f"/proc/{req.pid}/ns/net"):
            raise NotFound(f"no process with pid {req.pid}")
        given = req.key if req.key and req.key != HANDOFF else (f"/proc/{req.pid}/ns/net" if req.pid else "")
        if given and netns.is_own_netns(given):  # its eth0 and default route would be the host's
            raise InvalidParameter(f"{req.key or f'process {req.pid}'} is in pynetd's own network namespace:"
                                   " use the host network instead")
        nets = [(self._find(self.networks, a.network, "network"), a) for a in req.networks]
        wanted = [portspec.parse(p) for p in req.ports]
        taken = [b for s in self.sandboxes.values() for b in s.ports]
        portspec.check_clashes(wanted, taken)
        bindings = portspec.assign_host_ports(wanted, taken)
        for a in req.networks:
            self._check_endpoint_config(a.config)
        sb = Sandbox(
            id=sid, name=name, hostname=req.hostname or sid[:12], key=req.key,
            owned=not req.key, created=now_rfc3339(), labels=dict(req.labels),
            ports=bindings, state="creating",
        )
        if not req.key:
            sb.key = os.path.join(self.exec_root, "netns", sid[:12])
        with contextlib.ExitStack() as undo:
            self._commit(sandboxes=[sb])
            undo.callback(self._forget_sandbox, sb)

            def make_netns() -> None:
                # the sandbox's netlink handle is made in the same visit
                sock = netns.create(sb.key, inside=Rtnl.new_socket)
                undo.callback(netns.delete, sb.key)
                self._adopt_rtnl(sb, Rtnl.kept(sock))
                undo.callback(self._close_rtnl, sb)

            # A first network of global scope makes the namespace while its
            # etcd txn is in flight (see _connect): one round trip less to wait.
            deferred = not req.key and not req.pid and bool(nets) and self._claims_in_cluster(nets[0][0])
            if req.pid:
                _bind_netns(f"/proc/{req.pid}/ns/net", sb.key)
                undo.callback(netns.delete, sb.key)
            elif not req.key and not deferred:
                make_netns()
            self._write_files(sb)
            self.sandboxes[sb.id] = sb
            for i, (net, a) in enumerate(nets):
                self._connect(net, sb, a.config, before_join=make_netns if deferred and i == 0 else None)  # type: ignore[arg-type]
                undo.callback(self._disconnect_quiet, net, sb)
            sb.state = "ready"
            self._commit(sandboxes=[sb])
            undo.pop_all()
        return sb

    def _forget_sandbox(self, sb: Sandbox) -> None:
        with self.store.transaction() as tx:
            tx.delete_sandbox(sb.id)
        self.sandboxes.pop(sb.id, None)
        if self.dns is not None:
            self.dns.remove_sandbox(sb.id)  # type: ignore[attr-defined]

    def delete_sandbox(self, ref: str, *, force: bool = False) -> Sandbox:
        with self.lock:
            sb = self._find(self.sandboxes, ref, "sandbox")
            assert isinstance(sb, Sandbox)
            eps = self.endpoints_of_sandbox(sb.id)
            if eps and not force:
                raise Conflict(
                    f"sandbox {sb.name} is connected to {len(eps)} network(s); disconnect it or use force"
                )
            self._delete_sandbox(sb)
            return sb

    def _delete_sandbox(self, sb: Sandbox) -> None:
        from netstack.kernel import netns

        sb.state = "deleting"
        self._commit(sandboxes=[sb])
        for ep in reversed(self.endpoints_of_sandbox(sb.id)):
            self._disconnect(self.networks[ep.network_id], sb, ep)
        self._close_rtnl(sb)
        # Not waiting for the drivers' background link deletions (~20 ms a
        # link): the links are cut off already, a join into the same
        # namespace waits for them, and start-up removes any a crash left.
        if sb.owned:
            netns.delete(sb.key)
        with contextlib.suppress(FileNotFoundError):
            for f in ("hosts", "resolv.conf"):
                os.unlink(self.sandbox_file(sb, f))
            os.rmdir(os.path.dirname(self.sandbox_file(sb, "hosts")))
        self._forget_sandbox(sb)

    def _settle(self) -> None:
        """Wait for links that drivers delete in the background."""
        for driver in self.drivers.loaded():  # type: ignore[attr-defined]
            settle = getattr(driver, "settle", None)
            if settle is not None:
                settle()

    def sandbox_file(self, sb: Sandbox, name: str) -> str:
        return os.path.join(self.data_root, "sandboxes", sb.id, name)

    def _write_files(self, sb: Sandbox) -> None:
        entries = []
        for ep in self.endpoints_of_sandbox(sb.id):
            for cidr in (ep.ipv4, ep.ipv6):
                if cidr:
                    entries.append((cidr.split("/")[0], [sb.hostname]))
        sandbox_files.write_in_place(self.sandbox_file(sb, "hosts"), sandbox_files.hosts_content(entries))
        embedded = self.dns is not None and any(
            self.dns.serves(self.networks[e.network_id].driver)  # type: ignore[attr-defined]
            for e in self.endpoints_of_sandbox(sb.id)
        )
        host_text = sandbox_files.host_resolv_conf(self.host_resolv_conf)
        sandbox_files.write_in_place(
            self.sandbox_file(sb, "resolv.conf"), sandbox_files.resolv_conf(host_text, embedded_dns=embedded)
        )

    # ------------------------------------------------------- connect/disconnect

    def connect(self, net_ref: str, sb_ref: str, config: EndpointConfig = EndpointConfig()) -> Endpoint:
        with self.lock:
            net = self._find(self.networks, net_ref, "network")
            sb = self._find(self.sandboxes, sb_ref, "sandbox")
            self._check_endpoint_config(config)
            return self._connect(net, sb, config)  # type: ignore[arg-type]

    def _check_endpoint_config(self, config: EndpointConfig) -> None:
        if config.ipv4:
            validation.parse_address(config.ipv4, "IPv4 address")
        if config.ipv6:
            validation.parse_address(config.ipv6, "IPv6 address")
        for a in config.aliases:
            validation.check_alias(a)
        if config.ifname:
            from netstack.kernel.links import check_ifname

            check_ifname(config.ifname)

    def _claims_in_cluster(self, net: Network) -> bool:
        return net.scope == GLOBAL and self.cluster is not None

    def _connect(self, net: Network, sb: Sandbox, config: EndpointConfig, *, heal: bool = True,
                 before_join: Callable[[], None] | None = None) -> Endpoint:
        """`before_join`: the sandbox's own remaining kernel work (its
        namespace), run once the endpoint's etcd txn is in flight."""
        if net.state != "ready":
            raise Conflict(f"network {net.name} is being {net.state}")
        if heal:
            self._heal_network(net)
        current = self.endpoints_of_sandbox(sb.id)
        if any(e.network_id == net.id for e in current):
            raise Forbidden(f"endpoint with name {sb.name} already exists in network {net.name}")
        if net.driver == "host":
            raise Forbidden("a sandbox cannot be connected to the host network; run it in the host namespace")
        if net.driver == "null" and current or any(self.networks[e.network_id].driver == "null" for e in current):
            raise Forbidden("a sandbox on the none network cannot be connected to other networks")
        if sb.key == HANDOFF and net.driver != "bridge":
            raise InvalidParameter(f"the {net.driver} driver cannot hand an interface over to an engine")
        if config.ifname and any(e.ifname == config.ifname for e in current):
            raise Conflict(f"sandbox {sb.name} already has an interface named {config.ifname}")
        driver = self._driver(net.driver)
        ep = Endpoint(
            id=new_id(), name=sb.name, network_id=net.id, sandbox_id=sb.id, mac=config.mac,
            aliases=list(config.aliases), gw_priority=config.gw_priority, state="creating",
            ifname=config.ifname or self._next_ifname(current),
        )
        cluster = self.cluster if self._claims_in_cluster(net) else None
        with contextlib.ExitStack() as undo:
            if cluster is None:
                self._allocate_addresses(net, ep, config, undo)
            state = dict(driver.create_endpoint(net, ep))
            undo.callback(driver.delete_endpoint, net, ep)
            ep.mac = str(state.pop("mac", ep.mac))
            ep.driver_state = state
            # Global: the address claim and the endpoint's record are one
            # etcd txn, sent now; the kernel work below overlaps its round
            # trip and takes the answer only where the addresses are needed.
            claim = self._begin_cluster_attach(net, sb, ep, config, undo) if cluster is not None else None
            self._commit(endpoints=[ep])
            undo.callback(self._forget_endpoint, ep)
            if before_join is not None:
                before_join()
            if net.driver != "null":
                join = driver.join(net, ep, sb.key, ep.ifname)
                undo.callback(driver.leave, net, ep, sb.key)
                crashpoint("connect:joined")
                ep.driver_state.update(host_ifname=join.host_ifname, gateway4=join.gateway4, gateway6=join.gateway6)
            if claim is not None:
                self._overlap_cluster_attach(net, sb, ep, claim, undo)
            if net.driver != "null":
                if sb.key != HANDOFF:  # an engine configures the interface it moves
                    self._configure_interface(sb, ep, join)
            elif sb.key != HANDOFF:
                self._loopback_up(sb)
            self.endpoints[ep.id] = ep
            undo.callback(self.endpoints.pop, ep.id, None)
            if sb.key != HANDOFF:  # nothing inside: no resolver listener, no routes
                self._add_dns(net, sb, ep)
                undo.callback(self._remove_dns, net, sb, ep)
            if sb.key != HANDOFF:
                self._update_gateway(sb)
            ep.state = "ready"
            self._commit(endpoints=[ep])
            self._write_files(sb)
            undo.pop_all()
        return ep

    # -------------------------------------------------- global scope (cluster)

    def _begin_cluster_attach(self, net: Network, sb: Sandbox, ep: Endpoint, config: EndpointConfig,
                              undo: contextlib.ExitStack) -> tuple[InFlight, list[IpamConfig]]:
        """Send the endpoint's one etcd write (address claims + its record
        with MAC and DNS names, leased); its answer is taken later, on this
        thread.  Its undo takes the answer and, if the txn was written,
        withdraws the record and releases the addresses (again one txn)."""
        pools = self._address_pools(net, config)
        names = self._dns_names(sb, ep)
        ep.driver_state["dns_names"] = list(names)
        in_flight: InFlight = self.cluster.begin_attach(  # type: ignore[attr-defined]
            net.id, ep.id, ep.name, names, ep.mac, [(c.pool_id, pref) for c, pref in pools])
        configs = [c for c, _ in pools]
        undo.callback(self._undo_cluster_attach, net, ep, in_flight, configs)
        return in_flight, configs

    def _undo_cluster_attach(self, net: Network, ep: Endpoint, in_flight: InFlight,
                             configs: list[IpamConfig]) -> None:
        try:
            addrs = in_flight.result()
        except Unavailable:
            # Maybe written, the answer lost: the agent's full sync clears
            # this host's records and claims that no endpoint holds.
            self.cluster.dirty.set()  # type: ignore[attr-defined]
            return
        except Exception:
            return  # refused (address taken, pool full): nothing was written
        self.cluster.detach_endpoint(  # type: ignore[attr-defined]
            net.id, ep.id, [(c.pool_id, a) for c, a in zip(configs, addrs)])

    def _overlap_cluster_attach(self, net: Network, sb: Sandbox, ep: Endpoint,
                                claim: tuple[InFlight, list[IpamConfig]], undo: contextlib.ExitStack) -> None:
        """Local work that needs no cluster address, done while the txn is
        in flight, then the wait for it (its failure unwinds all of it)."""
        self._rtnl(sb)  # opened now if this is the sandbox's first interface
        if sb.key != HANDOFF and self.dns is not None and not any(
                self.dns.serves(self.networks[e.network_id].driver)  # type: ignore[attr-defined]
                for e in self.endpoints_of_sandbox(sb.id)):
            # The sandbox's resolver listener, opened now: registered with
            # no names yet (nothing to resolve until the addresses are
            # known; _add_dns replaces the record below).
            self.dns.add_endpoint(net, sb, ep, [], self.endpoints_of_sandbox(sb.id))  # type: ignore[attr-defined]
            undo.callback(self._remove_dns, net, sb, ep)
        in_flight, configs = claim
        for c, addr in zip(configs, in_flight.result()):
            if addr.version == 4:
                ep.ipv4 = _cidr(str(addr), c.subnet)
            else:
                ep.ipv6 = _cidr(str(addr), c.subnet)

    def _heal_network(self, net: Network) -> None:
        """For a LowerLinked driver: re-make the network's kernel objects and
        the endpoints its lower link took with it when it went away, with the
        same addresses, so the network works again once the link is back.

        Runs before every connect, so it must be cheap: a driver with
        `lower_link_changed` (macvlan) says in one request whether the lower
        link is still the one every endpoint was last found on; only when it
        is not (first connect after a start, the parent re-made) are the
        endpoints looked at, each in its sandbox, and the driver told
        (`lower_link_verified`) once all are there again."""
        driver = self._driver(net.driver)
        if not isinstance(driver, LowerLinked):
            return
        if isinstance(driver, Reconciling) and not driver.network_exists(net):
            log.warning("network %s: kernel objects missing, re-created", net.name)
            net.driver_state = dict(driver.create_network(net))
            self._commit(networks=[net])
        changed = getattr(driver, "lower_link_changed", None)
        lower = changed(net) if changed is not None else 0
        if lower is None:
            return
        self._heal_endpoints(net, driver)
        if changed is not None:
            driver.lower_link_verified(net, lower)  # type: ignore[attr-defined]

    def _heal_endpoints(self, net: Network, driver: LowerLinked) -> None:
        """Re-make the endpoints of `net` whose interface is missing."""
        for ep in self.endpoints_of_network(net.id):
            sb = self.sandboxes.get(ep.sandbox_id)
            if sb is None or ep.state != "ready" or driver.endpoint_state(net, ep, sb.key) != "missing":
                continue
            log.warning("endpoint %s on %s: interface missing, re-made", ep.name, net.name)
            cfg = EndpointConfig(
                ipv4=ep.ipv4.split("/")[0] if ep.ipv4 else "", ipv6=ep.ipv6.split("/")[0] if ep.ipv6 else "",
                aliases=tuple(ep.aliases), mac=ep.mac, gw_priority=ep.gw_priority,
            )
            self._disconnect(net, sb, ep)
            self._connect(net, sb, cfg, heal=False)

    def _next_ifname(self, current: list[Endpoint]) -> str:
        used = {e.ifname for e in current}
        n = 0
        while f"eth{n}" in used:
            n += 1
        return f"eth{n}"

    def _address_pools(self, net: Network, config: EndpointConfig
                       ) -> list[tuple[IpamConfig, ipaddress.IPv4Address | ipaddress.IPv6Address | None]]:
        """Per family the network has: the pool to allocate from and the
        wanted address (None: any)."""
        out = []
        for family, configs, wanted in ((4, net.ipv4, config.ipv4), (6, net.ipv6, config.ipv6)):
            if wanted and not configs:
                raise InvalidParameter(f"network {net.name} has no IPv{family} subnet for address {wanted}")
            if not configs:
                continue
            pref = ipaddress.ip_address(wanted) if wanted else None
            pool = configs[0]
            if pref is not None:
                matching = [c for c in configs if pref in ipaddress.ip_network(c.subnet)]
                if not matching:
                    raise InvalidParameter(
                        f"address {wanted} is not in any subnet of network {net.name}"
                        f" ({', '.join(c.subnet for c in configs)})"
                    )
                pool = matching[0]
            out.append((pool, pref))
        return out

    def _allocate_addresses(self, net: Network, ep: Endpoint, config: EndpointConfig, undo: contextlib.ExitStack) -> None:
        for pool, pref in self._address_pools(net, config):
            addr = self._ipam_for(net).request_address(pool.pool_id, pref)
            undo.callback(self._ipam_for(net).release_address, pool.pool_id, addr)
            if addr.version == 4:
                ep.ipv4 = _cidr(str(addr), pool.subnet)
            else:
                ep.ipv6 = _cidr(str(addr), pool.subnet)

    def _rtnl(self, sb: Sandbox) -> "Rtnl":
        """The sandbox's netlink handle, opened once (by a thread that enters
        its namespace) and kept until the sandbox goes."""
        from netstack.kernel.rtnl import Rtnl

        handle = self._sandbox_rtnl.get(sb.id)
        if handle is None:
            handle = self._adopt_rtnl(sb, Rtnl.in_netns(sb.key))
        return handle

    def _adopt_rtnl(self, sb: Sandbox, handle: "Rtnl") -> "Rtnl":
        self._sandbox_rtnl[sb.id] = handle
        handle.link_up(1)  # loopback
        return handle

    def _close_rtnl(self, sb: Sandbox) -> None:
        handle = self._sandbox_rtnl.pop(sb.id, None)
        if handle is not None:
            handle.close()

    def _configure_interface(self, sb: Sandbox, ep: Endpoint, join: object) -> None:
        rtnl = self._rtnl(sb)
        index = join.sandbox_ifindex or rtnl.link_index(ep.ifname)  # type: ignore[attr-defined]
        if index is None:
            raise NotFound(f"interface {ep.ifname} is missing in sandbox {sb.name}")
        self._sandbox_ifindex[ep.id] = index
        for cidr in (ep.ipv4, ep.ipv6):
            if cidr:
                rtnl.add_address(index, cidr)
        if not ep.ipv6:
            # No IPv6 on this network: no link-local address either (as
            # Docker up to 25 disabled IPv6 on such an interface), whose
            # probes the bridge would flood to every other member.
            rtnl.no_ipv6_link_local(index)
        rtnl.link_up(index)
        for r in join.routes:  # type: ignore[attr-defined]
            rtnl.replace_route(r.destination, r.gateway, index)

    def _loopback_up(self, sb: Sandbox) -> None:
        self._rtnl(sb)

    def _forget_endpoint(self, ep: Endpoint) -> None:
        with self.store.transaction() as tx:
            tx.delete_endpoint(ep.id)
        self.endpoints.pop(ep.id, None)
        self._sandbox_ifindex.pop(ep.id, None)

    def disconnect(self, net_ref: str, sb_ref: str, *, force: bool = False) -> None:
        with self.lock:
            net = self._find(self.networks, net_ref, "network")
            sb = self._find(self.sandboxes, sb_ref, "sandbox")
            ep = next((e for e in self.endpoints_of_sandbox(sb.id) if e.network_id == net.id), None)  # type: ignore[union-attr]
            if ep is None:
                raise NotFound(f"sandbox {sb.name} is not connected to network {net.name}")  # type: ignore[union-attr]
            self._disconnect(net, sb, ep)  # type: ignore[arg-type]

    def _disconnect_quiet(self, net: Network, sb: Sandbox) -> None:
        ep = next((e for e in self.endpoints_of_sandbox(sb.id) if e.network_id == net.id), None)
        if ep is not None:
            self._disconnect(net, sb, ep)

    def _disconnect(self, net: Network, sb: Sandbox, ep: Endpoint) -> None:
        """Leave, backwards.  Carries on past failures (a vanished sandbox,
        links already gone) so that nothing is left half-removed."""
        ep.state = "deleting"
        self._commit(endpoints=[ep])
        driver = self._driver(net.driver)
        cluster = self.cluster if net.scope == GLOBAL and self.cluster is not None else None
        errors = self._collect(
            lambda: self._unpublish(sb, ep),
            lambda: self._remove_dns(net, sb, ep) if sb.key != HANDOFF else None,
            lambda: driver.leave(net, ep, sb.key),
            lambda: driver.delete_endpoint(net, ep),
        )
        if cluster is not None:  # record withdrawn and addresses released in one txn
            errors += self._collect(lambda: cluster.detach_endpoint(  # type: ignore[attr-defined]
                net.id, ep.id, [(c.pool_id, a) for c, a in endpoint_pools(net, ep)]))
        else:
            self._release_addresses(net, ep)
        self._forget_endpoint(ep)
        crashpoint("disconnect:forgotten")
        if sb.state != "deleting":
            errors += self._collect(
                lambda: self._update_gateway(sb) if sb.key != HANDOFF else None, lambda: self._write_files(sb)
            )
        if errors:
            log.warning("disconnect of %s from %s had errors: %s", sb.name, net.name, errors)

    def _release_addresses(self, net: Network, ep: Endpoint) -> None:
        for pool, addr in endpoint_pools(net, ep):
            self._ipam_for(net).release_address(pool.pool_id, addr)

    @staticmethod
    def _collect(*steps: Callable[[], object]) -> list[str]:
        errors = []
        for step in steps:
            try:
                step()
            except Exception as exc:  # teardown goes on; errors reported together
                errors.append(f"{type(exc).__name__}: {exc}")
        return errors

    # ------------------------------------------------------ gateway & ports

    def gateway_endpoint(self, sb: Sandbox) -> Endpoint | None:
        """Docker's rule: gateway priority, then not internal, then
        dual-stack, then network name."""
        candidates = [
            e for e in self.endpoints_of_sandbox(sb.id)
            if e.state != "deleting" and (e.driver_state.get("gateway4") or e.driver_state.get("gateway6"))
        ]
        if not candidates:
            return None

        def key(e: Endpoint) -> tuple:
            n = self.networks[e.network_id]
            dual = bool(e.driver_state.get("gateway4")) and bool(e.driver_state.get("gateway6"))
            return (-e.gw_priority, n.internal, not dual, n.name)

        return min(candidates, key=key)

    def _update_gateway(self, sb: Sandbox) -> None:
        """Point the default routes at the gateway endpoint and keep the
        sandbox's published ports on it."""
        gw = self.gateway_endpoint(sb)
        current = next((e for e in self.endpoints_of_sandbox(sb.id) if e.driver_state.get("is_gateway")), None)
        if gw is not None and current is gw:
            return  # routes and ports already where they belong
        rtnl = self._rtnl(sb)
        oif = (self._sandbox_ifindex.get(gw.id) or rtnl.link_index(gw.ifname)) if gw is not None else 0
        for key, default in (("gateway4", "0.0.0.0/0"), ("gateway6", "::/0")):
            addr = str(gw.driver_state.get(key, "")) if gw else ""
            if addr:
                rtnl.replace_route(default, addr, oif or 0)
            else:
                rtnl.delete_route(default)
        if current is not None and current is not gw:
            self._unpublish(sb, current)
            current.driver_state.pop("is_gateway", None)
            self._commit(endpoints=[current])
        if gw is not None and current is not gw:
            gw.driver_state["is_gateway"] = True
            self._publish(sb, gw)
            # Stored now: a disconnect hands the gateway (and the published
            # ports) to an endpoint that no later commit of this operation saves.
            self._commit(endpoints=[gw])

    def _port_rules(self, sb: Sandbox, ep: Endpoint) -> object | None:
        net = self.networks.get(ep.network_id)
        if net is None or not sb.ports or not self._driver(net.driver).capability.publishes_ports:
            return None
        if net.internal:
            return None
        from netstack.kernel.firewall import PortRules

        cfg = self._driver(net.driver).config(net)  # type: ignore[attr-defined]
        bindings = tuple(
            replace(b, host_ip=cfg.host_binding_ipv4) if not b.host_ip and cfg.host_binding_ipv4 else b
            for b in sb.ports
        )
        return PortRules(
            endpoint_id=ep.id, bridge=str(net.driver_state["bridge"]),
            ipv4=ep.ipv4.split("/")[0] if ep.ipv4 else "", ipv6=ep.ipv6.split("/")[0] if ep.ipv6 else "",
            bindings=bindings,
        )

    def _publish(self, sb: Sandbox, ep: Endpoint) -> None:
        rules = self._port_rules(sb, ep)
        if rules is not None:
            from netstack.kernel import links

            links.set_hairpin(str(ep.driver_state["host_ifname"]))
            self.firewall.add_ports(rules)  # type: ignore[attr-defined]
            ep.ports = list(rules.bindings)  # type: ignore[attr-defined]

    def _unpublish(self, sb: Sandbox, ep: Endpoint) -> None:
        if not ep.driver_state.get("is_gateway"):
            return
        rules = self._port_rules(sb, ep)
        if rules is not None:
            self.firewall.remove_ports(rules)  # type: ignore[attr-defined]
        ep.ports = []

    # -------------------------------------------------------------------- DNS

    def _dns_names(self, sb: Sandbox, ep: Endpoint) -> list[str]:
        return dns_names(sb.name, sb.hostname, ep.aliases)

    def _add_dns(self, net: Network, sb: Sandbox, ep: Endpoint) -> None:
        if self.dns is None:
            return
        self.dns.add_endpoint(net, sb, ep, self._dns_names(sb, ep), self.endpoints_of_sandbox(sb.id))  # type: ignore[attr-defined]

    def _remove_dns(self, net: Network, sb: Sandbox, ep: Endpoint) -> None:
        if self.dns is None:
            return
        remaining = [e for e in self.endpoints_of_sandbox(sb.id) if e.id != ep.id]
        self.dns.remove_endpoint(net, sb, ep, remaining)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ store

    def _commit(self, networks: Iterable[Network] = (), sandboxes: Iterable[Sandbox] = (),
                endpoints: Iterable[Endpoint] = ()) -> None:
        with self.store.transaction() as tx:
            for n in networks:
                tx.put_network(n)
                self.networks[n.id] = n
            for s in sandboxes:
                tx.put_sandbox(s)
                self.sandboxes[s.id] = s
            for e in endpoints:
                tx.put_endpoint(e)

    # ---------------------------------------------------------------- start-up

    def start(self) -> list[str]:
        """Load the store, replay IPAM, finish or undo interrupted
        operations, repair drift with the kernel, and make sure the
        predefined networks exist.  Returns what it repaired."""
        from netstack.controller_recovery import recover

        with self.lock:
            self.repairs = recover(self)
            for name, driver in PREDEFINED_DRIVERS.items():
                if not any(n.name == name for n in self.networks.values()):
                    self._create_network(NetworkCreate(name=name, driver=driver), predefined=True)
            return self.repairs

    def repair(self) -> list[str]:
        """`pynet system repair`: the start-up pass again, on a live daemon,
        under the lock: re-read the store, rebuild IPAM from it (a fresh
        allocator, as at start-up), finish interrupted operations, fix
        drift with the kernel.  Returns what it repaired."""
        from netstack.controller_recovery import recover

        with self.lock:
            self.ipam = type(self.ipam)()
            return recover(self)

    def close(self) -> None:
        self._settle()
        self.store.close()


def endpoint_pools(net: Network, ep: Endpoint) -> list[tuple[IpamConfig, ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """Each of the endpoint's addresses with the pool of `net` it came from."""
    out = []
    for cidr, configs in ((ep.ipv4, net.ipv4), (ep.ipv6, net.ipv6)):
        if not cidr:
            continue
        addr = ipaddress.ip_interface(cidr).ip
        for c in configs:
            if addr in ipaddress.ip_network(c.subnet):
                out.append((c, addr))
                break
    return out


def _bind_netns(source: str, target: str) -> None:
    from netstack.kernel import netns

    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w"):
        pass
    try:
        netns.mount(source, target, None, netns.MS_BIND)
    except OSError as exc:
        os.unlink(target)
        raise InvalidParameter(f"cannot use the network namespace of {source}: {exc.strerror}") from exc
