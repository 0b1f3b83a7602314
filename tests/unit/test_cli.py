"""pynet's CLI end to end against a fake pynetd: requests sent, output, exit codes."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from netstack.cli.main import main

try:
    from .test_client import FakeDaemon
except ImportError:
    from test_client import FakeDaemon  # type: ignore[no-redef]

BRIDGE = {
    "Name": "bridge",
    "Id": "7a1b" * 16,
    "Created": "2024-05-09T10:11:12.120000Z",
    "Scope": "local",
    "Driver": "bridge",
    "EnableIPv4": True,
    "EnableIPv6": False,
    "IPAM": {"Driver": "default", "Options": None, "Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]},
    "Internal": False,
    "Attachable": False,
    "Ingress": False,
    "ConfigFrom": {"Network": ""},
    "ConfigOnly": False,
    "Containers": {
        "b0x" + "0" * 61: {
            "Name": "web",
            "EndpointID": "e" * 64,
            "MacAddress": "02:42:ac:11:00:02",
            "IPv4Address": "172.17.0.2/16",
            "IPv6Address": "",
        }
    },
    "Options": {"com.docker.network.bridge.name": "docker0", "com.docker.network.driver.mtu": "1500"},
    "Labels": {},
}
NET10 = {**BRIDGE, "Name": "net10", "Id": "c3d4" * 16, "Created": "2024-05-09T10:11:12Z", "EnableIPv6": True,
         "Internal": True, "Labels": {"b": "2", "a": "1"}, "Containers": {}, "Options": {}}
NET9 = {**BRIDGE, "Name": "net9", "Id": "e5f6" * 16, "Containers": {}, "Options": {}}
HOST = {**BRIDGE, "Name": "host", "Id": "a1b2" * 16, "Driver": "host", "Containers": {}, "Options": {}}
NETWORKS = [NET10, BRIDGE, NET9, HOST]

SANDBOX = {
    "Id": "5b" * 32,
    "Name": "web",
    "Hostname": "web",
    "Key": "/run/pynet/netns/5b5b5b5b5b5b",
    "Created": "2024-05-09T10:11:12Z",
    "ResolvConfPath": "/var/lib/pynet/sandboxes/5b/resolv.conf",
    "HostsPath": "/var/lib/pynet/sandboxes/5b/hosts",
    "Networks": {"net9": {"IPAddress": "172.18.0.2"}, "bridge": {"IPAddress": "172.17.0.2"}},
    "Ports": {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}], "53/udp": None},
}


@pytest.fixture
def daemon() -> Any:
    with FakeDaemon() as fake:
        fake.routes[("GET", "/networks")] = (200, NETWORKS)
        for net in NETWORKS:
            fake.routes[("GET", f"/networks/{net['Name']}")] = (200, net)
        fake.routes[("GET", "/sandboxes")] = (200, [SANDBOX])
        fake.routes[("GET", "/sandboxes/web")] = (200, SANDBOX)
        yield fake


def run(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["-H", daemon.host, *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- network ls ---------------------------------------------------------------


def test_ls_table_sorted_naturally_and_truncated(daemon: FakeDaemon, capsys: Any) -> None:
    code, out, err = run(daemon, capsys, "network", "ls")
    assert (code, err) == (0, "")
    assert out == (
        "NETWORK ID     NAME      DRIVER    SCOPE\n"
        "7a1b7a1b7a1b   bridge    bridge    local\n"
        "a1b2a1b2a1b2   host      host      local\n"
        "e5f6e5f6e5f6   net9      bridge    local\n"
        "c3d4c3d4c3d4   net10     bridge    local\n"
    )
    assert daemon.last.path == "/networks" and daemon.last.filters is None


def test_ls_quiet_and_no_trunc(daemon: FakeDaemon, capsys: Any) -> None:
    _, out, _ = run(daemon, capsys, "network", "ls", "-q")
    assert out.split() == ["7a1b7a1b7a1b", "a1b2a1b2a1b2", "e5f6e5f6e5f6", "c3d4c3d4c3d4"]
    _, out, _ = run(daemon, capsys, "network", "ls", "-q", "--no-trunc")
    assert out.split()[0] == "7a1b" * 16
    _, out, _ = run(daemon, capsys, "network", "ls", "--no-trunc")
    assert out.splitlines()[1].startswith("7a1b" * 16 + "   bridge")


def test_ls_filters_are_sent_as_json_map(daemon: FakeDaemon, capsys: Any) -> None:
    code, _, _ = run(daemon, capsys, "network", "ls", "-f", "driver=bridge", "--filter", "label=a=1", "-f", "driver=host")
    assert code == 0
    assert daemon.last.filters == {"driver": ["bridge", "host"], "label": ["a=1"]}


def test_ls_filter_without_equals_is_a_usage_error(daemon: FakeDaemon, capsys: Any) -> None:
    code, out, err = run(daemon, capsys, "network", "ls", "-f", "driver")
    assert code == 125 and out == ""
    assert 'invalid argument "driver" for "-f, --filter" flag' in err
    assert err.endswith("See 'pynet network ls --help'.\n")
    assert daemon.requests == []


def test_ls_format_json_one_object_per_line(daemon: FakeDaemon, capsys: Any) -> None:
    _, out, _ = run(daemon, capsys, "network", "ls", "--format", "json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["Name"] for line in lines] == ["bridge", "host", "net9", "net10"]
    assert lines[3] == {
        "CreatedAt": "2024-05-09 10:11:12 +0000 UTC",
        "Driver": "bridge",
        "ID": "c3d4c3d4c3d4",
        "IPv4": "true",
        "IPv6": "true",
        "Internal": "true",
        "Labels": "a=1,b=2",
        "Name": "net10",
        "Scope": "local",
    }


def test_ls_format_custom_table(daemon: FakeDaemon, capsys: Any) -> None:
    _, out, _ = run(daemon, capsys, "network", "ls", "--format", "table {{.Name}}\\t{{.IPv6}}\\t{{.Labels}}\\t{{.CreatedAt}}")
    assert out.splitlines() == [
        "NAME      IPV6      LABELS    CREATED AT",
        "bridge    false               2024-05-09 10:11:12.12 +0000 UTC",
        "host      false               2024-05-09 10:11:12.12 +0000 UTC",
        "net9      false               2024-05-09 10:11:12.12 +0000 UTC",
        "net10     true      a=1,b=2   2024-05-09 10:11:12 +0000 UTC",
    ]


def test_ls_format_template_without_table(daemon: FakeDaemon, capsys: Any) -> None:
    _, out, _ = run(daemon, capsys, "network", "ls", "--format", '{{.Name}}:{{.Label "a"}}:{{upper .Driver}}')
    assert out == "bridge::BRIDGE\nhost::HOST\nnet9::BRIDGE\nnet10:1:BRIDGE\n"


def test_ls_unknown_field_is_one_line_error(daemon: FakeDaemon, capsys: Any) -> None:
    code, out, err = run(daemon, capsys, "network", "ls", "--format", "{{.Nope}}")
    assert code == 1 and out == ""
    assert "can't evaluate field Nope" in err and len(err.splitlines()) == 1


def test_ls_bad_template_is_a_parse_error(daemon: FakeDaemon, capsys: Any) -> None:
    code, _, err = run(daemon, capsys, "network", "ls", "--format", "{{.Name")
    assert code == 1 and err.startswith("template parsing error:")


# --- network create -----------------------------------------------------------


def test_create_body_and_output(daemon: FakeDaemon, capsys: Any) -> None:
    daemon.routes[("POST", "/networks/create")] = (201, {"Id": "9" * 64, "Warning": ""})
    code, out, err = run(
        daemon, capsys, "network", "create", "-d", "bridge",
        "--subnet", "10.1.0.0/16", "--subnet=fd00:1::/64",
        "--gateway", "fd00:1::1", "--gateway", "10.1.0.254",
        "--ip-range", "10.1.5.0/24", "--aux-address", "router=10.1.0.2",
        "--ipam-opt", "k=v", "-o", "com.docker.network.bridge.name=br-x", "--label", "team=net",
        "--internal", "--ipv6", "--attachable", "mynet",
    )  # fmt: skip
    assert (code, out, err) == (0, "9" * 64 + "\n", "")
    assert daemon.last.body == {
        "Name": "mynet",
        "Driver": "bridge",
        "Scope": "",
        "EnableIPv6": True,
        "IPAM": {
            "Driver": "default",
            "Config": [
                {"Subnet": "10.1.0.0/16", "AuxiliaryAddresses": {"router": "10.1.0.2"},
                 "IPRange": "10.1.5.0/24", "Gateway": "10.1.0.254"},
                {"Subnet": "fd00:1::/64", "AuxiliaryAddresses": {}, "Gateway": "fd00:1::1"},
            ],
            "Options": {"k": "v"},
        },
        "Internal": True,
        "Attachable": True,
        "Options": {"com.docker.network.bridge.name": "br-x"},
        "Labels": {"team": "net"},
    }


def test_create_defaults(daemon: FakeDaemon, capsys: Any) -> None:
    daemon.routes[("POST", "/networks/create")] = (201, {"Id": "9" * 64, "Warning": "careful"})
    code, out, err = run(daemon, capsys, "network", "create", "plain")
    assert (code, out, err) == (0, "9" * 64 + "\n", "careful\n")
    body = daemon.last.body
    assert body["Driver"] == "bridge" and body["IPAM"] == {"Driver": "default", "Config": [], "Options": {}}
    assert body["Internal"] is False and body["EnableIPv6"] is False


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--gateway", "10.0.0.1"], "every ip-range or gateway must have a corresponding subnet"),
        (["--subnet", "10.0.0.0/8", "--gateway", "11.0.0.1"], "no matching subnet for gateway 11.0.0.1"),
        (["--subnet", "10.0.0.0/8", "--ip-range", "11.0.0.0/24"], "no matching subnet for range 11.0.0.0/24"),
        (["--subnet", "10.0.0.0/8", "--aux-address", "a=12.0.0.1"], "no matching subnet for aux-address 12.0.0.1"),
        (["--subnet", "10.0.0.0/8", "--subnet", "10.1.0.0/16"], "multiple overlapping subnet configuration is not supported"),
        (["--subnet", "10.0.0.0/33"], "invalid subnet: invalid CIDR address: 10.0.0.0/33"),
        (
            ["--subnet", "10.0.0.0/8", "--subnet", "fd00::/64", "--gateway", "10.0.0.1", "--gateway", "10.0.0.2"],
            "cannot configure multiple gateways (10.0.0.2, 10.0.0.1) for the same subnet (10.0.0.0/8)",
        ),
    ],
)
def test_create_ipam_input_checked_locally(daemon: FakeDaemon, capsys: Any, argv: list[str], message: str) -> None:
    code, out, err = run(daemon, capsys, "network", "create", *argv, "n")
    assert (code, out, err) == (1, "", message + "\n")
    assert daemon.requests == []


def test_create_usage_errors(daemon: FakeDaemon, capsys: Any) -> None:
    code, _, err = run(daemon, capsys, "network", "create")
    assert code == 125
    assert err.startswith('"pynet network create" requires exactly 1 argument.\nSee \'pynet network create --help\'.')
    code, _, err = run(daemon, capsys, "network", "create", "--bogus", "x")
    assert (code, err) == (125, "unknown flag: --bogus\nSee 'pynet network create --help'.\n")
    code, _, err = run(daemon, capsys, "network", "create", "-x", "n")
    assert (code, err) == (125, "unknown shorthand flag: 'x' in -x\nSee 'pynet network create --help'.\n")
    code, _, err = run(daemon, capsys, "network", "create", "n", "--subnet")
    assert (code, err) == (125, "flag needs an argument: --subnet\nSee 'pynet network create --help'.\n")
    code, _, err = run(daemon, capsys, "network", "create", "-o", "novalue", "n")
    assert code == 125 and 'invalid argument "novalue" for "-o, --opt" flag: expected KEY=VALUE' in err
    code, _, err = run(daemon, capsys, "network", "create", "--label", "x", "n")
    assert code == 125 and '"--label"' in err
    assert daemon.requests == []


def test_create_conflict_from_daemon(daemon: FakeDaemon, capsys: Any) -> None:
    daemon.routes[("POST", "/networks/create")] = (409, {"message": "network with name n already exists"})
    code, out, err = run(daemon, capsys, "network", "create", "n")
    assert (code, out, err) == (1, "", "Error response from daemon: network with name n already exists\n")


def test_short_flag_forms(daemon: FakeDaemon, capsys: Any) -> None:
    daemon.routes[("POST", "/networks/create")] = (201, {"Id": "1" * 64})
    run(daemon, capsys, "network", "create", "-dmacvlan", "n", "-o=a=b")
    assert daemon.last.body["Driver"] == "macvlan" and daemon.last.body["Options"] == {"a": "b"}


# --- inspect, rm, prune -------------------------------------------------------


def test_inspect_prints_indented_array_and_no_such_network(daemon: FakeDaemon, capsys: Any) -> None:
    code, out, err = run(daemon, capsys, "network", "inspect", "bridge", "nope", "net9")
    assert code == 1
    assert err == "Error: No such network: nope\n"
    assert json.loads(out) == [BRIDGE, NET9]
    assert out.startswith('[\n    {\n        "Name": "bridge",\n        "Id": "7a1b')


def test_inspect_nothing_found_prints_empty_array(daemon: FakeDaemon, capsys: Any) -> None:
    code, out, err = run(daemon, capsys, "network", "inspect", "nope")
    assert (code, out, err) == (1, "[]\n", "Error: No such network: nope\n")


def test_inspect_verbose_query(daemon: FakeDaemon, capsys: Any) -> None:
    run(daemon, capsys, "network", "inspect", "-v", "bridge")
    assert daemon.last.query == {"verbose": ["true"]}


def test_inspect_templates(daemon: FakeDaemon, capsys: Any) -> None:
    fmt = (
        "{{.Name}} {{.IPAM.Driver}} {{range .IPAM.Config}}{{.Subnet}}{{end}} "
        "{{range .Containers}}{{.Name}}={{.IPv4Address}}{{end}} "
        '{{if .Internal}}internal{{else}}external{{end}} {{index .Options "com.docker.network.driver.mtu"}}'
    )
    code, out, _ = run(daemon, capsys, "network", "inspect", "-f", fmt, "bridge", "net10")
    assert code == 0
    assert out == "bridge default 172.17.0.0/16 web=172.17.0.2/16 external 1500\nnet10 default 172.17.0.0/16  internal \n"
    _, out, _ = run(daemon, capsys, "network", "inspect", "--format", "{{range $k, $v := .Labels}}{{$k}}={{$v}} {{end}}", "net10")
    assert out == "a=1 b=2 \n"
    _, out, _ = run(daemon, capsys, "network", "inspect", "-f", "{{json .IPAM.Config}}", "bridge")
    assert out == '[{"Subnet":"172.17.0.0/16","Gateway":"172.17.0.1"}]\n'
    _, out, _ = run(daemon, capsys, "network", "inspect", "-f", "json", "bridge", "net9")
    assert [json.loads(line)["Name"] for line in out.splitlines()] == ["bridge", "net9"]


def test_rm_continues_past_errors(daemon: FakeDaemon, capsys: Any) -> None:
    daemon.routes[("DELETE", "/networks/a")] = (204, None)
    daemon.routes[("DELETE", "/networks/host")] = (403, {"message": "host is a pre-defined network and cannot be removed"})
    daemon.routes[("DELETE", "/networks/c")] = (204, None)
    code, out, err = run(daemon, capsys, "network", "rm", "a", "host", "missing", "c")
    assert code == 1
    assert out == "a\nc\n"
    assert err == (
        "Error response from daemon: host is a pre-defined network and cannot be removed\n"
        "Error: No such network: missing\n"
    )
    assert [r.path for r in daemon.requests] == ["/networks/a", "/networks/host", "/networks/missing", "/networks/c"]


def test_prune_force_with_filters(daemon: FakeDaemon, capsys: Any) -> None:
    daemon.routes[("POST", "/networks/prune")] = (200, {"NetworksDeleted": ["n1", "n2"]})
    code, out, _ = run(daemon, capsys, "network", "prune", "-f", "--filter", "until=24h", "--filter", "label=x=y")
    assert (code, out) == (0, "Deleted Networks:\nn1\nn2\n")
    assert daemon.last.filters == {"until": ["24h"], "label": ["x=y"]}


@pytest.mark.parametrize("answer, calls", [("y\n", 1), ("n\n", 0), ("", 0)])
def test_prune_prompts(daemon: FakeDaemon, capsys: Any, monkeypatch: pytest.MonkeyPatch, answer: str, calls: int) -> None:
    daemon.routes[("POST", "/networks/prune")] = (200, {"NetworksDeleted": []})
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    code, out, _ = run(daemon, capsys, "network", "prune")
    assert code == 0
    assert out == (
        "WARNING! This will remove all custom networks not used by at least one container.\n"
        "Are you sure you want to continue? [y/N] "
    )
    assert len(daemon.requests) == calls


# --- connect, disconnect --------------------------------------------------------


def test_connect_body(daemon: FakeDaemon, capsys: Any) -> None:
    daemon.routes[("POST", "/networks/net9/connect")] = (200, None)
    code, out, err = run(
        daemon, capsys, "network", "connect", "--ip", "172.18.0.9", "--alias", "db", "--alias", "sql",
        "--gw-priority", "10", "net9", "web",
    )  # fmt: skip
    assert (code, out, err) == (0, "", "")
    assert daemon.last.body == {
        "Container": "web",
        "EndpointConfig": {
            "IPAMConfig": {"IPv4Address": "172.18.0.9", "IPv6Address": ""},
            "Aliases": ["db", "sql"],
            "GwPriority": 10,
        },
    }


def test_connect_errors(daemon: FakeDaemon, capsys: Any) -> None:
    code, _, err = run(daemon, capsys, "network", "connect", "net9")
    assert code == 125 and err.startswith('"pynet network connect" requires exactly 2 arguments.')
    code, _, err = run(daemon, capsys, "network", "connect", "--gw-priority", "x", "net9", "web")
    assert code == 125 and "--gw-priority" in err
    daemon.routes[("POST", "/networks/net9/connect")] = (400, {"message": "no available IPv4 address"})
    code, _, err = run(daemon, capsys, "network", "connect", "net9", "web")
    assert (code, err) == (1, "Error response from daemon: no available IPv4 address\n")


def test_disconnect_body(daemon: FakeDaemon, capsys: Any) -> None:
    daemon.routes[("POST", "/networks/net9/disconnect")] = (200, None)
    assert run(daemon, capsys, "network", "disconnect", "-f", "net9", "web")[0] == 0
    assert daemon.last.body == {"Container": "web", "Force": True}


# --- sandboxes ------------------------------------------------------------------


def test_sandbox_create_body(daemon: FakeDaemon, capsys: Any) -> None:
    daemon.routes[("POST", "/sandboxes/create")] = (201, {"Id": "5b" * 32, "Warnings": ["w1"]})
    code, out, err = run(
        daemon, capsys, "sandbox", "create", "--name", "web", "--hostname", "h", "--network", "net9",
        "--network", "bridge", "--ip", "172.18.0.5", "--alias", "www", "-p", "8080:80/tcp", "--publish", "53/udp",
        "--pid", "1234",
    )  # fmt: skip
    assert (code, out, err) == (0, "5b" * 32 + "\n", "WARNING: w1\n")
    assert daemon.last.body == {
        "Name": "web",
        "Hostname": "h",
        "Networks": [
            {"Network": "net9", "IPv4Address": "172.18.0.5", "IPv6Address": "", "Aliases": ["www"]},
            {"Network": "bridge"},
        ],
        "Ports": ["8080:80/tcp", "53/udp"],
        "Pid": 1234,
    }


def test_sandbox_create_netns_and_checks(daemon: FakeDaemon, capsys: Any) -> None:
    daemon.routes[("POST", "/sandboxes/create")] = (201, {"Id": "1" * 64, "Warnings": None})
    run(daemon, capsys, "sandbox", "create", "--netns", "/run/netns/x")
    assert daemon.last.body == {"Name": "", "Hostname": "", "Networks": [], "Ports": [], "Key": "/run/netns/x"}
    code, _, err = run(daemon, capsys, "sandbox", "create", "--ip", "10.0.0.1")
    assert code == 1 and "--network" in err
    code, _, err = run(daemon, capsys, "sandbox", "create", "--pid", "abc")
    assert code == 125 and '"--pid"' in err


def test_sandbox_ls(daemon: FakeDaemon, capsys: Any) -> None:
    code, out, _ = run(daemon, capsys, "sandbox", "ls")
    assert code == 0
    assert out == (
        "SANDBOX ID     NAME      NETWORKS      PORTS\n"
        "5b5b5b5b5b5b   web       bridge,net9   0.0.0.0:8080->80/tcp, [::]:8080->80/tcp, 53/udp\n"
    )
    _, out, _ = run(daemon, capsys, "sandbox", "ls", "-q", "--no-trunc")
    assert out == "5b" * 32 + "\n"
    _, out, _ = run(daemon, capsys, "sandbox", "ls", "--format", "{{.Name}} {{.Hostname}}")
    assert out == "web web\n"


def test_sandbox_inspect_and_rm(daemon: FakeDaemon, capsys: Any) -> None:
    code, out, err = run(daemon, capsys, "sandbox", "inspect", "web", "ghost")
    assert code == 1 and json.loads(out) == [SANDBOX] and err == "Error: No such sandbox: ghost\n"
    _, out, _ = run(daemon, capsys, "sandbox", "inspect", "-f", '{{.Key}} {{(index .Ports "80/tcp")}}', "web")
    assert out == "/run/pynet/netns/5b5b5b5b5b5b [map[HostIp:0.0.0.0 HostPort:8080] map[HostIp::: HostPort:8080]]\n"
    daemon.routes[("DELETE", "/sandboxes/web")] = (204, None)
    code, out, err = run(daemon, capsys, "sandbox", "rm", "-f", "web", "ghost")
    assert (code, out, err) == (1, "web\n", "Error: No such sandbox: ghost\n")
    assert daemon.requests[-2].query == {"force": ["1"]}


def test_sandbox_exec_needs_root(daemon: FakeDaemon, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    code, out, err = run(daemon, capsys, "sandbox", "exec", "web", "--", "ip", "-br", "addr")
    assert code == 1 and out == ""
    assert err == "pynet sandbox exec must run as root: it enters the sandbox's network and mount namespaces\n"


def test_sandbox_exec_enters_then_execs(daemon: FakeDaemon, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from netstack.cli import sandbox

    calls: list[Any] = []
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(sandbox, "enter", lambda key, binds: calls.append(("enter", key, binds)))
    monkeypatch.setattr("os.execvp", lambda f, argv: calls.append(("exec", f, argv)))
    run(daemon, capsys, "sandbox", "exec", "web", "ip", "-br", "addr")
    assert calls == [
        ("enter", SANDBOX["Key"], {"/etc/resolv.conf": SANDBOX["ResolvConfPath"], "/etc/hosts": SANDBOX["HostsPath"]}),
        ("exec", "ip", ["ip", "-br", "addr"]),
    ]


def test_sandbox_exec_unknown_sandbox(daemon: FakeDaemon, capsys: Any) -> None:
    code, _, err = run(daemon, capsys, "sandbox", "exec", "ghost", "--", "true")
    assert (code, err) == (1, "Error: No such sandbox: ghost\n")


# --- global -------------------------------------------------------------------


def test_version(daemon: FakeDaemon, capsys: Any) -> None:
    daemon.routes[("GET", "/version")] = (
        200,
        {"Version": "0.1.0", "ApiVersion": "1.44", "MinAPIVersion": "1.24", "Os": "linux", "Arch": "amd64", "KernelVersion": "6.1.0"},
    )
    code, out, _ = run(daemon, capsys, "version")
    assert code == 0
    assert out.startswith("Client:\n Version:           0.1.0\n API version:       1.44\n")
    assert "\nServer:\n Engine:\n  Version:          0.1.0\n  API version:      1.44 (minimum version 1.24)\n" in out
    assert "  Kernel Version:   6.1.0\n" in out
    _, out, _ = run(daemon, capsys, "version", "-f", "{{.Server.ApiVersion}}")
    assert out == "1.44\n"


def test_daemon_unreachable_is_one_line(tmp_path: Any, capsys: Any) -> None:
    host = f"unix://{tmp_path}/none.sock"
    assert main(["-H", host, "network", "ls"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"Cannot connect to the pynet daemon at {host}. Is pynetd running?\n"
    assert main(["-H", host, "version"]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("Client:\n") and err.startswith("Cannot connect to the pynet daemon")


def test_pynet_host_environment(daemon: FakeDaemon, capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYNET_HOST", daemon.host)
    assert main(["network", "ls", "-q"]) == 0
    assert daemon.last.path == "/networks"


def test_help_and_unknown_commands(capsys: Any) -> None:
    assert main([]) == 0
    assert "network" in capsys.readouterr().out
    assert main(["network"]) == 0
    assert "Commands:" in capsys.readouterr().out
    assert main(["network", "create", "--help"]) == 0
    assert "--aux-address NAME=IP" in capsys.readouterr().out
    assert main(["bogus"]) == 125
    assert capsys.readouterr().err == "pynet: 'bogus' is not a pynet command.\nSee 'pynet --help'.\n"
    assert main(["network", "bogus"]) == 125
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("pynet version ")
