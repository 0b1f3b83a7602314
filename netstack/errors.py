"""Errors by kind, each mapped once to an HTTP status and a CLI exit code.

    PynetError
    ├── InvalidParameter   400  bad input: a name, a CIDR, an option, a port
    ├── Forbidden          403  allowed input, refused action (rm of `host`)
    ├── NotFound           404  no such network, sandbox or endpoint
    ├── Conflict           409  clashes with existing state (name, subnet, port)
    ├── Unavailable        503  a dependency is missing (kernel feature, etcd)
    └── Internal           500  a bug or an unexpected kernel answer

The daemon turns an error into ``{"message": str(err)}`` with ``http_status``;
the CLI prints ``Error response from daemon: <message>`` and exits with
``exit_code`` (1, as the docker CLI does for every daemon-side error).
Messages name the offending value.  Foreign exceptions (netlink, iptc,
sqlite) are translated at the module boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class PynetError(Exception):
    http_status = 500
    exit_code = 1

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class InvalidParameter(PynetError):
    http_status = 400


class Forbidden(PynetError):
    http_status = 403


class NotFound(PynetError):
    http_status = 404


class Conflict(PynetError):
    http_status = 409


class Unavailable(PynetError):
    http_status = 503


class Internal(PynetError):
    http_status = 500


#: status -> kind, for clients that rebuild a typed error from a response
BY_STATUS: dict[int, type[PynetError]] = {
    cls.http_status: cls
    for cls in (InvalidParameter, Forbidden, NotFound, Conflict, Unavailable, Internal)
}


def from_status(status: int, message: str) -> PynetError:
    return BY_STATUS.get(status, Internal)(message)
