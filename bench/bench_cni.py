"""CNI ADD/DEL latency: pynet-cni against the reference bridge plugin.

    python bench/bench_cni.py [--rounds N] [--quick]

Both plugins run as a runtime runs them (CNI_* environment, config on stdin,
a fresh exec per call) from the same namespace host, where a pynetd runs;
each round makes a new container namespace and times, in alternating order,
pynet-cni ADD+DEL and bridge(+host-local) ADD+DEL on it.  Medians and the
pynet/reference ratio go to a markdown table and bench/results/cni.json.

pynet-cni is timed as a user installs it: bench/.venv-release/bin/pynet-cni
from `pip install --no-deps .` (built as bench/run builds it, byte-code
compiled), the launcher the runtime execs.  `--editable` also times the
development venv's, whose editable-install site hook costs ~20-30 ms of
start-up before pynet runs at all.  Never run by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netstack.testing.hosts import Daemon, NetnsHost  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from _util import release_install  # noqa: E402

CNI_DIR = "/usr/lib/cni"
EDITABLE = os.path.join(os.path.dirname(sys.executable), "pynet-cni")
RELEASE_VENV = ROOT / "bench" / ".venv-release"


def call(host: NetnsHost, argv: list[str], command: str, conf: dict, container: str, netns: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(CNI_COMMAND=command, CNI_CONTAINERID=container, CNI_NETNS=netns, CNI_IFNAME="eth0", CNI_PATH=CNI_DIR)
    # setns in the child (not nsenter), so only the plugin itself is timed
    fd = os.open(host.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        from netstack.kernel.netns import setns

        start = time.perf_counter()
        p = subprocess.run(argv, input=json.dumps(conf), env=env, capture_output=True, text=True, timeout=60,
                           preexec_fn=lambda: setns(fd), pass_fds=(fd,))
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    if p.returncode != 0:
        raise RuntimeError(f"{argv[0]} {command}: {p.stdout.strip()} {p.stderr.strip()[-300:]}")
    return elapsed * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="8 rounds")
    ap.add_argument("--editable", action="store_true", help="also time the development venv's pynet-cni")
    args = ap.parse_args()
    rounds = 8 if args.quick else args.rounds
    release = release_install(RELEASE_VENV, shutil.which("python3") or sys.executable, "pynet-cni")
    host = NetnsHost("pnbh-cni")
    daemon = Daemon(host)
    tmp = tempfile.mkdtemp(prefix="pynet-bench-cni-")
    made: list[str] = []
    times: dict[str, list[float]] = {}
    try:
        daemon.start()
        pynet_conf = {"cniVersion": "1.1.0", "name": "benchnet", "type": "pynet-cni", "pynetHost": daemon.url,
                      "subnet": "10.80.0.0/16"}
        ref_conf = {"cniVersion": "1.0.0", "name": "refnet", "type": "bridge", "bridge": "cnibr0",
                    "isGateway": True, "ipMasq": True,
                    "ipam": {"type": "host-local", "subnet": "10.81.0.0/16", "dataDir": os.path.join(tmp, "ipam")}}
        plugins = {"pynet-cni": ([release], pynet_conf)}
        if args.editable:
            plugins["pynet-cni (editable install)"] = ([EDITABLE], pynet_conf)
        plugins["bridge (reference)"] = ([os.path.join(CNI_DIR, "bridge")], ref_conf)
        for i in range(rounds + 1):               # round 0 warms up (network and bridge creation)
            ns = f"pnbh-cnic-{secrets.token_hex(4)}"
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
            path = f"/run/netns/{ns}"
            order = list(plugins.items())
            if i % 2:
                order.reverse()
            for label, (argv, conf) in order:
                container = secrets.token_hex(16)
                add = call(host, argv, "ADD", conf, container, path)
                dele = call(host, argv, "DEL", conf, container, path)
                if i:
                    times.setdefault(f"{label} ADD", []).append(add)
                    times.setdefault(f"{label} DEL", []).append(dele)
            subprocess.run(["ip", "netns", "del", ns], check=False)
            made.remove(ns)
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        daemon.close()
        host.close()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nCNI ADD/DEL, {rounds} rounds, medians (ms); ratio = pynet / reference bridge\n")
    print("| plugin | ADD ms | DEL ms | ADD ratio | DEL ratio |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    for label in plugins:
        a, d = med[f"{label} ADD"], med[f"{label} DEL"]
        ra, rd = a / med["bridge (reference) ADD"], d / med["bridge (reference) DEL"]
        rows.append({"plugin": label, "add_ms": round(a, 1), "del_ms": round(d, 1),
                     "add_ratio": round(ra, 2), "del_ratio": round(rd, 2)})
        print(f"| {label} | {a:.1f} | {d:.1f} | {ra:.2f} | {rd:.2f} |")
    out = ROOT / "bench" / "results" / "cni.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rounds": rounds, "rows": rows, "samples_ms": times}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
