#!/usr/bin/env bash
# Runs every test (unit, contract, integration on the real emulators, deploy dry-run),
# installing what they need first. Extra arguments go to pytest, among them:
#   --at WHEN   the instants the date-dependent tests run at (tests/clock.py): all (the
#               default: a baseline Monday and every calendar edge), edges, now, an edge's
#               name such as token-0559, or an ISO instant with its zone (2027-03-01T09:20+05:30)
#   --repeat N  run each selected test N times (deploy/local/stress.sh uses it)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/setup.sh
exec .venv/bin/python -m pytest "$@"
