"""pynet's API as an OpenAPI 3 document, served by pynetd at GET /openapi.json.

It describes what pynetd accepts (the Docker Engine API's network
endpoints, pynet's sandboxes, `/system/repair`, `/oci/hooks/{hook}`), field by field as
`netstack.api.wire` parses them, and what it answers.  Every path is also
served under `/vX.Y/` (Docker's versioned prefix); the document lists the
unversioned form.  The API fuzz test (tests/e2e/test_api_fuzz.py) walks
this document, so a route added to the server without a description here
fails that test.
"""

from __future__ import annotations

from typing import Any

from netstack import __version__

_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_INT = {"type": "integer"}
_STRMAP = {"type": "object", "additionalProperties": _STR}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {400: "bad parameter", 403: "operation not allowed", 404: "no such object",
             409: "conflict", 500: "server error", 503: "unavailable"}
    return {str(c): {"description": words[c], **_json(_ERROR)} for c in codes}


def _id_param(what: str) -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "description": f"{what} name, id or unique id prefix",
            "schema": _STR}


_FILTERS = {"name": "filters", "in": "query", "required": False,
            "description": 'JSON map of filter name to list of values, e.g. {"name":["web"]}',
            "schema": _STR}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["message"], "properties": {"message": _STR}},
    "IPAMConfig": {"type": "object", "properties": {
        "Subnet": _STR, "IPRange": _STR, "Gateway": _STR, "AuxiliaryAddresses": _STRMAP}},
    "NetworkCreate": {"type": "object", "properties": {
        "Name": _STR, "Driver": _STR, "Scope": _STR, "Internal": _BOOL, "Attachable": _BOOL,
        "Ingress": _BOOL, "EnableIPv4": _BOOL, "EnableIPv6": _BOOL, "Options": _STRMAP, "Labels": _STRMAP,
        "IPAM": {"type": "object", "properties": {
            "Driver": _STR, "Options": _STRMAP,
            "Config": {"type": "array", "items": {"$ref": "#/components/schemas/IPAMConfig"}}}}},
        "required": ["Name"]},
    "EndpointConfig": {"type": "object", "properties": {
        "IPAMConfig": {"type": "object", "properties": {"IPv4Address": _STR, "IPv6Address": _STR}},
        "Aliases": {"type": "array", "items": _STR}, "MacAddress": _STR, "GwPriority": _INT, "IfName": _STR}},
    "NetworkConnect": {"type": "object", "required": ["Container"], "properties": {
        "Container": _STR, "EndpointConfig": {"$ref": "#/components/schemas/EndpointConfig"}}},
    "NetworkDisconnect": {"type": "object", "required": ["Container"], "properties": {
        "Container": _STR, "Force": _BOOL}},
    "SandboxAttachment": {"type": "object", "properties": {
        "Network": _STR, "IPv4Address": _STR, "IPv6Address": _STR, "Aliases": {"type": "array", "items": _STR},
        "MacAddress": _STR, "GwPriority": _INT, "IfName": _STR}},
    "SandboxCreate": {"type": "object", "properties": {
        "Name": _STR, "Hostname": _STR, "Key": {**_STR, "description": "an existing netns path"},
        "Pid": {**_INT, "minimum": 0, "description": "attach the network namespace of this process"},
        "AutoRemove": {**_BOOL, "description": "with Pid: remove the sandbox when that process exits"},
        "Networks": {"type": "array", "items": {"oneOf": [_STR, {"$ref": "#/components/schemas/SandboxAttachment"}]}},
        "Ports": {"type": "array", "items": {**_STR, "example": "8080:80/tcp"}}, "Labels": _STRMAP}},
    "Network": {"type": "object", "properties": {
        "Name": _STR, "Id": _STR, "Created": _STR, "Scope": _STR, "Driver": _STR, "EnableIPv4": _BOOL,
        "EnableIPv6": _BOOL, "Internal": _BOOL, "Attachable": _BOOL, "Ingress": _BOOL,
        "IPAM": {"type": "object"}, "Containers": {"type": "object"}, "Options": _STRMAP, "Labels": _STRMAP}},
    "Sandbox": {"type": "object", "properties": {
        "Id": _STR, "Name": _STR, "Hostname": _STR, "Key": _STR, "Created": _STR, "ResolvConfPath": _STR,
        "HostsPath": _STR, "Labels": _STRMAP, "Networks": {"type": "object"}, "Ports": {"type": "object"}}},
    "CreateResponse": {"type": "object", "properties": {"Id": _STR, "Warning": _STR}},
    "OCIState": {"type": "object", "description": (
        "The container state an OCI runtime gives its hooks on stdin, verbatim. Annotations are read from it,"
        " else from <bundle>/config.json: pynet.networks (none: nothing to do), pynet.name, pynet.hostname,"
        " pynet.aliases, pynet.ip, pynet.mac, pynet.ports, pynet.resolv_conf=write"), "properties": {
        "ociVersion": _STR, "id": _STR, "status": _STR, "pid": {**_INT, "minimum": 0},
        "bundle": {**_STR, "description": "the bundle directory, as pynetd sees it"}, "annotations": _STRMAP}},
    "OCIHookResult": {"type": "object", "properties": {
        "Action": {**_STR, "enum": ["attached", "detached", "none"]},
        "Id": {**_STR, "description": "the sandbox made (attached), else empty"}}},
    "Repair": {"type": "object", "properties": {
        "Repairs": {"type": "array", "items": _STR, "description": "what the repair changed"},
        "Remaining": {"type": "array", "items": _STR,
                      "description": "invariant violations still found afterwards (empty: all hold)"}}},
}


def _op(summary: str, responses: dict[str, Any], *, params: list[dict[str, Any]] | None = None,
        body: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, **_json({"$ref": f"#/components/schemas/{body}"})}
    return op


def _ok(code: int, schema: dict[str, Any] | None = None, text: bool = False) -> dict[str, Any]:
    if text:
        return {str(code): {"description": "ok", "content": {"text/plain": {"schema": _STR}}}}
    return {str(code): {"description": "ok", **(_json(schema) if schema else {})}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


PATHS: dict[str, Any] = {
    "/_ping": {"get": _op("Ping", _ok(200, text=True)), "head": _op("Ping", _ok(200))},
    "/version": {"get": _op("Version", _ok(200, {"type": "object"}))},
    "/openapi.json": {"get": _op("This document", _ok(200, {"type": "object"}))},
    "/system/repair": {"post": _op(
        "Run the start-up recovery again on the live daemon, under the controller lock, and check the"
        " invariants afterwards", {**_ok(200, _ref("Repair")), **_errors(500)})},
    "/networks": {"get": _op("List networks", {**_ok(200, {"type": "array", "items": _ref("Network")}),
                                                **_errors(400, 500)}, params=[_FILTERS])},
    "/networks/create": {"post": _op("Create a network", {**_ok(201, _ref("CreateResponse")),
                                                           **_errors(400, 403, 404, 409, 500, 503)},
                                     body="NetworkCreate")},
    "/networks/prune": {"post": _op("Remove unused networks", {
        **_ok(200, {"type": "object", "properties": {"NetworksDeleted": {"type": "array", "items": _STR}}}),
        **_errors(400, 500)}, params=[_FILTERS])},
    "/networks/{id}": {
        "get": _op("Inspect a network", {**_ok(200, _ref("Network")), **_errors(400, 404, 500)},
                   params=[_id_param("network"), {"name": "verbose", "in": "query", "schema": _STR}]),
        "delete": _op("Remove a network", {"204": {"description": "removed"}, **_errors(400, 403, 404, 500)},
                      params=[_id_param("network")]),
    },
    "/networks/{id}/connect": {"post": _op("Connect a sandbox to a network", {
        **_ok(200), **_errors(400, 403, 404, 409, 500)}, params=[_id_param("network")], body="NetworkConnect")},
    "/networks/{id}/disconnect": {"post": _op("Disconnect a sandbox from a network", {
        **_ok(200), **_errors(400, 404, 500)}, params=[_id_param("network")], body="NetworkDisconnect")},
    "/sandboxes": {"get": _op("List sandboxes", {**_ok(200, {"type": "array", "items": _ref("Sandbox")}),
                                                  **_errors(400, 500)}, params=[_FILTERS])},
    "/sandboxes/create": {"post": _op("Create a sandbox (a network namespace), optionally connected", {
        **_ok(201, _ref("CreateResponse")), **_errors(400, 403, 404, 409, 500)}, body="SandboxCreate")},
    "/sandboxes/{id}": {
        "get": _op("Inspect a sandbox", {**_ok(200, _ref("Sandbox")), **_errors(400, 404, 500)},
                   params=[_id_param("sandbox")]),
        "delete": _op("Remove a sandbox", {"204": {"description": "removed"}, **_errors(400, 404, 409, 500)},
                      params=[_id_param("sandbox"), {"name": "force", "in": "query", "schema": _STR}]),
    },
    "/oci/hooks/{hook}": {"post": _op(
        "An OCI runtime hook: createRuntime (also prestart, createContainer) attaches the container's network"
        " namespace (by pid, removed when the process exits, else config.json's namespace path) to the networks"
        " its annotations name; poststop removes it (already gone is success). The body is what the runtime gives"
        " the hook on stdin (any Content-Type), so the hook can be `curl -sS --fail-with-body --unix-socket SOCK"
        " --data-binary @- http://pynet/oci/hooks/createRuntime`",
        {**_ok(200, _ref("OCIHookResult")), **_ok(201, _ref("OCIHookResult")),
         **_errors(400, 403, 404, 409, 500, 503)},
        params=[{"name": "hook", "in": "path", "required": True, "description": "the hook phase",
                 "schema": {**_STR, "enum": ["createRuntime", "prestart", "createContainer", "poststop"]}}],
        body="OCIState")},
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "pynet API", "version": __version__,
                 "description": "pynetd: the Docker Engine API for networks, plus sandboxes."
                                " Every path is also served under /vX.Y (API version prefix)."},
        "servers": [{"url": "http://localhost"}],
        "paths": PATHS,
        "components": {"schemas": SCHEMAS},
    }
