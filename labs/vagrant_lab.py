"""The same scenarios on the Vagrant VMs (see Vagrantfile, labs/README.md).

Hosts h1..h3 are VMs on a private network (192.168.56.11-13); etcd runs on
h1; each VM runs pynetd as a systemd unit with --cluster-store and
--cluster-advertise.  Commands reach a VM through `vagrant ssh NAME -c`,
run from the directory holding the Vagrantfile.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOSTS = [("h1", "192.168.56.11"), ("h2", "192.168.56.12"), ("h3", "192.168.56.13")]


def _vagrant(name: str, cmd: list[str]) -> list[str]:
    return ["vagrant", "ssh", name, "-c", "sudo " + shlex.join(cmd), "--", "-q"]


class VagrantHost:
    def __init__(self, name: str, addr: str) -> None:
        self.name = name
        self.addr = addr

    def argv(self, cmd: list[str]) -> list[str]:
        return _vagrant(self.name, cmd)

    def pynet_argv(self, *args: str) -> list[str]:
        return self.argv(["pynet", *args])

    def kill_daemon(self) -> None:
        subprocess.run(self.argv(["systemctl", "kill", "-s", "KILL", "pynetd"]), cwd=ROOT, check=True)

    def start_daemon(self) -> None:
        subprocess.run(self.argv(["systemctl", "restart", "pynetd"]), cwd=ROOT, check=True)
        for _ in range(100):
            if subprocess.run(self.pynet_argv("version"), cwd=ROOT, capture_output=True).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"pynetd on {self.name} did not come back")


class VagrantLab:
    kind = "vagrant"

    def __init__(self) -> None:
        os.chdir(ROOT)  # vagrant finds the Vagrantfile from here
        self.hosts = [VagrantHost(n, a) for n, a in HOSTS]

    def stop_etcd(self) -> None:
        subprocess.run(_vagrant("h1", ["systemctl", "stop", "etcd"]), check=True)

    def start_etcd(self) -> None:
        subprocess.run(_vagrant("h1", ["systemctl", "start", "etcd"]), check=True)

    def down(self) -> list[str]:
        return []   # the VMs stay; `vagrant destroy -f` removes them
