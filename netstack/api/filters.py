"""Docker's `filters` query parameter: parse and match, as the daemon does.

Wire form: JSON `{"name": ["a", "b"]}` (or the older `{"name": {"a": true}}`).
Values of one key are ORed, different keys ANDed."""

from __future__ import annotations

import datetime
import json
import re
import time
from typing import Any, Callable

from netstack.errors import InvalidParameter

Filters = dict[str, list[str]]

NETWORK_FILTERS = ("dangling", "driver", "id", "label", "name", "scope", "type")
PRUNE_FILTERS = ("until", "label", "label!")
SANDBOX_FILTERS = ("id", "name", "label", "network")


def parse(raw: str) -> Filters:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidParameter(f"invalid filter {raw!r}: not JSON") from None
    if not isinstance(data, dict):
        raise InvalidParameter(f"invalid filter {raw!r}: expected a JSON object")
    out: Filters = {}
    for key, values in data.items():
        if isinstance(values, dict):
            values = [k for k, on in values.items() if on]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidParameter(f"invalid filter {key!r}: values must be strings")
        out[key] = values
    return out


def check(filters: Filters, allowed: tuple[str, ...]) -> None:
    for key in filters:
        if key not in allowed:
            raise InvalidParameter(f"invalid filter '{key}'")


def _labels_match(labels: dict[str, str], wanted: list[str]) -> bool:
    for w in wanted:
        k, sep, v = w.partition("=")
        if k not in labels or (sep and labels[k] != v):
            return False
    return True


def match_network(net: Any, f: Filters, ctrl: Any) -> bool:
    if "driver" in f and net.driver not in f["driver"]:
        return False
    if "id" in f and not any(net.id.startswith(v) for v in f["id"]):
        return False
    if "name" in f and not any(re.search(re.escape(v), net.name) for v in f["name"]):
        return False
    if "scope" in f and net.scope not in f["scope"]:
        return False
    if "label" in f and not _labels_match(net.labels, f["label"]):
        return False
    if "type" in f:
        for t in f["type"]:
            if t not in ("custom", "builtin"):
                raise InvalidParameter(f"invalid filter: 'type'='{t}'")
        kind = "builtin" if net.predefined else "custom"
        if kind not in f["type"]:
            return False
    if "dangling" in f:
        want = f["dangling"][0].lower()
        if want not in ("true", "false", "1", "0"):
            raise InvalidParameter(f"invalid filter 'dangling={f['dangling'][0]}'")
        dangling = not net.predefined and not ctrl.endpoints_of_network(net.id)
        if dangling != (want in ("true", "1")):
            return False
    return True


def match_sandbox(sb: Any, f: Filters) -> bool:
    if "id" in f and not any(sb.id.startswith(v) for v in f["id"]):
        return False
    if "name" in f and not any(v in sb.name for v in f["name"]):
        return False
    if "label" in f and not _labels_match(sb.labels, f["label"]):
        return False
    return True


def _until(value: str) -> float:
    """A Unix timestamp, an RFC 3339 date, or a Go duration ago (10m, 24h)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", value)
    if m:
        scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[m.group(2)]
        return time.time() - float(m.group(1)) * scale
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InvalidParameter(f"invalid filter 'until={value}': not a timestamp or duration") from None


def _created(net: Any) -> float:
    return datetime.datetime.fromisoformat(net.created[:26] + "+00:00").timestamp()


def prune_keep(f: Filters) -> Callable[[Any], bool]:
    """A predicate: True for networks the prune filters protect."""
    until = [_until(v) for v in f.get("until", [])]

    def keep(net: Any) -> bool:
        if until and _created(net) >= min(until):
            return True
        if "label" in f and not _labels_match(net.labels, f["label"]):
            return True
        if "label!" in f and any(_labels_match(net.labels, [w]) for w in f["label!"]):
            return True
        return False

    return keep
