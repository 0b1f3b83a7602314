"""Faults a test or benchmark injects into pynetd through its environment.

Crash points: named places where a test can have pynetd killed with
SIGKILL, to prove that start-up repairs whatever was in flight.  Set
PYNET_CRASH_AT=<name>; once the daemon has finished starting (`arm()`),
the first operation that reaches that point makes the daemon send itself
SIGKILL (a real `kill -9`: no cleanup runs).  Unarmed, a crash point costs
one comparison.

A far cluster store: PYNET_ETCD_DELAY_MS=<ms> holds back every etcd
answer (not the watch stream) until at least that long after its request
was sent (round trips of at least that many ms), as if etcd were across a
slower network than the netns lab's (bench/bench_overlay.py
--etcd-delay-ms).  A sleep, so no CPU; work the caller does before it
takes the answer overlaps it, as it would overlap a real round trip."""

from __future__ import annotations

import os
import signal

_target = ""


def arm() -> None:
    global _target
    _target = os.environ.get("PYNET_CRASH_AT", "")


def etcd_delay() -> float:
    """The least time, in seconds, between an etcd request and its answer."""
    return float(os.environ.get("PYNET_ETCD_DELAY_MS") or 0) / 1000


def crashpoint(name: str) -> None:
    if _target and _target == name:
        os.kill(os.getpid(), signal.SIGKILL)
