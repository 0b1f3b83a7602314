"""What the pynet OCI hook adds to `runc run`.

    python bench/bench_oci.py [--rounds N] [--quick] [--pynet curl|perl|cat|release|system|editable|floor|PATH,...]

A busybox-static bundle running `true`, in a new network namespace, run by
runc inside a namespace host where a pynetd runs; rounds alternate between
the bundle without hooks and the same bundle with `pynet oci-hook` as its
createRuntime and poststop hooks (attach to one bridge network, detach).
Prints medians, the difference (what the hook adds) and the ratio, writes
bench/results/oci.json.

The hook is `pynet` as a user installs it: by default the launcher of a
regular (non-editable) install in bench/.venv-release, built the way bench/run
builds it (`python3 -m venv`, `pip install --no-deps .`, rebuilt when a
source file is newer).  `--pynet system` installs it the same way into a venv
of the distribution's /usr/bin/python3 (bench/.venv-release-system), as a
user of Debian's python3 would have it; `--pynet editable` times the
development venv's launcher, whose editable-install site hook costs ~20-30 ms
per exec; `--pynet floor` a Python script that only reads its stdin (what
any Python hook costs); `--pynet cat` /bin/cat as both hooks (runc's own
cost of running two hooks: the floor of any hook).  `--pynet curl` and
`--pynet perl` are the fast forms (`pynet oci-hook --print-hooks --form
curl|perl`): no Python process, curl or a builtins-only perl one-liner
posts the state to pynetd's `POST /oci/hooks/{hook}`.
Several, comma separated, are timed in the same rounds:

    python bench/bench_oci.py --pynet cat,curl,perl,floor,release

The interpreter's start counts twice per run (createRuntime and poststop).
Never run by pytest.
"""

from __future__ import annotations

import argparse
import atexit
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

INSTALLS = {
    # choice: (venv, interpreter it is made with)
    "release": (ROOT / "bench" / ".venv-release", shutil.which("python3") or sys.executable),
    "system": (ROOT / "bench" / ".venv-release-system", "/usr/bin/python3"),
}


def installed_pynet(venv: Path, python: str) -> str:
    return release_install(venv, python, "pynet")


FORMS = ("curl", "perl")   # hooks whose process is not Python: netstack.oci.hooks_json
CAT = "/bin/cat"           # --pynet cat: a hook that only reads the state (runc's own cost of two hooks)


def pick_pynet(choice: str) -> str:
    if choice == "cat":
        return CAT
    if choice in FORMS:
        program = shutil.which(choice)
        if not program:
            raise SystemExit(f"bench_oci: {choice} (for --pynet {choice}) is not installed")
        return os.path.realpath(program)
    if choice in INSTALLS:
        venv, python = INSTALLS[choice]
        if not os.access(python, os.X_OK):
            raise SystemExit(f"bench_oci: {python} (for --pynet {choice}) is not installed")
        return installed_pynet(venv, python)
    if choice == "editable":
        return os.path.join(os.path.dirname(sys.executable), "pynet")
    if choice == "floor":
        # the interpreter's start and nothing else: what any Python hook pays
        python = Path(installed_pynet(*INSTALLS["release"])).parent / "python"
        tmp = tempfile.mkdtemp(prefix="pynet-bench-oci-floor-")
        atexit.register(shutil.rmtree, tmp, True)
        script = Path(tmp) / "hook"
        script.write_text(f"#!{python}\nimport sys\nsys.stdin.read()\n")
        script.chmod(0o755)
        return str(script)
    if not os.access(choice, os.X_OK):
        raise SystemExit(f"bench_oci: {choice} is not an executable")
    return os.path.abspath(choice)


def bundle(path: Path, pynet: str, hook_env: list[str] | None, form: str = "", socket: str = "") -> str:
    rootfs = path / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "etc"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    os.symlink("busybox", rootfs / "bin" / "true")
    subprocess.run(["runc", "spec"], cwd=path, check=True)
    spec = json.loads((path / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["true"]
    if form == "cat":
        entry = {"path": CAT, "args": ["cat"]}
        spec["hooks"] = {"createRuntime": [entry], "poststop": [entry]}
        spec["annotations"] = {"pynet.networks": "benchnet"}
    elif form:
        from netstack.oci import hooks_json

        spec["hooks"] = hooks_json(socket, form, pynet)
        spec["annotations"] = {"pynet.networks": "benchnet"}
    elif hook_env is not None:
        entry = {"path": pynet, "args": ["pynet", "oci-hook"], "env": hook_env}
        spec["hooks"] = {"createRuntime": [entry], "poststop": [entry]}
        spec["annotations"] = {"pynet.networks": "benchnet"}
    (path / "config.json").write_text(json.dumps(spec))
    return str(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="8 rounds")
    ap.add_argument("--pynet", default="release",
                    help="the hook, or several separated by commas, timed in the same rounds: curl or perl "
                         "(the fast forms of `pynet oci-hook --print-hooks`: that program posts the state to "
                         "pynetd, no Python process), release "
                         "(a regular install, bench/.venv-release, as bench/run makes it; the default), system "
                         "(the same, in a venv of /usr/bin/python3, bench/.venv-release-system), editable "
                         "(the development venv's launcher), floor (a script of the release venv's python "
                         "that only reads stdin: two interpreter starts), cat (/bin/cat as both hooks: runc's "
                         "own cost of two hooks) or the path of a pynet launcher")
    args = ap.parse_args()
    rounds = 8 if args.quick else args.rounds
    hooks = {choice: pick_pynet(choice) for choice in args.pynet.split(",") if choice}
    for choice, path in hooks.items():
        print(f"bench_oci: hook {choice}: {path}", file=sys.stderr)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "netstack")], env=env, check=False)
    host = NetnsHost("pnbh-oci")
    daemon = Daemon(host)
    tmp = Path(tempfile.mkdtemp(prefix="pynet-bench-oci-"))
    plain = "runc run"
    label = {c: "runc run + pynet hook" if list(hooks) == ["release"] else f"runc run + pynet hook ({c})"
             for c in hooks}
    times: dict[str, list[float]] = {plain: [], **{label[c]: [] for c in hooks}}
    try:
        daemon.start()
        daemon.client().network_create({"Name": "benchnet", "IPAM": {"Config": [{"Subnet": "10.82.0.0/16"}]}})
        bundles = {plain: bundle(tmp / "plain", "", None)}
        for n, (choice, path) in enumerate(hooks.items()):
            bundles[label[choice]] = bundle(tmp / f"hooked{n}", path, [f"PYNET_HOST={daemon.url}"],
                                            choice if choice in (*FORMS, "cat") else "", daemon.socket)
        cases = list(bundles.items())
        for i in range(rounds + 1):
            # alternate the order, so that neither case always follows the other
            order = cases[i % len(cases):] + cases[:i % len(cases)]
            if i % 2:
                order.reverse()
            for name, path in order:
                cid = f"bench-{secrets.token_hex(4)}"
                start = time.perf_counter()
                p = subprocess.run(host.nsenter(["runc", "--root", str(tmp / "state"), "run", "--bundle", path, cid]),
                                   capture_output=True, text=True, timeout=60, env=env)
                elapsed = (time.perf_counter() - start) * 1000
                if p.returncode != 0:
                    raise RuntimeError(f"runc run ({name}): {p.stderr.strip()}\n{daemon.log()[-3000:]}")
                if i:
                    times[name].append(elapsed)
        left = daemon.client().sandboxes()
        if left:
            raise RuntimeError(f"sandboxes left behind: {[s['Name'] for s in left]}")
    finally:
        daemon.close()
        host.close()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    added = {k: v - med[plain] for k, v in med.items() if k != plain}
    # each round's own difference: the load of the moment cancels out
    paired = {k: statistics.median(a - b for a, b in zip(times[k], times[plain])) for k in added}
    try:
        load = "%.1f" % os.getloadavg()[0]
    except OSError:
        load = "?"
    print(f"\nrunc run of `true`, {rounds} rounds, medians (ms); load average {load}\n")
    print("| case | ms | added by the hook (attach + detach) | median of each round's difference | ratio |\n"
          "|---|---:|---:|---:|---:|")
    for k, v in med.items():
        extra = f"{added[k]:.1f} | {paired[k]:.1f} | {v / med[plain]:.2f}" if k in added else "| | 1"
        print(f"| {k} | {v:.1f} | {extra} |")
    out = ROOT / "bench" / "results" / "oci.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rounds": rounds, "hooks": hooks, "load": load, "median_ms": med, "added_ms": added,
                               "added_paired_ms": paired, "samples_ms": times}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
