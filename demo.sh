#!/usr/bin/env bash
# The demo (the main job): installs what it needs, then networks three
# containers with pynet inside namespaces of its own.  Run as root on Debian.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap
exec .venv/bin/python labs/demo.py "$@"
