"""``pynet system ...``: repair.

``pynet system repair`` asks pynetd to run its start-up recovery again,
live and under the controller's lock (re-read the store, rebuild IPAM,
finish or undo interrupted operations, remove orphan links and rules,
re-make missing kernel objects, restore DNS), then to check the invariants
(netstack.invariants).  It prints one line per repair and per violation
still found; the exit status is 1 when violations remain.
"""

from __future__ import annotations

from netstack.cli.args import VALUE, Flag, Spec
from netstack.cli.common import Context

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

REPAIR = Spec(
    "pynet system repair",
    "[OPTIONS]",
    "Find and fix drift between pynet's store and the kernel, and say what was done",
    [Flag("format", "f", VALUE, "Format output using a custom template: 'json' or a Go template")],
    (0, 0),
)


def repair(ctx: Context, opts: dict[str, Any], args: list[str]) -> int:
    report = ctx.client().system_repair() or {}
    repairs, remaining = report.get("Repairs") or [], report.get("Remaining") or []
    if opts["format"]:
        from netstack.cli.render import compile_template

        ctx.out(compile_template(opts["format"])(report) + "\n")
    else:
        if not repairs:
            ctx.out("Nothing to repair\n")
        ctx.out("".join(f"repaired: {r}\n" for r in repairs))
        ctx.err("".join(f"still wrong: {v}\n" for v in remaining))
    return 1 if remaining else 0


COMMANDS = {"repair": (REPAIR, repair)}
SUMMARY = "Manage pynet"
