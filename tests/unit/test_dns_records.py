"""RecordTable: visibility, NAME.NETWORK, aliases, PTR, internal networks."""

from __future__ import annotations

from netstack.dns.backend import NameBackend
from netstack.dns.records import RecordTable


def table() -> RecordTable:
    t = RecordTable()
    t.add_endpoint("n1", "front", "e1", ["web", "www", "web-host"], "10.0.0.2", "fd00::2")
    t.add_endpoint("n1", "front", "e2", ["api", "www"], "10.0.0.3", None)
    t.add_endpoint("n2", "back", "e3", ["db"], "10.1.0.2", None)
    t.add_endpoint("n2", "back", "e4", ["web"], "10.1.0.3", None)
    t.set_sandbox_networks("s-front", ["n1"])
    t.set_sandbox_networks("s-both", ["n1", "n2"])
    return t


def test_is_a_name_backend() -> None:
    assert isinstance(RecordTable(), NameBackend)


def test_only_attached_networks_are_visible() -> None:
    t = table()
    assert t.resolve("s-front", "web") == (["10.0.0.2"], ["fd00::2"])
    assert t.resolve("s-front", "db") is None
    assert t.resolve("s-both", "db") == (["10.1.0.2"], [])
    assert t.resolve("unknown-sandbox", "web") is None


def test_names_are_case_insensitive_and_trailing_dot_tolerated() -> None:
    assert table().resolve("s-front", "WeB-HoSt.") == (["10.0.0.2"], ["fd00::2"])


def test_alias_shared_by_endpoints_gives_all_addresses() -> None:
    assert table().resolve("s-front", "www") == (["10.0.0.2", "10.0.0.3"], ["fd00::2"])


def test_same_name_on_two_networks_gives_both() -> None:
    assert table().resolve("s-both", "web") == (["10.0.0.2", "10.1.0.3"], ["fd00::2"])


def test_name_dot_network_qualifies() -> None:
    t = table()
    assert t.resolve("s-both", "web.back") == (["10.1.0.3"], [])
    assert t.resolve("s-both", "WEB.Front") == (["10.0.0.2"], ["fd00::2"])
    assert t.resolve("s-front", "db.back") is None  # not attached to back
    assert t.resolve("s-front", "web.nonet") is None


def test_dotted_names_and_network_names() -> None:
    t = RecordTable()
    t.add_endpoint("n", "my.net", "e", ["svc.v1"], "10.2.0.2", None)
    t.set_sandbox_networks("s", ["n"])
    assert t.resolve("s", "svc.v1") == (["10.2.0.2"], [])
    assert t.resolve("s", "svc.v1.my.net") == (["10.2.0.2"], [])


def test_ptr_answers_name_dot_network_for_visible_addresses() -> None:
    t = table()
    assert t.resolve_ptr("s-front", "10.0.0.2") == "web.front"
    assert t.resolve_ptr("s-front", "fd00::2") == "web.front"
    assert t.resolve_ptr("s-front", "10.1.0.2") is None
    assert t.resolve_ptr("s-both", "10.1.0.2") == "db.back"


def test_remove_endpoint_and_generation() -> None:
    t = table()
    g = t.generation
    t.remove_endpoint("n1", "e1")
    assert t.generation > g
    assert t.resolve("s-front", "web") is None
    assert t.resolve("s-front", "www") == (["10.0.0.3"], [])
    assert t.resolve_ptr("s-front", "10.0.0.2") is None
    g = t.generation
    t.remove_endpoint("n1", "e1")  # already gone: tolerated, nothing changes
    t.remove_endpoint("nope", "e1")
    assert t.generation == g


def test_readding_an_endpoint_replaces_its_names() -> None:
    t = table()
    t.add_endpoint("n1", "front", "e1", ["renamed"], "10.0.0.9", None)
    assert t.resolve("s-front", "web") is None
    assert t.resolve("s-front", "renamed") == (["10.0.0.9"], [])
    assert t.resolve("s-front", "www") == (["10.0.0.3"], [])  # e1 dropped the alias


def test_internal_only_sandboxes_do_not_forward() -> None:
    t = table()
    assert t.may_forward("s-front")
    t.set_network_internal("n1", True)
    assert not t.may_forward("s-front")
    assert t.may_forward("s-both")  # n2 still leads out
    t.set_network_internal("n2", True)
    assert not t.may_forward("s-both")


def test_remove_sandbox_and_network() -> None:
    t = table()
    t.remove_sandbox("s-front")
    assert t.resolve("s-front", "web") is None
    t.remove_network("n2")
    assert t.resolve("s-both", "db") is None
    assert t.resolve("s-both", "api") == (["10.0.0.3"], [])


def test_addresses_are_canonical() -> None:
    t = RecordTable()
    t.add_endpoint("n", "net", "e", ["x"], "10.0.0.5/24", "FD00:0::5/64")
    t.set_sandbox_networks("s", ["n"])
    assert t.resolve("s", "x") == (["10.0.0.5"], ["fd00::5"])
    assert t.resolve_ptr("s", "fd00::5") == "x.net"


def test_lookups_during_mutations_see_whole_updates() -> None:
    """The DNS thread reads while the controller writes: a stable name
    always resolves, a PTR walk never trips over a network that changes
    under it, and a churning name is either absent or complete."""
    import threading

    t = RecordTable()
    t.add_endpoint("n1", "front", "keep", ["keep"], "10.0.0.2", None)
    t.set_sandbox_networks("s", ["n1"])
    stop, errors = threading.Event(), []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            t.add_endpoint("n1", "front", f"e{i % 50}", ["churn", f"x{i % 50}"], f"10.0.1.{i % 50}", None)
            t.remove_endpoint("n1", f"e{(i + 25) % 50}")
            i += 1

    w = threading.Thread(target=writer)
    w.start()
    try:
        for _ in range(3000):
            try:
                assert t.resolve("s", "keep") == (["10.0.0.2"], [])
                assert t.resolve_ptr("s", "10.0.0.2") == "keep.front"
                churn = t.resolve("s", "churn")
                assert churn is None or (churn[0] and all(a.startswith("10.0.1.") for a in churn[0]))
            except Exception as exc:  # noqa: BLE001 - reported below with its type
                errors.append(repr(exc))
                break
    finally:
        stop.set()
        w.join()
    assert errors == []
