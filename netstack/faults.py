"""Faults a test or benchmark injects into pynetd through its environment.

Crash points: named places where a test can have pynetd killed with
SIGKILL, to prove that start-up repairs whatever was in flight.  Set
PYNET_CRASH_AT=<name>; once the daemon has finished starting (`arm()`),
the first operation that reaches that point makes the daemon send itself
SIGKILL (a real `kill -9`: no cleanup runs).  Unarmed, a crash point costs
one comparison.

A far cluster store: PYNET_ETCD_DELAY_MS=<ms> holds back every etcd
answer (not the watch stream) until that long after its request was sent
(a sleep: no CPU; work done meanwhile overlaps it, as it would overlap a
real round trip), as if etcd were across a slower network than the netns
lab's (bench/bench_overlay.py --etcd-delay-ms)."""

from __future__ import annotations

import os
import signal

_target = ""


def arm() -> None:
    global _target
    _target = os.environ.get("PYNET_CRASH_AT", "")


def etcd_delay() -> float:
    """Seconds every etcd answer comes later, at the least, than it was asked for."""
    return float(os.environ.get("PYNET_ETCD_DELAY_MS") or 0) / 1000


def crashpoint(name: str) -> None:
    if _target and _target == name:
        os.kill(os.getpid(), signal.SIGKILL)
