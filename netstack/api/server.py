"""pynetd's HTTP API: the Docker Engine API for networks, plus sandboxes.

aiohttp serves it on the event loop; every controller call runs in a worker
thread (the controller serializes them under its lock), so a slow kernel
call never stalls the loop or the DNS listeners.  Errors map to HTTP in one
place (`error_middleware`): a PynetError gives its status and
`{"message": ...}`; anything else is a 500 whose body names the error but
never carries a traceback (that goes to the log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
from typing import Any, Awaitable, Callable

from aiohttp import web

from netstack import __version__
from netstack.api import filters as flt
from netstack.api import wire
from netstack.errors import InvalidParameter, NotFound, PynetError

log = logging.getLogger("pynet.api")

API_VERSION = "1.47"
MIN_API_VERSION = "1.24"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _vtuple(v: str) -> tuple[int, int]:
    major, minor = v.split(".")
    return int(major), int(minor)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status, headers=_headers())


def _pidfd(pid: int) -> int:
    """A pidfd for `pid`, taken before the sandbox is made (so that a
    recycled pid can never be watched in its place)."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        raise NotFound(f"no process with pid {pid}") from None
    except OSError as exc:
        raise InvalidParameter(f"cannot watch process {pid} for AutoRemove: {exc.strerror}") from None


def _headers() -> dict[str, str]:
    return {
        "Api-Version": API_VERSION,
        "Server": f"pynet/{__version__} (linux)",
        "Ostype": "linux",
        "Docker-Experimental": "false",
    }


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return _error(exc.status, "page not found" if exc.status == 404 else exc.reason)
        raise
    except PynetError as exc:
        return _error(exc.http_status, exc.message)
    except Exception as exc:
        log.exception("internal error serving %s %s", request.method, request.path)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")
    for k, v in _headers().items():
        resp.headers.setdefault(k, v)
    return resp


class Api:
    def __init__(self, controller: Any, *, dns_server: Any = None) -> None:
        self.ctrl = controller
        self._exit_tasks: set[asyncio.Task[Any]] = set()

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: fn(*args, **kwargs))

    @staticmethod
    async def body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidParameter(f"invalid JSON in request body: {exc}") from None

    # ----------------------------------------------------------------- system

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(text="OK", headers={"Cache-Control": "no-cache, no-store, must-revalidate"})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({
            "Platform": {"Name": "pynet"},
            "Components": [{"Name": "pynet", "Version": __version__, "Details": {"ApiVersion": API_VERSION}}],
            "Version": __version__,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": f"python{platform.python_version()}",
            "Os": "linux",
            "Arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
            "KernelVersion": platform.release(),
            "BuildTime": "",
        })

    # --------------------------------------------------------------- networks

    def _network_json(self, net: Any, *, with_containers: bool) -> dict[str, Any]:
        eps = self.ctrl.endpoints_of_network(net.id) if with_containers else None
        return wire.network(net, eps, self.ctrl.sandboxes)

    async def networks_list(self, request: web.Request) -> web.Response:
        filters = flt.parse(request.query.get("filters", ""))
        flt.check(filters, flt.NETWORK_FILTERS)

        def run() -> list[dict[str, Any]]:
            with self.ctrl.lock:
                nets = [n for n in self.ctrl.list_networks() if flt.match_network(n, filters, self.ctrl)]
                return [self._network_json(n, with_containers=False) for n in nets]

        return web.json_response(await self.call(run))

    async def network_inspect(self, request: web.Request) -> web.Response:
        ref = request.match_info["id"]

        def run() -> dict[str, Any]:
            with self.ctrl.lock:
                return self._network_json(self.ctrl.network(ref), with_containers=True)

        return web.json_response(await self.call(run))

    async def network_create(self, request: web.Request) -> web.Response:
        req = wire.network_create(await self.body(request))
        net, warning = await self.call(self.ctrl.create_network, req)
        return web.json_response({"Id": net.id, "Warning": warning}, status=201)

    async def network_delete(self, request: web.Request) -> web.Response:
        await self.call(self.ctrl.delete_network, request.match_info["id"])
        return web.Response(status=204)

    async def networks_prune(self, request: web.Request) -> web.Response:
        filters = flt.parse(request.query.get("filters", ""))
        flt.check(filters, flt.PRUNE_FILTERS)
        keep = flt.prune_keep(filters)
        removed = await self.call(self.ctrl.prune_networks, keep)
        return web.json_response({"NetworksDeleted": removed})

    async def network_connect(self, request: web.Request) -> web.Response:
        container, cfg = wire.connect(await self.body(request))
        await self.call(self.ctrl.connect, request.match_info["id"], container, cfg)
        return web.Response(status=200)

    async def network_disconnect(self, request: web.Request) -> web.Response:
        container, force = wire.disconnect(await self.body(request))
        await self.call(self.ctrl.disconnect, request.match_info["id"], container, force=force)
        return web.Response(status=200)

    # -------------------------------------------------------------- sandboxes

    def _sandbox_json(self, sb: Any) -> dict[str, Any]:
        return wire.sandbox(
            sb, self.ctrl.endpoints_of_sandbox(sb.id), self.ctrl.networks,
            self.ctrl.sandbox_file(sb, "hosts"), self.ctrl.sandbox_file(sb, "resolv.conf"),
        )

    async def sandboxes_list(self, request: web.Request) -> web.Response:
        filters = flt.parse(request.query.get("filters", ""))
        flt.check(filters, flt.SANDBOX_FILTERS)

        def run() -> list[dict[str, Any]]:
            with self.ctrl.lock:
                return [self._sandbox_json(s) for s in self.ctrl.list_sandboxes() if flt.match_sandbox(s, filters)]

        return web.json_response(await self.call(run))

    async def sandbox_create(self, request: web.Request) -> web.Response:
        sb = await self._create_sandbox(await self.body(request))
        return web.json_response({"Id": sb.id, "Warnings": []}, status=201)

    async def _create_sandbox(self, body: Any) -> Any:
        """POST /sandboxes/create's work (also the OCI createRuntime hook's)."""
        req = wire.sandbox_create(body)
        pidfd = _pidfd(req.pid) if wire.auto_remove(body, req) else None
        try:
            sb = await self.call(self.ctrl.create_sandbox, req)
        except BaseException:
            if pidfd is not None:
                os.close(pidfd)
            raise
        if pidfd is not None:
            self._remove_on_exit(pidfd, sb.id)
        return sb

    def _remove_on_exit(self, pidfd: int, sandbox_id: str) -> None:
        """AutoRemove: start removing the sandbox as soon as its process exits.

        An OCI runtime runs the poststop hook (whose DELETE is what it
        waits for) only after the container's process is gone and the
        runtime has torn the container down; starting the detach at the
        exit overlaps it with that teardown and with the hook's own start.
        The DELETE still returns only once the sandbox is gone: it waits
        for the controller's lock, then finds nothing (or removes the
        sandbox itself if it comes first).  By id, so a later sandbox of
        the same name is never touched; a watch lost with a restart of
        pynetd only loses the head start."""
        loop = asyncio.get_running_loop()

        def exited() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            task = loop.create_task(self.call(self._remove_exited, sandbox_id))
            self._exit_tasks.add(task)
            task.add_done_callback(self._exit_tasks.discard)

        loop.add_reader(pidfd, exited)

    def _remove_exited(self, sandbox_id: str) -> None:
        try:
            self.ctrl.delete_sandbox(sandbox_id, force=True)
        except NotFound:
            pass  # removed already (the poststop hook came first)
        except Exception:
            log.exception("removing sandbox %s after its process exited", sandbox_id[:12])

    async def sandbox_inspect(self, request: web.Request) -> web.Response:
        ref = request.match_info["id"]

        def run() -> dict[str, Any]:
            with self.ctrl.lock:
                return self._sandbox_json(self.ctrl.sandbox(ref))

        return web.json_response(await self.call(run))

    async def sandbox_delete(self, request: web.Request) -> web.Response:
        force = request.query.get("force", "").lower() in ("1", "true")
        await self.call(self.ctrl.delete_sandbox, request.match_info["id"], force=force)
        return web.Response(status=204)

    # -------------------------------------------------------------- OCI hooks

    async def oci_hook(self, request: web.Request) -> web.Response:
        """POST /oci/hooks/{hook}: an OCI runtime's hook, its body the
        container state exactly as the runtime gives it on stdin (so that
        the hook itself can be curl).  `netstack.oci` reads the bundle's
        annotations; createRuntime attaches (AutoRemove by pid), poststop
        detaches by name ("already gone" is success)."""
        from netstack import oci

        hook = request.match_info["hook"]
        raw = await request.read()
        action = await self.call(lambda: oci.plan(hook, oci.decode_state(raw)))
        if action is None:
            return web.json_response({"Action": "none", "Id": ""})
        if isinstance(action, oci.Detach):
            def detach() -> None:
                try:
                    self.ctrl.delete_sandbox(action.name, force=True)
                except NotFound:
                    pass  # never attached, or removed already (AutoRemove)

            await self.call(detach)
            return web.json_response({"Action": "detached", "Id": ""})
        sb = await self._create_sandbox(action.body)
        if action.resolv_conf is not None:
            target = action.resolv_conf

            def write() -> None:
                try:
                    oci.write_resolv_conf(self.ctrl.sandbox_file(sb, "resolv.conf"), target)
                except BaseException as exc:
                    try:
                        self.ctrl.delete_sandbox(sb.id, force=True)
                    except NotFound:
                        pass
                    if isinstance(exc, OSError):
                        raise InvalidParameter(
                            f"OCI hook: cannot write {target}: {exc.strerror or exc}") from None
                    raise

            await self.call(write)
        return web.json_response({"Action": "attached", "Id": sb.id}, status=201)

    # ----------------------------------------------------------------- system

    async def openapi(self, request: web.Request) -> web.Response:
        from netstack.api.openapi import document

        return web.json_response(document())

    async def system_repair(self, request: web.Request) -> web.Response:
        """`pynet system repair`: the start-up recovery under the lock, then
        the invariant checker on what is left (netstack.invariants)."""
        def run() -> dict[str, Any]:
            with self.ctrl.lock:
                repairs = self.ctrl.repair()
                remaining: list[str] = []
                data_root = getattr(self.ctrl, "data_root", None)
                if data_root is not None and hasattr(self.ctrl, "exec_root"):
                    import os

                    from netstack import invariants

                    remaining = invariants.check(data_root, self.ctrl.exec_root, f"/proc/{os.getpid()}/ns/net")
                return {"Repairs": repairs, "Remaining": remaining}

        return web.json_response(await self.call(run))


@web.middleware
async def version_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """/vX.Y/path is served as /path, as Docker does; too new or too old is a 400."""
    version = request.match_info.get("version")
    if version:
        if _vtuple(version) > _vtuple(API_VERSION):
            return _error(400, f"client version {version} is too new. Maximum supported API version is {API_VERSION}")
        if _vtuple(version) < _vtuple(MIN_API_VERSION):
            return _error(
                400,
                f"client version {version} is too old. Minimum supported API version is {MIN_API_VERSION},"
                " please upgrade your client to a newer version",
            )
    return await handler(request)


def make_app(controller: Any) -> web.Application:
    api = Api(controller)
    app = web.Application(middlewares=[error_middleware, version_middleware], client_max_size=4 * 1024 * 1024)
    routes = [
        ("GET", "/_ping", api.ping),
        ("HEAD", "/_ping", api.ping),
        ("GET", "/version", api.version),
        ("GET", "/networks", api.networks_list),
        ("POST", "/networks/create", api.network_create),
        ("POST", "/networks/prune", api.networks_prune),
        ("GET", "/networks/{id}", api.network_inspect),
        ("DELETE", "/networks/{id}", api.network_delete),
        ("POST", "/networks/{id}/connect", api.network_connect),
        ("POST", "/networks/{id}/disconnect", api.network_disconnect),
        ("GET", "/sandboxes", api.sandboxes_list),
        ("POST", "/sandboxes/create", api.sandbox_create),
        ("GET", "/sandboxes/{id}", api.sandbox_inspect),
        ("DELETE", "/sandboxes/{id}", api.sandbox_delete),
        ("GET", "/openapi.json", api.openapi),
        ("POST", "/system/repair", api.system_repair),
        ("POST", "/oci/hooks/{hook}", api.oci_hook),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
        app.router.add_route(method, "/v{version:[0-9]+[.][0-9]+}" + path, handler)
    return app
