"""The crash harness in CI (short form), the bugs it found, and
`pynet system repair`.

The full run is bench/chaos.py (hundreds of kills); its figures are in
docs/reliability.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from netstack import invariants
from netstack.testing.hosts import Daemon
from tests.chaos.harness import Chaos

pytestmark = pytest.mark.privileged

UPSTREAM = ["--dns-upstream", "127.0.0.1:9"]
PYNET = "import sys; from netstack.cli.main import main; sys.exit(main())"


def check(d: Daemon) -> list[str]:
    return invariants.check(d.data_root, d.exec_root, d.host.path)


def pynet_rules(host) -> list[str]:
    return sorted(l for l in host.exec(["iptables-legacy-save"]).stdout.splitlines() if "PYNET-DNAT" in l)


def default_via(key: str) -> list[str]:
    out = subprocess.run(["nsenter", f"--net={key}", "ip", "-j", "route", "show", "default"],
                         capture_output=True, text=True, check=True).stdout
    return [r.get("gateway", "") for r in json.loads(out)]


def test_chaos_short(host):
    """Dozens of SIGKILLs (crash points and a killer thread) among random
    operations; after every restart every invariant and every acknowledged
    operation holds."""
    lines: list[str] = []
    # Every invariant, DNS included (fix 5 in docs/reliability.md: a restart
    # left clients on the old listener ports through stale conntrack NAT).
    chaos = Chaos(host, seed=int(os.environ.get("PYNET_CHAOS_SEED", "7")), log=lines.append)
    try:
        stats = chaos.run(40, deadline=time.monotonic() + 140)
    finally:
        chaos.close()
    print(f"chaos: {stats.rounds} rounds, {stats.ops} operations ({stats.acked} acknowledged,"
          f" {stats.refused} refused), {stats.kills} kills ({stats.crashpoint_kills} at crash points),"
          f" {stats.checks} checks, {len(stats.violations)} violations, {stats.macvlan_networks} macvlan networks")
    assert stats.violations == [], "\n".join(lines[-80:])
    assert stats.kills >= 12 and stats.macvlan_networks >= 1
    assert stats.acked >= stats.kills


def test_gateway_handed_back_by_disconnect_survives_restart(host):
    """Found by the harness: a disconnect that hands the gateway (and the
    published ports) back to another endpoint did not store that, so a
    restart dropped the ports."""
    d = Daemon(host, extra_args=UPSTREAM)
    try:
        d.start()
        c = d.client()
        c.network_create({"Name": "zeta", "IPAM": {"Config": [{"Subnet": "10.96.0.0/24"}]}})
        c.network_create({"Name": "alpha", "IPAM": {"Config": [{"Subnet": "10.97.0.0/24"}]}})
        c.sandbox_create({"Name": "a", "Networks": ["zeta"], "Ports": ["8080:80"]})
        c.network_connect("alpha", {"Container": "a"})      # alpha takes the gateway (by name)
        c.network_disconnect("alpha", {"Container": "a"})   # ...and gives it back to zeta
        rules = pynet_rules(host)
        assert any("--dport 8080" in r and "10.96.0.2:80" in r for r in rules)
        d.kill9()
        d.start()
        assert pynet_rules(host) == rules
        assert check(d) == []
    finally:
        d.close()


def test_kill_between_disconnect_and_gateway_handover_is_repaired(host):
    """Found by the harness: killed after the gateway endpoint was forgotten
    but before the gateway moved, the sandbox kept no default route and its
    published ports were on no endpoint, and start-up did not notice."""
    d = Daemon(host, extra_args=UPSTREAM, env={"PYNET_CRASH_AT": "disconnect:forgotten"})
    try:
        d.start()
        c = d.client()
        c.network_create({"Name": "alpha", "IPAM": {"Config": [{"Subnet": "10.98.0.0/24"}]}})
        c.network_create({"Name": "zeta", "IPAM": {"Config": [{"Subnet": "10.99.0.0/24"}]}})
        c.sandbox_create({"Name": "a", "Networks": ["alpha", "zeta"], "Ports": ["8081:80"]})
        key = c.sandbox_inspect("a")["Key"]
        assert default_via(key) == ["10.98.0.1"]
        with pytest.raises(Exception):
            c.network_disconnect("alpha", {"Container": "a"})
        d.proc.wait(10)  # type: ignore[union-attr]
        d.proc = None
        d.env = {}
        d.start()
        assert default_via(key) == ["10.99.0.1"]
        assert any("--dport 8081" in r and "10.99.0.2:80" in r for r in pynet_rules(host))
        assert "gateway endpoint" in d.log()
        assert check(d) == []
    finally:
        d.close()


def test_system_repair_fixes_drift_and_says_what_it_did(host):
    d = Daemon(host, extra_args=UPSTREAM)
    try:
        d.start()
        c = d.client()
        c.network_create({"Name": "r", "IPAM": {"Config": [{"Subnet": "10.95.0.0/24"}]}})
        c.sandbox_create({"Name": "a", "Networks": ["r"], "Ports": ["8082:80"]})
        c.sandbox_create({"Name": "b", "Networks": ["r"]})
        b_veth = "pnv" + c.sandbox_inspect("b")["Networks"]["r"]["EndpointID"][:12]
        assert check(d) == []
        # Drift made behind pynetd's back: a veth deleted, an orphan bridge
        # with pynet's alias, pynet's DNAT chain flushed.
        host.exec(["ip", "link", "del", b_veth])
        host.exec(["ip", "link", "add", "br-0123456789ab", "type", "bridge"])
        host.exec(["ip", "link", "set", "br-0123456789ab", "alias", "pynet:bridge:" + "0123456789ab" * 5 + "cdef"])
        host.exec(["iptables-legacy", "-t", "nat", "-F", "PYNET-DNAT"])
        found = "\n".join(check(d))
        assert b_veth in found and "br-0123456789ab" in found and "missing rule" in found
        out = subprocess.run([sys.executable, "-c", PYNET, "-H", d.url, "system", "repair"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "br-0123456789ab" in out.stdout and "interface missing" in out.stdout
        assert "still wrong" not in out.stderr
        assert check(d) == []
        again = d.client().system_repair()
        assert again == {"Repairs": [], "Remaining": []}
        assert c.sandbox_inspect("b")["Networks"]["r"]["IPAddress"] == "10.95.0.3"   # same address
    finally:
        d.close()


def test_endpoint_veths_carry_the_alias_start_up_needs(host, daemon):
    """Found by the invariant checker: veths created in one rtnetlink
    request had no alias (the kernel ignores IFLA_IFALIAS on create), so
    start-up could not recognise an orphan veth as pynet's."""
    c = daemon.client()
    c.network_create({"Name": "al", "IPAM": {"Config": [{"Subnet": "10.94.0.0/24"}]}})
    c.sandbox_create({"Name": "a", "Networks": ["al"]})
    ep = c.sandbox_inspect("a")["Networks"]["al"]["EndpointID"]
    link = json.loads(host.exec(["ip", "-j", "-d", "link", "show", f"pnv{ep[:12]}"]).stdout)[0]
    assert link.get("ifalias") == f"pynet:endpoint:{ep}"
    assert check(daemon) == []
