"""What the pynet OCI hook adds to `runc run`.

    python bench/bench_oci.py [--rounds N] [--quick]

A busybox-static bundle running `true`, in a new network namespace, run by
runc inside a namespace host where a pynetd runs; rounds alternate between
the bundle without hooks and the same bundle with `pynet oci-hook` as its
createRuntime and poststop hooks (attach to one bridge network, detach).
Prints medians and the difference, writes bench/results/oci.json.  The hook
is the `pynet` console script as installed here (an editable install, whose
site hook alone costs ~30 ms per exec; two execs per run).  Never run by
pytest.
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

PYNET = os.path.join(os.path.dirname(sys.executable), "pynet")


def bundle(path: Path, hook_env: list[str] | None) -> str:
    rootfs = path / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "etc"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    os.symlink("busybox", rootfs / "bin" / "true")
    subprocess.run(["runc", "spec"], cwd=path, check=True)
    spec = json.loads((path / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["true"]
    if hook_env is not None:
        entry = {"path": PYNET, "args": ["pynet", "oci-hook"], "env": hook_env}
        spec["hooks"] = {"createRuntime": [entry], "poststop": [entry]}
        spec["annotations"] = {"pynet.networks": "benchnet"}
    (path / "config.json").write_text(json.dumps(spec))
    return str(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="8 rounds")
    args = ap.parse_args()
    rounds = 8 if args.quick else args.rounds
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "netstack")], env=env, check=False)
    host = NetnsHost("pnbh-oci")
    daemon = Daemon(host)
    tmp = Path(tempfile.mkdtemp(prefix="pynet-bench-oci-"))
    times: dict[str, list[float]] = {"runc run": [], "runc run + pynet hook": []}
    try:
        daemon.start()
        daemon.client().network_create({"Name": "benchnet", "IPAM": {"Config": [{"Subnet": "10.82.0.0/16"}]}})
        bundles = {"runc run": bundle(tmp / "plain", None),
                   "runc run + pynet hook": bundle(tmp / "hooked", [f"PYNET_HOST={daemon.url}"])}
        for i in range(rounds + 1):
            order = list(bundles.items())
            if i % 2:
                order.reverse()
            for label, path in order:
                cid = f"bench-{secrets.token_hex(4)}"
                start = time.perf_counter()
                p = subprocess.run(host.nsenter(["runc", "--root", str(tmp / "state"), "run", "--bundle", path, cid]),
                                   capture_output=True, text=True, timeout=60, env=env)
                elapsed = (time.perf_counter() - start) * 1000
                if p.returncode != 0:
                    raise RuntimeError(f"runc run ({label}): {p.stderr.strip()}\n{daemon.log()[-3000:]}")
                if i:
                    times[label].append(elapsed)
        left = daemon.client().sandboxes()
        if left:
            raise RuntimeError(f"sandboxes left behind: {[s['Name'] for s in left]}")
    finally:
        daemon.close()
        host.close()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    added = med["runc run + pynet hook"] - med["runc run"]
    print(f"\nrunc run of `true`, {rounds} rounds, medians (ms)\n")
    print("| case | ms |\n|---|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.1f} |")
    print(f"| added by the hook (attach + detach) | {added:.1f} |")
    out = ROOT / "bench" / "results" / "oci.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rounds": rounds, "median_ms": med, "added_ms": added, "samples_ms": times}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
