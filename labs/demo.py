"""The pynet demo: real containers (network namespaces) networked by pynet.

Everything happens inside namespaces the demo makes and removes: a "host"
namespace where pynetd runs, and an "external" namespace standing for
another machine on the host's LAN.  The machine's own network is untouched.

    ./demo.sh            (as root; installs what it needs first)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from netstack.testing.hosts import Daemon, NetnsHost, veth_between

PYNET = [os.path.join(os.path.dirname(sys.executable), "pynet")]


class Demo:
    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0

    def step(self, title: str) -> None:
        print(f"\n\033[1m== {title}\033[0m", flush=True)

    def show(self, cmd: list[str], env: dict[str, str] | None = None, *, check: bool = True,
             expect_fail: bool = False, timeout: float = 15) -> str:
        printable = " ".join(c if " " not in c else repr(c) for c in cmd)
        print(f"$ {printable}", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})},
                              timeout=timeout)
        out = (proc.stdout + proc.stderr).rstrip()
        if out:
            print("  " + out.replace("\n", "\n  "))
        good = (proc.returncode != 0) if expect_fail else (proc.returncode == 0)
        if check:
            if good:
                self.ok += 1
                print(f"  \033[32m✓ {'refused, as it should be' if expect_fail else 'ok'}\033[0m")
            else:
                self.failed += 1
                print(f"  \033[31m✗ unexpected exit {proc.returncode}\033[0m")
        return proc.stdout


def main() -> int:
    demo = Demo()
    host = NetnsHost("pynet-demo-host")
    external = NetnsHost("pynet-demo-ext")
    daemon = Daemon(host, root=tempfile.mkdtemp(prefix="pynet-demo-"))
    web_dir = tempfile.mkdtemp(prefix="pynet-demo-www-")
    with open(os.path.join(web_dir, "index.html"), "w") as f:
        f.write("hello from the web sandbox\n")
    httpd = None
    try:
        veth_between(host, "lan0", "198.18.0.1/24", external, "lan0", "198.18.0.2/24")
        daemon.start()
        env = {"PYNET_HOST": daemon.url}
        pynet = lambda *a, **kw: demo.show([*PYNET, *a], env, **kw)  # noqa: E731
        in_sb = lambda sb, *a, **kw: pynet("sandbox", "exec", sb, "--", *a, **kw)  # noqa: E731

        demo.step("pynetd runs inside a namespace of its own; the docker CLI talks to it too")
        pynet("version")
        demo.show(["docker", "network", "ls"], {"DOCKER_HOST": daemon.url})

        demo.step("Two bridge networks")
        pynet("network", "create", "--subnet", "10.88.0.0/24", "--label", "demo=yes", "frontend")
        pynet("network", "create", "--subnet", "10.89.0.0/24", "backend")
        pynet("network", "ls")

        demo.step("Three sandboxes (container network namespaces); web publishes port 80 on 8080")
        pynet("sandbox", "create", "--name", "web", "--network", "frontend", "--alias", "www", "-p", "8080:80")
        pynet("sandbox", "create", "--name", "client", "--network", "frontend")
        pynet("sandbox", "create", "--name", "db", "--network", "backend")
        pynet("sandbox", "ls")
        pynet("network", "inspect", "-f", "{{range .Containers}}{{.Name}}={{.IPv4Address}} {{end}}", "frontend")

        web_key = subprocess.run([*PYNET, "sandbox", "inspect", "-f", "{{.Key}}", "web"],
                                 capture_output=True, text=True, env={**os.environ, **env}).stdout.strip()
        httpd = subprocess.Popen(["nsenter", f"--net={web_key}", "busybox", "httpd", "-f", "-p", "80", "-h", web_dir])
        time.sleep(0.3)

        demo.step("Same network: client reaches web (ICMP and HTTP)")
        in_sb("client", "busybox", "ping", "-c", "1", "-W", "2", "10.88.0.2")
        in_sb("client", "curl", "-s", "-m", "3", "http://10.88.0.2/")

        demo.step("Name discovery through the embedded DNS at 127.0.0.11")
        in_sb("client", "cat", "/etc/resolv.conf", check=False)
        in_sb("client", "curl", "-s", "-m", "3", "http://web/", check=False)
        in_sb("client", "dig", "+short", "www", check=False)

        demo.step("Another network is isolated: db cannot reach web")
        in_sb("db", "busybox", "ping", "-c", "1", "-W", "1", "10.88.0.2", expect_fail=True)

        demo.step("Published port 8080 from another machine on the LAN, and from the host's 127.0.0.1")
        demo.show(["ip", "netns", "exec", external.name, "curl", "-s", "-m", "3", "http://198.18.0.1:8080/"])
        demo.show(["ip", "netns", "exec", host.name, "curl", "-s", "-m", "3", "http://127.0.0.1:8080/"])

        demo.step("Outbound NAT: the LAN machine sees the host's address as the source")
        echo_peer = ("import socket;s=socket.create_server(('198.18.0.2',9000));c,a=s.accept();"
                     "c.sendall(('you came from %s\\n' % a[0]).encode());c.close()")
        ext_srv = subprocess.Popen(["ip", "netns", "exec", external.name, sys.executable, "-c", echo_peer])
        time.sleep(0.5)
        in_sb("client", "busybox", "nc", "-w", "2", "198.18.0.2", "9000")
        ext_srv.wait(5)

        demo.step("The rules pynet installed (its own PYNET chains; built-in chains get one jump each)")
        demo.show(["ip", "netns", "exec", host.name, "sh", "-c", "iptables-legacy-save | grep PYNET"])

        demo.step("Teardown: nothing of pynet is left")
        httpd.kill()
        httpd.wait()
        httpd = None
        pynet("sandbox", "rm", "-f", "web", "client", "db")
        pynet("network", "rm", "frontend", "backend")
        demo.show(["ip", "netns", "exec", host.name, "sh", "-c",
                   "ip -br link; iptables-legacy-save | grep -c -- '-A PYNET-[A-Z]* .*br-' || true"])
    finally:
        if httpd is not None:
            httpd.kill()
            httpd.wait()
        daemon.close()
        host.close()
        external.close()
        shutil.rmtree(web_dir, ignore_errors=True)
    print(f"\n{demo.ok} checks passed, {demo.failed} failed")
    return 1 if demo.failed else 0


if __name__ == "__main__":
    sys.exit(main())
