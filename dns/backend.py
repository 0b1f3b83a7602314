"""The seam between the DNS wire handling and the name records.

The resolver (``resolver.py``) only ever asks a ``NameBackend``; the real
one is ``records.RecordTable``, and unit tests drive the resolver with a
dict-backed fake, so the dnslib handling is tested without the controller.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

#: (IPv4 addresses, IPv6 addresses), both in the order the backend prefers
Addresses = tuple[list[str], list[str]]


@runtime_checkable
class NameBackend(Protocol):
    """Names visible from each sandbox.

    Called from the DNS serving thread, concurrently with the controller's
    mutations, so an implementation must give a consistent answer without
    the caller holding any lock.
    """

    #: Bumped after every change that can alter an answer.  The server
    #: caches prebuilt responses per sandbox and drops them whenever this
    #: moves; a reader that sees the new value is guaranteed to get the new
    #: records (writers publish records first, then bump).
    generation: int

    def resolve(self, sandbox_id: str, name: str) -> Addresses | None:
        """Called for a query for `name` (no trailing dot, any case) from
        `sandbox_id`.  Returns the addresses of every endpoint that name
        denotes on the networks the sandbox is attached to (``NAME`` or
        ``NAME.NETWORK``), or None when no such name is visible there.  A
        name that exists in one family only returns an empty list for the
        other."""
        ...

    def resolve_ptr(self, sandbox_id: str, address: str) -> str | None:
        """Called for a PTR query; `address` is a canonical IPv4/IPv6
        string.  Returns ``name.network`` (no trailing dot) for an endpoint
        address on one of the sandbox's networks, or None."""
        ...

    def may_forward(self, sandbox_id: str) -> bool:
        """Called before forwarding a non-local name: False when the
        sandbox is attached to internal networks only (no way out), so the
        resolver answers NXDOMAIN instead of asking the host's upstreams."""
        ...
