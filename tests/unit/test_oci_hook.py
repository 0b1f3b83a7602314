"""`pynet oci-hook`: annotations -> the sandbox's networks, and its errors,
against a fake client (no daemon, no root)."""

from __future__ import annotations

import io
import json
import os
import sys

import pytest

from netstack.cli import oci_hook
from netstack.cli.common import CliError, Context
from netstack.errors import NotFound


def test_attachments_from_annotations():
    got = oci_hook.attachments({"pynet.networks": "a, b", "pynet.ip": "10.0.0.5,b=fd00::5", "pynet.aliases": "x,y",
                                "pynet.mac": "02:00:00:00:00:05"})
    assert got == [
        {"Network": "a", "IPv4Address": "10.0.0.5", "Aliases": ["x", "y"], "MacAddress": "02:00:00:00:00:05"},
        {"Network": "b", "IPv6Address": "fd00::5", "Aliases": ["x", "y"]},
    ]
    with pytest.raises(CliError, match="'c'"):
        oci_hook.attachments({"pynet.networks": "a", "pynet.ip": "c=10.0.0.5"})


class FakeClient:
    def __init__(self, host=None):
        self.calls: list[tuple] = []
        FakeClient.last = self

    def sandbox_create(self, body):
        self.calls.append(("create", body))

    def sandbox_remove(self, name, force=False):
        self.calls.append(("remove", name, force))
        raise NotFound("gone")

    def close(self):
        pass


def run(monkeypatch, state: dict, args: list[str]) -> int:
    monkeypatch.setattr(oci_hook, "_TimedClient", FakeClient)
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(state)))
    return oci_hook.run(Context(None), args)


def test_attach_by_pid_and_detach_by_name(monkeypatch, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hostname": "h1", "annotations": {"pynet.networks": "a"}}))
    state = {"id": "c1", "pid": os.getpid(), "bundle": str(tmp_path), "status": "creating"}
    assert run(monkeypatch, state, []) == 0
    [(kind, body)] = FakeClient.last.calls
    assert body["Name"] == "c1" and body["Pid"] == os.getpid() and body["Hostname"] == "h1"
    assert body["AutoRemove"] is True   # pynetd starts the detach when the process exits
    assert body["Networks"] == [{"Network": "a"}]
    assert run(monkeypatch, dict(state, status="stopped", pid=0), ["poststop"]) == 0   # gone already: fine
    assert FakeClient.last.calls == [("remove", "c1", True)]


def test_netns_path_from_config_when_no_pid(monkeypatch, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"linux": {"namespaces": [{"type": "network", "path": "/run/netns/x"}]}}))
    state = {"id": "c1", "pid": 0, "bundle": str(tmp_path), "annotations": {"pynet.networks": "a", "pynet.name": "web"}}
    assert run(monkeypatch, state, ["createRuntime"]) == 0
    body = FakeClient.last.calls[0][1]
    assert body["Key"] == "/run/netns/x" and body["Name"] == "web" and "Pid" not in body
    assert "AutoRemove" not in body     # a namespace path outlives any one process


@pytest.mark.parametrize("state, args, text", [
    ({"id": "c", "status": "running", "annotations": {"pynet.networks": "a"}}, [], "unknown phase"),
    ({"id": "c", "pid": 0, "annotations": {"pynet.networks": "a"}}, ["createRuntime"], "no live pid"),
    ({"annotations": {"pynet.networks": "a"}}, ["poststop"], "no id"),
    ({"id": "c", "annotations": "x"}, ["poststop"], "annotations"),
])
def test_errors(monkeypatch, state, args, text):
    with pytest.raises(CliError, match=text):
        run(monkeypatch, state, args)


def test_main_reports_errors_in_one_line(monkeypatch, capsys):
    """The launcher's direct entry (bin/pynet oci-hook): docker's wording and
    exit statuses, as through netstack.cli.main, never a traceback."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("not json"))
    assert oci_hook.main([]) == 1
    assert "cannot decode" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"id": "c", "status": "running"})))
    assert oci_hook.main(["a", "b"]) == 125
    monkeypatch.setattr(oci_hook, "_TimedClient", FakeClient)
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"id": "c", "annotations": {"pynet.networks": "a"}})))
    assert oci_hook.main(["poststop"]) == 0
    assert FakeClient.last.calls == [("remove", "c", True)]
