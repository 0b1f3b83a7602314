"""Multi-host overlay lab: one command each to bring it up, run a scenario,
tear it down.

    python labs/overlay.py up [--hosts 3]          # netns hosts + etcd + pynetd each
    python labs/overlay.py run reach|host-restart|etcd-restart|concurrent|all
    python labs/overlay.py status
    python labs/overlay.py down                    # leaves nothing behind

    python labs/overlay.py --vagrant run all       # the same scenarios on the
                                                   # Vagrant VMs (see labs/README.md)
Run as root from the repository (or with pynet installed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from labs import scenarios  # noqa: E402


def get_lab(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    if args.vagrant:
        from labs.vagrant_lab import VagrantLab

        return VagrantLab()
    from labs.netns_lab import NetnsLab

    return NetnsLab.load(args.tag)


def run_scenarios(lab, names: list[str]) -> int:  # type: ignore[no-untyped-def]
    failed = 0
    for name in names:
        print(f"== {name}: {scenarios.SCENARIOS[name].__doc__.splitlines()[0]}", flush=True)  # type: ignore[union-attr]
        t0 = time.monotonic()
        try:
            figures = scenarios.SCENARIOS[name](lab)
        except AssertionError as exc:
            failed += 1
            print(f"FAIL {name}: {exc}", flush=True)
            continue
        extra = ", ".join(f"{k}={v:.2f}" for k, v in figures.items())
        print(f"PASS {name} in {time.monotonic() - t0:.1f}s{' (' + extra + ')' if extra else ''}", flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="labs/overlay.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vagrant", action="store_true", help="drive the Vagrant VMs instead of namespace hosts")
    p.add_argument("--tag", default="", help="which netns lab (default: the newest)")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--ttl", type=int, default=4, help="host lease TTL in seconds")
    r = sub.add_parser("run")
    r.add_argument("scenario", choices=[*scenarios.SCENARIOS, "all"])
    sub.add_parser("status")
    sub.add_parser("down")
    args = p.parse_args(argv)
    if os.geteuid() != 0 and not args.vagrant:
        print("labs/overlay.py must run as root (it makes namespaces)", file=sys.stderr)
        return 1
    if args.cmd == "up":
        if args.vagrant:
            print("with --vagrant, bring the VMs up with `vagrant up` (see labs/README.md)", file=sys.stderr)
            return 1
        from labs.netns_lab import NetnsLab

        lab = NetnsLab.up(args.hosts, ttl=args.ttl)
        print(f"lab {lab.state.tag} up: " + ", ".join(f"{h.name}={h.addr}" for h in lab.hosts) + f"; state {lab.state.path}")
        for h in lab.hosts:
            print(f"  {h.name}: {' '.join(h.pynet_argv())} ...")
        return 0
    lab = get_lab(args)
    if args.cmd == "run":
        names = list(scenarios.SCENARIOS) if args.scenario == "all" else [args.scenario]
        return run_scenarios(lab, names)
    if args.cmd == "status":
        for h in lab.hosts:
            r = scenarios.pynet(h, "network", "ls", check=False)
            print(f"{h.name} ({h.addr}):\n{r.stdout or r.stderr}")
        return 0
    problems = lab.down()
    left = lab.leftovers() if hasattr(lab, "leftovers") else []
    for p_ in problems + left:
        print(f"left behind: {p_}", file=sys.stderr)
    print("lab down" if not problems and not left else "lab down with leftovers")
    return 1 if problems or left else 0


if __name__ == "__main__":
    sys.exit(main())
