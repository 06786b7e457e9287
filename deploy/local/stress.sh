#!/usr/bin/env bash
# The concurrency tests on a loaded machine: two CPU-bound processes run beside them while
# each is repeated (20 times unless told otherwise). Any failure fails the run.
#   ./deploy/local/stress.sh [REPEATS] [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/../.."
repeats=${1:-20}
shift || true
bash deploy/local/setup.sh
burners=()
for _ in 1 2; do
  .venv/bin/python -c "while True: pass" &
  burners+=($!)
done
trap 'kill "${burners[@]}" 2>/dev/null || true' EXIT
.venv/bin/python -m pytest -q --repeat "$repeats" --at baseline \
  "tests/integration/test_order_worker.py::test_duplicate_storm_50_concurrent_alerts_make_one_broker_order" \
  "tests/integration/test_order_worker.py::test_a_burst_of_30_alerts_is_placed_within_fyers_rate_limits" \
  "tests/integration/test_order_worker.py::test_redelivery_5_times_3_concurrently_places_one_order" \
  "tests/integration/test_faults.py::test_a_redelivery_during_a_live_lease_waits_for_the_holder_instead_of_dropping_itself" \
  "tests/integration/test_positions.py::test_an_exit_redelivered_5_times_and_resent_by_tradingview_is_one_exit_order" \
  "$@"
