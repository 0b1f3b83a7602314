#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every tier
# (unit, privileged, e2e).  Run as root on Debian.  Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap
exec .venv/bin/pytest -q "$@" tests
