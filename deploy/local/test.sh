#!/usr/bin/env bash
# Runs every test (unit, contract, integration on the real emulators, deploy dry-run),
# installing what they need first. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/setup.sh
exec .venv/bin/python -m pytest "$@"
