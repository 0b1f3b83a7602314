"""The local datastore: one SQLite file under the data root.

Domain objects are plain dataclasses; this module turns them into JSON rows
and back, and nothing else knows SQL.  Every controller operation is one
transaction (`with store.transaction() as tx:`), so after `kill -9` at any
moment the file holds either the state before or after each write.  WAL
with synchronous=NORMAL is durable against a process crash (a power loss
may drop the last transactions, never corrupt the file).

IPAM keeps nothing here: allocations are the addresses of stored networks
and endpoints, replayed into the allocator at start-up.  The one exception
is the Docker IPAM plugin (netstack.api.plugin): dockerd holds the pools and
addresses it asked for and never replays them, so the plugin keeps them in
``plugin_pools`` and ``plugin_addresses`` (schema version 2).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
from typing import Any, Iterator

from netstack.endpoint import Endpoint, PortBinding
from netstack.errors import Internal
from netstack.network import IpamConfig, Network
from netstack.sandbox import Sandbox

SCHEMA_VERSION = 2   # 2: plugin_pools, plugin_addresses (created on open; a v1 file is upgraded)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS networks (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sandboxes (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY, network_id TEXT NOT NULL, sandbox_id TEXT NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS plugin_pools (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS plugin_addresses (
    pool_id TEXT NOT NULL, address TEXT NOT NULL, PRIMARY KEY (pool_id, address));
"""


def _encode(obj: Any) -> str:
    return json.dumps(dataclasses.asdict(obj), sort_keys=True)


def network_from_dict(d: dict[str, Any]) -> Network:
    d = dict(d)
    d["ipv4"] = [IpamConfig(**c) for c in d.get("ipv4", [])]
    d["ipv6"] = [IpamConfig(**c) for c in d.get("ipv6", [])]
    return Network(**d)


def endpoint_from_dict(d: dict[str, Any]) -> Endpoint:
    d = dict(d)
    d["ports"] = [PortBinding(**p) for p in d.get("ports", [])]
    return Endpoint(**d)


def sandbox_from_dict(d: dict[str, Any]) -> Sandbox:
    d = dict(d)
    d["ports"] = [PortBinding(**p) for p in d.get("ports", [])]
    return Sandbox(**d)


class Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def put_network(self, n: Network) -> None:
        self._db.execute("INSERT OR REPLACE INTO networks VALUES (?, ?, ?)", (n.id, n.name, _encode(n)))

    def delete_network(self, network_id: str) -> None:
        self._db.execute("DELETE FROM networks WHERE id = ?", (network_id,))

    def put_sandbox(self, s: Sandbox) -> None:
        self._db.execute("INSERT OR REPLACE INTO sandboxes VALUES (?, ?, ?)", (s.id, s.name, _encode(s)))

    def delete_sandbox(self, sandbox_id: str) -> None:
        self._db.execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))

    def put_endpoint(self, e: Endpoint) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO endpoints VALUES (?, ?, ?, ?)",
            (e.id, e.network_id, e.sandbox_id, _encode(e)),
        )

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._db.execute("DELETE FROM endpoints WHERE id = ?", (endpoint_id,))

    # The Docker IPAM plugin's pools (by docker's PoolID) and addresses.

    def put_plugin_pool(self, pool_id: str, body: dict[str, Any]) -> None:
        self._db.execute("INSERT OR REPLACE INTO plugin_pools VALUES (?, ?)", (pool_id, json.dumps(body, sort_keys=True)))

    def delete_plugin_pool(self, pool_id: str) -> None:
        """The pool and every address in it."""
        self._db.execute("DELETE FROM plugin_addresses WHERE pool_id = ?", (pool_id,))
        self._db.execute("DELETE FROM plugin_pools WHERE id = ?", (pool_id,))

    def put_plugin_address(self, pool_id: str, address: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO plugin_addresses VALUES (?, ?)", (pool_id, address))

    def delete_plugin_address(self, pool_id: str, address: str) -> None:
        self._db.execute("DELETE FROM plugin_addresses WHERE pool_id = ? AND address = ?", (pool_id, address))


class Store:
    def __init__(self, data_root: str) -> None:
        os.makedirs(data_root, mode=0o700, exist_ok=True)
        self.path = os.path.join(data_root, "pynet.db")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.Error as exc:
            raise Internal(f"cannot open the store {self.path}: {exc}") from exc
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise Internal(
                f"the store {self.path} has schema version {row[0]}, newer than this pynet ({SCHEMA_VERSION})"
            )
        elif int(row[0]) < SCHEMA_VERSION:
            # Every upgrade so far only adds tables, which the schema script
            # above has just created (empty): recording the version is all.
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield Transaction(self._db)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    def load(self) -> tuple[list[Network], list[Sandbox], list[Endpoint]]:
        nets = [network_from_dict(json.loads(b)) for (b,) in self._db.execute("SELECT body FROM networks")]
        sbs = [sandbox_from_dict(json.loads(b)) for (b,) in self._db.execute("SELECT body FROM sandboxes")]
        eps = [endpoint_from_dict(json.loads(b)) for (b,) in self._db.execute("SELECT body FROM endpoints")]
        return nets, sbs, eps

    def load_plugin_ipam(self) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
        """The Docker IPAM plugin's pools (id -> body) and addresses (pool id -> addresses)."""
        pools = {pid: json.loads(b) for pid, b in self._db.execute("SELECT id, body FROM plugin_pools ORDER BY id")}
        addresses: dict[str, list[str]] = {}
        for pid, addr in self._db.execute("SELECT pool_id, address FROM plugin_addresses ORDER BY pool_id, address"):
            addresses.setdefault(pid, []).append(addr)
        return pools, addresses

    def close(self) -> None:
        self._db.close()
