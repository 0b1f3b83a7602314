"""Wire shapes: Docker Engine API JSON <-> pynet's typed requests and model.

Parsing is strict about types (a wrong type is a 400 naming the field) and
lenient about unknown fields, as Docker's daemon is."""

from __future__ import annotations

from typing import Any

from netstack.endpoint import Endpoint
from netstack.errors import InvalidParameter
from netstack.network import Network
from netstack.requests import (
    Attachment, EndpointConfig, NetworkCreate, SandboxCreate, SubnetRequest,
)
from netstack.sandbox import Sandbox


def _get(body: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise InvalidParameter(f"field {key} must be of type {names}, got {type(value).__name__}")
    return value


def _str_map(body: dict[str, Any], key: str) -> tuple[tuple[str, str], ...]:
    m = _get(body, key, dict, {})
    for k, v in m.items():
        if not isinstance(v, str):
            raise InvalidParameter(f"field {key}[{k}] must be a string")
    return tuple(sorted(m.items()))


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidParameter(f"{what}: expected a JSON object")
    return body


def network_create(body: Any) -> NetworkCreate:
    body = _object(body, "network create")
    ipam = _object(_get(body, "IPAM", dict, {}), "IPAM")
    subnets = []
    for cfg in _get(ipam, "Config", list, []):
        cfg = _object(cfg, "IPAM.Config entry")
        subnets.append(SubnetRequest(
            subnet=_get(cfg, "Subnet", str, ""), ip_range=_get(cfg, "IPRange", str, ""),
            gateway=_get(cfg, "Gateway", str, ""), aux_addresses=_str_map(cfg, "AuxiliaryAddresses"),
        ))
    options = dict(_str_map(body, "Options"))
    enable_ipv6 = _get(body, "EnableIPv6", bool, False)
    if options.pop("com.docker.network.enable_ipv6", "false").lower() == "true":
        enable_ipv6 = True
    return NetworkCreate(
        name=_get(body, "Name", str, ""), driver=_get(body, "Driver", str, "") or "bridge",
        scope=_get(body, "Scope", str, ""), internal=_get(body, "Internal", bool, False),
        attachable=_get(body, "Attachable", bool, False), ingress=_get(body, "Ingress", bool, False),
        enable_ipv4=_get(body, "EnableIPv4", bool, True), enable_ipv6=enable_ipv6,
        ipam_driver=_get(ipam, "Driver", str, "") or "default", ipam_options=_str_map(ipam, "Options"),
        subnets=tuple(subnets), options=tuple(sorted(options.items())), labels=_str_map(body, "Labels"),
    )


def endpoint_config(body: Any) -> EndpointConfig:
    body = _object(body or {}, "EndpointConfig")
    ipam = _object(_get(body, "IPAMConfig", dict, {}), "IPAMConfig")
    aliases = _get(body, "Aliases", list, [])
    if not all(isinstance(a, str) for a in aliases):
        raise InvalidParameter("field Aliases must be a list of strings")
    return EndpointConfig(
        ipv4=_get(ipam, "IPv4Address", str, ""), ipv6=_get(ipam, "IPv6Address", str, ""),
        aliases=tuple(aliases), mac=_get(body, "MacAddress", str, ""),
        gw_priority=_get(body, "GwPriority", int, 0), ifname=_get(body, "IfName", str, ""),
    )


def connect(body: Any) -> tuple[str, EndpointConfig]:
    body = _object(body, "connect")
    container = _get(body, "Container", str, "")
    if not container:
        raise InvalidParameter("field Container (a sandbox name or id) is required")
    return container, endpoint_config(body.get("EndpointConfig"))


def disconnect(body: Any) -> tuple[str, bool]:
    body = _object(body, "disconnect")
    container = _get(body, "Container", str, "")
    if not container:
        raise InvalidParameter("field Container (a sandbox name or id) is required")
    return container, _get(body, "Force", bool, False)


def sandbox_create(body: Any) -> SandboxCreate:
    body = _object(body, "sandbox create")
    attachments = []
    for a in _get(body, "Networks", list, []):
        if isinstance(a, str):
            attachments.append(Attachment(network=a))
            continue
        a = _object(a, "Networks entry")
        aliases = _get(a, "Aliases", list, [])
        attachments.append(Attachment(
            network=_get(a, "Network", str, ""),
            config=EndpointConfig(
                ipv4=_get(a, "IPv4Address", str, ""), ipv6=_get(a, "IPv6Address", str, ""),
                aliases=tuple(str(x) for x in aliases), mac=_get(a, "MacAddress", str, ""),
                gw_priority=_get(a, "GwPriority", int, 0), ifname=_get(a, "IfName", str, ""),
            ),
        ))
    ports = _get(body, "Ports", list, [])
    if not all(isinstance(p, str) for p in ports):
        raise InvalidParameter("field Ports must be a list of strings like \"8080:80/tcp\"")
    pid = _get(body, "Pid", int, 0)
    if pid < 0:
        raise InvalidParameter(f"invalid Pid {pid}")
    return SandboxCreate(
        name=_get(body, "Name", str, ""), hostname=_get(body, "Hostname", str, ""),
        key=_get(body, "Key", str, ""), pid=pid, networks=tuple(attachments),
        ports=tuple(ports), labels=_str_map(body, "Labels"),
    )


def auto_remove(body: dict[str, Any], req: SandboxCreate) -> bool:
    """AutoRemove: remove the sandbox when its process (Pid) exits."""
    if not _get(body, "AutoRemove", bool, False):
        return False
    if not req.pid:
        raise InvalidParameter("AutoRemove needs a Pid: the sandbox is removed when that process exits")
    return True


# ------------------------------------------------------------------ responses

def ipam_config(net: Network) -> list[dict[str, Any]]:
    out = []
    for c in net.ipv4 + net.ipv6:
        entry: dict[str, Any] = {"Subnet": c.subnet}
        if c.ip_range:
            entry["IPRange"] = c.ip_range
        if c.gateway:
            entry["Gateway"] = c.gateway
        if c.aux_addresses:
            entry["AuxiliaryAddresses"] = dict(c.aux_addresses)
        out.append(entry)
    return out


def network(net: Network, endpoints: list[Endpoint] | None = None,
            sandboxes: dict[str, Sandbox] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": net.scope,
        "Driver": net.driver,
        "EnableIPv4": net.enable_ipv4,
        "EnableIPv6": net.enable_ipv6,
        "IPAM": {"Driver": net.ipam_driver, "Options": dict(net.ipam_options) or None, "Config": ipam_config(net)},
        "Internal": net.internal,
        "Attachable": net.attachable,
        "Ingress": net.ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": {},
        "Options": dict(net.options),
        "Labels": dict(net.labels),
    }
    if endpoints is not None:
        for ep in endpoints:
            out["Containers"][ep.sandbox_id] = {
                "Name": (sandboxes or {}).get(ep.sandbox_id, None).name if sandboxes and ep.sandbox_id in sandboxes else ep.name,
                "EndpointID": ep.id,
                "MacAddress": ep.mac,
                "IPv4Address": ep.ipv4,
                "IPv6Address": ep.ipv6,
                **({"LinkState": str(ep.driver_state["link_state"])} if "link_state" in ep.driver_state else {}),
            }
    return out


def sandbox(sb: Sandbox, endpoints: list[Endpoint], networks: dict[str, Network],
            hosts_path: str, resolv_path: str) -> dict[str, Any]:
    nets: dict[str, Any] = {}
    for ep in endpoints:
        net = networks.get(ep.network_id)
        if net is None:
            continue
        a4, _, p4 = ep.ipv4.partition("/")
        a6, _, p6 = ep.ipv6.partition("/")
        nets[net.name] = {
            "NetworkID": net.id,
            "EndpointID": ep.id,
            "MacAddress": ep.mac,
            "IPAddress": a4,
            "IPPrefixLen": int(p4) if p4 else 0,
            "Gateway": str(ep.driver_state.get("gateway4") or ""),
            "GlobalIPv6Address": a6,
            "GlobalIPv6PrefixLen": int(p6) if p6 else 0,
            "IPv6Gateway": str(ep.driver_state.get("gateway6") or ""),
            "Aliases": list(ep.aliases),
            "IfName": ep.ifname,
            "GwPriority": ep.gw_priority,
            "IsGateway": bool(ep.driver_state.get("is_gateway")),
            **({"LinkState": str(ep.driver_state["link_state"])} if "link_state" in ep.driver_state else {}),
        }
    ports: dict[str, list[dict[str, str]]] = {}
    for b in sb.ports:
        span = (b.container_port_end or b.container_port) - b.container_port
        for i in range(span + 1):
            ports.setdefault(f"{b.container_port + i}/{b.proto}", []).append(
                {"HostIp": b.host_ip or "0.0.0.0", "HostPort": str(b.host_port + i)}
            )
    return {
        "Id": sb.id,
        "Name": sb.name,
        "Hostname": sb.hostname,
        "Key": sb.key,
        "Created": sb.created,
        "ResolvConfPath": resolv_path,
        "HostsPath": hosts_path,
        "Labels": dict(sb.labels),
        "Networks": nets,
        "Ports": ports,
    }
