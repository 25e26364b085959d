#!/usr/bin/env bash
# Set up (first run only) and run the demo on the embedded store: no MongoDB needed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh ""
# Exit code 3 is expected: the demo contains a partial and a quarantined file on purpose.
.venv/bin/dropzone demo "$@" || [ $? -eq 3 ]
