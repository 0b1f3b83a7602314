"""The Docker IPAM plugin's state in pynet's store: what dockerd was given
(pools by PoolID, addresses) outlives the PluginApi (a pynetd restart);
each call is one transaction, and a failed write leaves the allocator as it
was; errors keep the protocol's form.  No root: a stand-in controller with a
real Store."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading

import pytest
from aiohttp.test_utils import TestClient, TestServer

from netstack.api.plugin import PluginApi, make_plugin_app
from netstack.errors import Conflict, Internal, NotFound
from netstack.store import SCHEMA_VERSION, Store, Transaction

GW = {"RequestAddressType": "com.docker.network.gateway"}


class Ctrl:
    """What PluginApi's IPAM side uses of the controller."""

    def __init__(self, root: str) -> None:
        self.store = Store(root)
        self.lock = threading.RLock()

    def list_networks(self) -> list:
        return []

    def _host_routes(self, scope: str) -> list:
        return []


def restart(api: PluginApi, root) -> PluginApi:
    """A new pynetd over the same data root."""
    api.ctrl.store.close()
    return PluginApi(Ctrl(str(root)))


def rows(root) -> tuple[list, list]:
    db = sqlite3.connect(str(root / "pynet.db"))
    try:
        return (db.execute("SELECT id FROM plugin_pools ORDER BY id").fetchall(),
                db.execute("SELECT pool_id, address FROM plugin_addresses ORDER BY address").fetchall())
    finally:
        db.close()


def test_pools_and_addresses_survive_a_restart(tmp_path):
    api = PluginApi(Ctrl(str(tmp_path)))
    auto = api.request_pool({"AddressSpace": "local", "Pool": "", "V6": False})
    gw = api.request_address({"PoolID": auto["PoolID"], "Options": GW})["Address"]
    first = api.request_address({"PoolID": auto["PoolID"]})["Address"]
    v6 = api.request_pool({"AddressSpace": "local", "Pool": "fd00:77::/64", "V6": True})
    a6 = api.request_address({"PoolID": v6["PoolID"], "Address": "fd00:77::10"})["Address"]
    assert (gw, a6) == (str(api.ipam.pools()[auto["PoolID"]][1]) + "/16", "fd00:77::10/64")

    api = restart(api, tmp_path)
    assert api.repairs == []
    assert set(api.ipam.pools()) == {auto["PoolID"], v6["PoolID"]}
    # docker's next container: a fresh address, never one already given
    second = api.request_address({"PoolID": auto["PoolID"]})["Address"]
    assert second not in (gw, first)
    for pool_id, addr in ((auto["PoolID"], first), (auto["PoolID"], gw), (v6["PoolID"], a6)):
        with pytest.raises(Conflict):
            api.request_address({"PoolID": pool_id, "Address": addr.split("/")[0]})
    # a new default pool does not land on the one docker holds
    other = api.request_pool({"AddressSpace": "local", "Pool": "", "V6": False})
    assert other["Pool"] != auto["Pool"]


def test_an_address_released_after_a_restart_is_free(tmp_path):
    api = PluginApi(Ctrl(str(tmp_path)))
    pool = api.request_pool({"Pool": "10.5.0.0/24"})["PoolID"]
    addr = api.request_address({"PoolID": pool, "Address": "10.5.0.7"})["Address"]
    api = restart(api, tmp_path)
    api.release_address({"PoolID": pool, "Address": addr})
    assert rows(tmp_path)[1] == []
    api = restart(api, tmp_path)
    assert api.request_address({"PoolID": pool, "Address": "10.5.0.7"})["Address"] == "10.5.0.7/24"


def test_explicit_pool_references_survive_and_release_frees_everything(tmp_path):
    api = PluginApi(Ctrl(str(tmp_path)))
    req = {"AddressSpace": "local", "Pool": "10.6.0.0/16", "SubPool": "10.6.1.0/24", "V6": False}
    one = api.request_pool(req)
    two = api.request_pool(req)
    assert one == two and one["PoolID"] == "local/10.6.0.0/16/10.6.1.0/24"
    assert api.request_address({"PoolID": one["PoolID"]})["Address"].startswith("10.6.1.")
    api = restart(api, tmp_path)
    assert api.request_pool(req) == one                     # a third reference, same pool
    api.release_pool({"PoolID": one["PoolID"]})
    api.release_pool({"PoolID": one["PoolID"]})
    api = restart(api, tmp_path)
    assert one["PoolID"] in api.ipam.pools()                # one reference left
    api.release_pool({"PoolID": one["PoolID"]})
    assert rows(tmp_path) == ([], [])
    api = restart(api, tmp_path)
    assert api.ipam.pools() == {}
    with pytest.raises(NotFound):
        api.request_address({"PoolID": one["PoolID"]})


def test_a_failed_write_leaves_the_allocator_as_it_was(tmp_path, monkeypatch):
    api = PluginApi(Ctrl(str(tmp_path)))
    pool = api.request_pool({"Pool": "10.7.0.0/24"})["PoolID"]
    real = Transaction.put_plugin_address

    def broken(self, pool_id, address):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Transaction, "put_plugin_address", broken)
    with pytest.raises(Internal, match="disk I/O error"):
        api.request_address({"PoolID": pool, "Address": "10.7.0.9"})
    monkeypatch.setattr(Transaction, "put_plugin_address", real)
    assert api.request_address({"PoolID": pool, "Address": "10.7.0.9"})["Address"] == "10.7.0.9/24"

    monkeypatch.setattr(Transaction, "put_plugin_pool", broken)
    with pytest.raises(Internal):
        api.request_pool({"Pool": "10.8.0.0/24"})
    assert "local/10.8.0.0/24" not in api.ipam.pools()
    assert rows(tmp_path) == ([("local/10.7.0.0/24",)], [("local/10.7.0.0/24", "10.7.0.9")])


def test_rows_that_no_longer_fit_are_reported_not_guessed(tmp_path):
    api = PluginApi(Ctrl(str(tmp_path)))
    good = api.request_pool({"Pool": "10.9.0.0/24"})["PoolID"]
    api.request_address({"PoolID": good, "Address": "10.9.0.5"})
    with api.ctrl.store.transaction() as tx:
        tx.put_plugin_pool("local/10.9.0.0/25", {"space": "local", "network": "10.9.0.0/25", "v6": False})  # overlaps
        tx.put_plugin_pool("bogus", {"space": "local"})
        tx.put_plugin_address(good, "10.10.0.1")                                                       # outside
    api = restart(api, tmp_path)
    assert len(api.repairs) == 3, api.repairs
    assert set(api.ipam.pools()) == {good}
    with pytest.raises(Conflict):
        api.request_address({"PoolID": good, "Address": "10.9.0.5"})
    # docker releasing what could not be restored still clears its rows
    api.release_pool({"PoolID": "bogus"})
    assert ("bogus",) not in rows(tmp_path)[0]


def test_errors_keep_the_protocol_form(tmp_path, monkeypatch):
    ctrl = Ctrl(str(tmp_path))

    async def calls() -> list[tuple[int, dict]]:
        client = TestClient(TestServer(make_plugin_app(ctrl)))
        await client.start_server()
        out = []
        try:
            for path, body in (
                ("/IpamDriver.RequestPool", {"Pool": "10.11.0.0/24"}),
                ("/IpamDriver.RequestAddress", {"PoolID": "local/10.11.0.0/24", "Address": "10.11.0.300"}),
                ("/IpamDriver.RequestAddress", {"PoolID": "local/10.99.0.0/24"}),
                ("/IpamDriver.RequestAddress", {"PoolID": "local/10.11.0.0/24", "Address": "10.11.0.2"}),
            ):
                resp = await client.post(path, data=json.dumps(body))
                out.append((resp.status, json.loads(await resp.text())))
        finally:
            await client.close()
        return out

    def broken(self, pool_id, address):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(Transaction, "put_plugin_address", broken)
    pool, bad, unknown, unstored = asyncio.run(calls())
    assert pool == (200, {"PoolID": "local/10.11.0.0/24", "Pool": "10.11.0.0/24", "Data": {}})
    assert bad[0] in (200, 400) and set(bad[1]) == {"Error"}
    assert unknown == (200, {"Error": "pool local/10.99.0.0/24 not found"})
    assert unstored[0] == 200 and "database is locked" in unstored[1]["Error"]


def test_a_schema_1_store_is_upgraded_and_a_newer_one_refused(tmp_path):
    db = sqlite3.connect(str(tmp_path / "pynet.db"))
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE networks (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, body TEXT NOT NULL);
        CREATE TABLE sandboxes (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, body TEXT NOT NULL);
        CREATE TABLE endpoints (id TEXT PRIMARY KEY, network_id TEXT NOT NULL, sandbox_id TEXT NOT NULL, body TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
    """)
    db.execute("INSERT INTO networks VALUES (?, ?, ?)", ("n" * 64, "old", json.dumps(
        {"id": "n" * 64, "name": "old", "driver": "bridge"})))
    db.commit()
    db.close()
    store = Store(str(tmp_path))
    assert [n.name for n in store.load()[0]] == ["old"]
    assert store.load_plugin_ipam() == ({}, {})
    store.close()
    db = sqlite3.connect(str(tmp_path / "pynet.db"))
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(Internal, match="newer than this pynet"):
        Store(str(tmp_path))
