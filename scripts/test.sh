#!/usr/bin/env bash
# Set up everything the tests need (first run only: scripts/setup-tests.sh) and run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-tests.sh
# No `|| true`: a failing run, or pytest's exit 5 (no tests collected), fails the script.
exec .venv/bin/python -m pytest "$@"
