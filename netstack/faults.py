"""Crash points: named places where a test can have pynetd killed with
SIGKILL, to prove that start-up repairs whatever was in flight.

Set PYNET_CRASH_AT=<name> in pynetd's environment; once the daemon has
finished starting (`arm()`), the first operation that reaches that point
makes the daemon send itself SIGKILL (a real `kill -9`: no cleanup runs).
Unarmed, a crash point costs one comparison."""

from __future__ import annotations

import os
import signal

_target = ""


def arm() -> None:
    global _target
    _target = os.environ.get("PYNET_CRASH_AT", "")


def crashpoint(name: str) -> None:
    if _target and _target == name:
        os.kill(os.getpid(), signal.SIGKILL)
