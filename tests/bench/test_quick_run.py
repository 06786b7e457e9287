"""Smoke of ``python -m tests.bench.run --quick --only mixed``: the mixed burst's whole path
(positions opened and read back into the ledger, the burst, its judgement by the simulator's
log, its report) at a small scale, in its own emulators and simulator. About 25 s."""

from __future__ import annotations

from tests.bench.run import bench, markdown


def test_a_quick_mixed_burst_opens_the_positions_places_every_exit_and_reports_only_itself():
    report = bench(quick=True, only=("mixed",))

    mixed = report["mixed"]
    assert (mixed["positions_held"], mixed["exits"], mixed["entries"]) == (4, 4, 12)
    assert mixed["exits_placed"] == 4 and mixed["entries_placed"] == 12
    assert mixed["simulator_429s"] == 0 and mixed["dead_lettered"] == 0
    # Counted in both processes: the webhook's own batch (claim, order, event, audit) is 4 writes.
    assert mixed["firestore"]["writes_per_accepted"] > 8
    assert not {"webhook_ms", "entry_points", "workloads", "firestore_per_alert"} & report.keys()
    table = markdown(report)
    assert "| mixed burst: 4 exits and 12 entries at once | 16 | 16 | 0 | 0 |" in table
    assert "**4 of 4 exits**" in table and "Criterion, every exit placed" in table
    assert "Webhook" not in table and "Entry point" not in table and "Firestore" not in table
