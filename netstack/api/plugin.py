"""Docker's plugin protocols, served by pynetd: the libnetwork remote
NetworkDriver and the remote IpamDriver, so that a dockerd runs
``docker network create -d pynet --ipam-driver pynet ...`` on pynet.

HTTP POST + JSON on a UNIX socket in dockerd's plugin directory
(``pynetd --plugin-socket /run/docker/plugins/pynet.sock``; the file's name
is the plugin's name).  Mapping, with no state of the plugin's own beyond
the IPAM allocator:

    CreateNetwork    a pynet bridge network ``dk-<network id 12>`` with
                     docker's pools and gateways (label com.docker.network.id)
    CreateEndpoint   a pynet sandbox ``dk-<endpoint id 12>`` with key
                     HANDOFF (netstack.sandbox), connected with docker's
                     address and MAC: a veth whose both ends stay in pynetd's
                     namespace, the peer named ``pnd<endpoint id 12>``
    Join             that peer as SrcName, DstPrefix "eth", the gateway;
                     docker moves and configures it
    Leave            nothing (docker moves the interface back)
    DeleteEndpoint   the sandbox goes (force): veth, address
    DeleteNetwork    the network goes

IPAM: an allocator of the plugin's own (pools and addresses docker asks
for), which avoids the subnets of pynet's networks and the host's routes
when it picks a default pool; CreateNetwork/CreateEndpoint then reserve the
same pool and addresses in pynet's IPAM.

State across a pynetd restart.  dockerd keeps the PoolIDs and addresses it
was given and never asks again (we answer RequiresRequestReplay: false), so
the plugin's allocator is kept in pynet's store: tables ``plugin_pools``
(docker's PoolID -> what was asked and what was given, the reference count
of an explicit pool) and ``plugin_addresses``.  Every IPAM call changes the
allocator and then writes its rows in one transaction; if the write fails
the allocator change is undone, so memory never holds what the file does
not.  At start the allocator is rebuilt from the tables (a row that no
longer fits is logged and left alone, never guessed at).  The driver side
needs nothing of its own: networks and handoff sandboxes are ordinary
controller objects in the store, and start-up recovery keeps a handoff
sandbox (its namespace is docker's, so there is nothing for pynet to see)
with its veth, which docker's container still holds.  A kill between a
commit and the reply leaves an address (or pool) docker never learnt of;
it goes when docker releases the pool.

Errors: a request that cannot be decoded is a 400, an unknown method a 404
(libnetwork takes it as "not implemented"), a failure a 200 with
``{"Err": ...}`` (NetworkDriver) or ``{"Error": ...}`` (IpamDriver), as
libnetwork's remote.md and ipam.md ask; never a traceback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from netstack.errors import Internal, InvalidParameter, NotFound, PynetError
from netstack.ipamapi import GLOBAL, LOCAL, PoolRequest
from netstack.requests import Attachment, EndpointConfig, NetworkCreate, SandboxCreate, SubnetRequest
from netstack.sandbox import HANDOFF

log = logging.getLogger("pynet.plugin")

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
GENERIC = "com.docker.network.generic"
GATEWAY_REQUEST = "com.docker.network.gateway"
LABEL_NETWORK = "com.docker.network.id"
LABEL_ENDPOINT = "com.docker.endpoint.id"


def network_name(network_id: str) -> str:
    return f"dk-{network_id[:12]}"


def sandbox_name(endpoint_id: str) -> str:
    return f"dk-{endpoint_id[:12]}"


def peer_ifname(endpoint_id: str) -> str:
    return f"pnd{endpoint_id[:12]}"


class BadRequest(Exception):
    """The request could not be decoded: a 400."""


def _reply(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type=CONTENT_TYPE)


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key) or ""
    if not isinstance(value, str):
        raise BadRequest(f"field {key} must be a string")
    return value


def _plain(cidr: str) -> str:
    return cidr.split("/")[0] if cidr else ""


class PluginApi:
    def __init__(self, controller: Any, ipam: Any = None) -> None:
        self.ctrl = controller
        if ipam is None:
            from netstack.ipam import DefaultIpam

            ipam = DefaultIpam()
        self.ipam = ipam
        self._explicit: dict[tuple[str, str, str, bool], tuple[str, int]] = {}  # request -> (pool id, refs)
        self._requests: dict[str, dict[str, Any]] = {}   # pool id -> its stored row
        self.repairs: list[str] = []
        with self.ctrl.lock:
            self._restore()

    # ---------------------------------------------------------------- state

    def _restore(self) -> None:
        """Rebuild the allocator from the store: every pool docker holds,
        then every address it was given."""
        pools, addresses = self.ctrl.store.load_plugin_ipam()

        def note(msg: str) -> None:
            log.warning("plugin IPAM: %s", msg)
            self.repairs.append(msg)

        for pool_id, row in pools.items():
            try:
                got = self.ipam.request_pool(PoolRequest(
                    address_space=GLOBAL if row["space"] == GLOBAL else LOCAL,
                    pool=ipaddress.ip_network(row["network"]),
                    sub_pool=ipaddress.ip_network(row["sub_pool"]) if row.get("sub_pool") else None,
                    v6=bool(row["v6"]),
                ))
            except (PynetError, KeyError, TypeError, ValueError) as exc:
                note(f"pool {pool_id} not restored: {exc}")
                continue
            if got.pool_id != pool_id:
                self.ipam.release_pool(got.pool_id)
                note(f"pool {pool_id} not restored: the allocator names it {got.pool_id}")
                continue
            self._requests[pool_id] = row
            request = row.get("request") or ["", "", "", False]
            if request[1]:   # an explicit pool: asked again, the same PoolID (refs counts them)
                key = (str(request[0]), str(request[1]), str(request[2]), bool(request[3]))
                self._explicit[key] = (pool_id, int(row.get("refs", 1)))
        for pool_id, addrs in addresses.items():
            if pool_id not in self._requests:
                if pool_id not in pools:
                    note(f"{len(addrs)} address(es) of unknown pool {pool_id} ignored")
                continue
            for a in addrs:
                try:
                    self.ipam.request_address(pool_id, ipaddress.ip_address(a))
                except (PynetError, ValueError) as exc:
                    note(f"address {a} of pool {pool_id} not restored: {exc}")
        if pools:
            log.info("plugin IPAM: %d pool(s), %d address(es) restored", len(self._requests),
                     sum(len(v) for k, v in addresses.items() if k in self._requests))

    def _write(self, undo: Callable[[], Any], fn: Callable[[Any], None]) -> None:
        """One transaction for one IPAM call; `undo` reverts the allocator
        when the store refuses."""
        try:
            with self.ctrl.store.transaction() as tx:
                fn(tx)
        except BaseException as exc:
            undo()
            if isinstance(exc, PynetError):
                raise
            raise Internal(f"the plugin's IPAM state could not be stored: {exc}") from exc

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        def locked() -> Any:
            with self.ctrl.lock:
                return fn(*args)

        return await asyncio.get_running_loop().run_in_executor(None, locked)

    # -------------------------------------------------------------- driver

    def create_network(self, b: dict[str, Any]) -> dict[str, Any]:
        nid = _str(b, "NetworkID")
        if not nid:
            raise InvalidParameter("NetworkID is required")
        options = b.get("Options") or {}
        generic = options.get(GENERIC) or {}
        if not isinstance(generic, dict):
            raise InvalidParameter(f"option {GENERIC} must be an object")
        subnets = []
        for data in (b.get("IPv4Data") or []) + (b.get("IPv6Data") or []):
            aux = tuple(sorted((k, _plain(v)) for k, v in (data.get("AuxAddresses") or {}).items()))
            subnets.append(SubnetRequest(subnet=data.get("Pool") or "", gateway=_plain(data.get("Gateway") or ""),
                                         aux_addresses=aux))
        req = NetworkCreate(
            name=network_name(nid), driver="bridge", subnets=tuple(subnets),
            enable_ipv6=bool(b.get("IPv6Data")), internal=str(options.get("com.docker.network.internal", "")).lower() == "true",
            options=tuple(sorted((str(k), str(v)) for k, v in generic.items())),
            labels=((LABEL_NETWORK, nid),),
        )
        self.ctrl.create_network(req)
        return {}

    def delete_network(self, b: dict[str, Any]) -> dict[str, Any]:
        try:
            self.ctrl.delete_network(network_name(_str(b, "NetworkID")))
        except NotFound:
            pass
        return {}

    def create_endpoint(self, b: dict[str, Any]) -> dict[str, Any]:
        nid, eid = _str(b, "NetworkID"), _str(b, "EndpointID")
        if not eid:
            raise InvalidParameter("EndpointID is required")
        iface = b.get("Interface") or {}
        config = EndpointConfig(
            ipv4=_plain(iface.get("Address") or ""), ipv6=_plain(iface.get("AddressIPv6") or ""),
            mac=iface.get("MacAddress") or "", ifname=peer_ifname(eid),
        )
        sb = self.ctrl.create_sandbox(SandboxCreate(
            name=sandbox_name(eid), key=HANDOFF, networks=(Attachment(network_name(nid), config),),
            labels=((LABEL_NETWORK, nid), (LABEL_ENDPOINT, eid)),
        ))
        [ep] = self.ctrl.endpoints_of_sandbox(sb.id)
        # Report only what docker did not give: it refuses changed values.
        out: dict[str, str] = {}
        if not iface.get("MacAddress"):
            out["MacAddress"] = ep.mac
        if not iface.get("Address") and ep.ipv4:
            out["Address"] = ep.ipv4
        if not iface.get("AddressIPv6") and ep.ipv6:
            out["AddressIPv6"] = ep.ipv6
        return {"Interface": out} if out else {}

    def _endpoint(self, eid: str) -> Any:
        sb = self.ctrl.sandbox(sandbox_name(eid))
        eps = self.ctrl.endpoints_of_sandbox(sb.id)
        if not eps:
            raise NotFound(f"endpoint {eid} has no network")
        return eps[0]

    def delete_endpoint(self, b: dict[str, Any]) -> dict[str, Any]:
        try:
            self.ctrl.delete_sandbox(sandbox_name(_str(b, "EndpointID")), force=True)
        except NotFound:
            pass
        return {}

    def endpoint_info(self, b: dict[str, Any]) -> dict[str, Any]:
        ep = self._endpoint(_str(b, "EndpointID"))
        return {"Value": {"ifname": ep.ifname, "host_ifname": str(ep.driver_state.get("host_ifname", "")),
                          "mac": ep.mac, "ipv4": ep.ipv4, "ipv6": ep.ipv6}}

    def join(self, b: dict[str, Any]) -> dict[str, Any]:
        ep = self._endpoint(_str(b, "EndpointID"))
        return {
            "InterfaceName": {"SrcName": ep.ifname, "DstPrefix": "eth"},
            "Gateway": str(ep.driver_state.get("gateway4") or ""),
            "GatewayIPv6": str(ep.driver_state.get("gateway6") or ""),
            "StaticRoutes": [],
            "DisableGatewayService": False,
        }

    # ---------------------------------------------------------------- IPAM

    def request_pool(self, b: dict[str, Any]) -> dict[str, Any]:
        space, pool, sub = _str(b, "AddressSpace") or LOCAL, _str(b, "Pool"), _str(b, "SubPool")
        v6 = bool(b.get("V6"))
        from netstack import validation

        key = (space, pool, sub, v6)
        if pool and key in self._explicit:
            pool_id, refs = self._explicit[key]
            row = {**self._requests[pool_id], "refs": refs + 1}
            self._write(lambda: None, lambda tx: tx.put_plugin_pool(pool_id, row))
            self._explicit[key] = (pool_id, refs + 1)
            self._requests[pool_id] = row
            return {"PoolID": pool_id, "Pool": str(self.ipam.pools()[pool_id]), "Data": {}}
        taken = [ipaddress.ip_network(c.subnet) for n in self.ctrl.list_networks() for c in n.ipv4 + n.ipv6]
        sub_pool = validation.parse_subnet(sub) if sub else None
        got = self.ipam.request_pool(PoolRequest(
            address_space=GLOBAL if space == GLOBAL else LOCAL,
            pool=validation.parse_subnet(pool) if pool else None,
            sub_pool=sub_pool, v6=v6,
            exclude=() if pool else tuple(taken + self.ctrl._host_routes(GLOBAL if space == GLOBAL else LOCAL)),
        ))
        if pool:
            for other in taken:
                if other.version == got.network.version and other.overlaps(got.network):
                    self.ipam.release_pool(got.pool_id)
                    raise InvalidParameter(f"pool {pool} overlaps with pynet network subnet {other}")
        row = {
            "space": GLOBAL if space == GLOBAL else LOCAL, "network": str(got.network),
            "sub_pool": str(sub_pool) if sub_pool else "", "v6": v6,
            # what docker asked, for an explicit pool asked again (refs counts them)
            "request": [space, pool, sub, v6], "refs": 1,
        }
        self._write(lambda: self.ipam.release_pool(got.pool_id), lambda tx: tx.put_plugin_pool(got.pool_id, row))
        self._requests[got.pool_id] = row
        if pool:
            self._explicit[key] = (got.pool_id, 1)
        return {"PoolID": got.pool_id, "Pool": str(got.network), "Data": {}}

    def release_pool(self, b: dict[str, Any]) -> dict[str, Any]:
        pool_id = _str(b, "PoolID")
        for key, (pid, refs) in list(self._explicit.items()):
            if pid == pool_id:
                if refs > 1:
                    row = {**self._requests[pool_id], "refs": refs - 1}
                    self._write(lambda: None, lambda tx: tx.put_plugin_pool(pool_id, row))
                    self._explicit[key] = (pid, refs - 1)
                    self._requests[pool_id] = row
                    return {}
        # The rows first: nothing to undo if the store refuses.
        self._write(lambda: None, lambda tx: tx.delete_plugin_pool(pool_id))
        for key, (pid, _) in list(self._explicit.items()):
            if pid == pool_id:
                del self._explicit[key]
        self._requests.pop(pool_id, None)
        self.ipam.release_pool(pool_id)
        return {}

    def request_address(self, b: dict[str, Any]) -> dict[str, Any]:
        pool_id, address = _str(b, "PoolID"), _str(b, "Address")
        network = self.ipam.pools().get(pool_id)
        if network is None:
            raise NotFound(f"pool {pool_id} not found")
        options = b.get("Options") or {}
        gateway = options.get("RequestAddressType") == GATEWAY_REQUEST
        from netstack import validation

        preferred = validation.parse_address(address, "address") if address else None
        got = self.ipam.request_address(pool_id, preferred, gateway=gateway and preferred is None)
        self._write(lambda: self.ipam.release_address(pool_id, got),
                    lambda tx: tx.put_plugin_address(pool_id, str(got)))
        return {"Address": f"{got}/{network.prefixlen}", "Data": {}}

    def release_address(self, b: dict[str, Any]) -> dict[str, Any]:
        pool_id, address = _str(b, "PoolID"), _str(b, "Address")
        if pool_id in self.ipam.pools() and address:
            addr = ipaddress.ip_address(_plain(address))
            self.ipam.release_address(pool_id, addr)
            self._write(lambda: self.ipam.request_address(pool_id, addr),
                        lambda tx: tx.delete_plugin_address(pool_id, str(addr)))
        return {}


Method = Callable[[dict[str, Any]], dict[str, Any]]


def make_plugin_app(controller: Any, ipam: Any = None) -> web.Application:
    api = PluginApi(controller, ipam)
    driver: dict[str, Method | dict[str, Any]] = {
        "GetCapabilities": {"Scope": "local", "ConnectivityScope": "local"},
        "CreateNetwork": api.create_network,
        "DeleteNetwork": api.delete_network,
        "AllocateNetwork": {"Options": {}},
        "FreeNetwork": {},
        "CreateEndpoint": api.create_endpoint,
        "EndpointOperInfo": api.endpoint_info,
        "DeleteEndpoint": api.delete_endpoint,
        "Join": api.join,
        "Leave": {},
        "DiscoverNew": {},
        "DiscoverDelete": {},
        "ProgramExternalConnectivity": {},
        "RevokeExternalConnectivity": {},
    }
    ipam_methods: dict[str, Method | dict[str, Any]] = {
        "GetCapabilities": {"RequiresMACAddress": False, "RequiresRequestReplay": False},
        "GetDefaultAddressSpaces": {"LocalDefaultAddressSpace": LOCAL, "GlobalDefaultAddressSpace": GLOBAL},
        "RequestPool": api.request_pool,
        "ReleasePool": api.release_pool,
        "RequestAddress": api.request_address,
        "ReleaseAddress": api.release_address,
    }

    def handler(method: Method | dict[str, Any], err_key: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            try:
                raw = await request.read()
                body = json.loads(raw) if raw.strip() else {}
                if not isinstance(body, dict):
                    raise BadRequest("expected a JSON object")
                if isinstance(method, dict):
                    return _reply(method)
                return _reply(await api.call(method, body))
            except (BadRequest, ValueError, UnicodeDecodeError) as exc:
                return _reply({err_key: f"bad request to {request.path}: {exc}"}, 400)
            except PynetError as exc:
                return _reply({err_key: exc.message})
            except Exception as exc:  # a bug: logged with its traceback, answered in one line
                log.exception("plugin call %s failed", request.path)
                return _reply({err_key: f"internal error: {type(exc).__name__}: {exc}"})

        return handle

    async def activate(request: web.Request) -> web.Response:
        return _reply({"Implements": ["NetworkDriver", "IpamDriver"]})

    async def unknown(request: web.Request) -> web.Response:
        key = "Error" if request.path.startswith("/IpamDriver.") else "Err"
        return _reply({key: f"{request.path} is not implemented by pynet"}, 404)

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/Plugin.Activate", activate)
    for name, m in driver.items():
        app.router.add_post(f"/NetworkDriver.{name}", handler(m, "Err"))
    for name, m in ipam_methods.items():
        app.router.add_post(f"/IpamDriver.{name}", handler(m, "Error"))
    app.router.add_route("*", "/{tail:.*}", unknown)
    return app
