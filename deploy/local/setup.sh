#!/usr/bin/env bash
# Prepares a fresh machine for the tests and the local stack: the virtualenv with the
# pinned packages, the emulators (gcloud components, Java) and shellcheck. Re-runs are quick:
# packages are reinstalled only when a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "Creating the virtualenv (.venv)" >&2
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "Installing the pinned packages" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$wanted" > "$stamp"
fi

bash deploy/local/ensure_tools.sh
if ! command -v shellcheck >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -qq shellcheck >/dev/null 2>&1 || echo "shellcheck unavailable: its test will be skipped" >&2
fi
