#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install dropzone with its extras. Idempotent.
# Usage: scripts/bootstrap.sh [extras]   (default extras: dev = everything the tests need)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1-dev}"

pick_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "dropzone needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

if [ ! -x .venv/bin/python ]; then
  python="$(pick_python)"
  "$python" -m venv .venv || {
    echo "python -m venv failed; on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }
fi
stamp=".venv/.installed-${extras:-base}"
target="."
[ -z "$extras" ] || target=".[$extras]"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e "$target"
  touch "$stamp"
fi
