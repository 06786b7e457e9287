#!/usr/bin/env bash
# Runs the whole router locally: emulators, Fyers simulator, the four functions.
# Sets up what is missing first (the virtualenv with the pinned packages, the emulator
# tools), then hands over to deploy/local/stack.py. Options: --help.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/setup.sh
exec .venv/bin/python -m deploy.local.stack "$@"
