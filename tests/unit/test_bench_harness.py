"""Smoke test of the benchmark harness (tests/bench): its window counts, its matching of
placements to orders, its cost arithmetic, its choice of parts and its report table, without
running anything (tests/bench/test_quick_run.py runs it)."""

from __future__ import annotations

import argparse

import pytest

from tests.bench.bench_pipeline import _interleave, _most_within, _placements
from tests.bench.firestore_ops import cost_per_1000
from tests.bench.run import PARTS, markdown, parts


def test_the_busiest_window_counts_requests_less_than_a_window_apart():
    times = [0.0, 0.5, 0.99, 1.0, 1.2, 61.0]

    assert _most_within(times, 1.0) == 4  # 0.5, 0.99, 1.0, 1.2
    assert _most_within(times, 60.0) == 5
    assert _most_within([], 1.0) == 0


def test_a_placement_is_matched_to_its_order_by_tag_and_only_the_first_counts():
    log = [
        {"method": "GET", "path": "/api/v3/orders", "body": None, "time": "2026-12-04T10:00:00+00:00"},
        {"method": "POST", "path": "/api/v3/orders/sync", "body": {"orderTag": "1:tvabc"},
         "time": "2026-12-04T10:00:01+00:00"},
        {"method": "POST", "path": "/api/v3/orders/sync", "body": {"orderTag": "1:tvabc"},
         "time": "2026-12-04T10:00:05+00:00"},
    ]

    [(order_id, at)] = _placements(log).items()
    assert order_id == "tvabc" and at.second == 1


def test_cost_per_1000_alerts_at_list_prices():
    assert round(cost_per_1000({"reads": 10, "writes": 10, "deletes": 0}), 6) == round(
        10_000 * 0.06 / 100_000 + 10_000 * 0.18 / 100_000, 6)


def test_the_parts_named_run_in_their_fixed_order_and_an_unknown_one_is_refused():
    assert parts("mixed, webhook") == ("webhook", "mixed")
    assert parts(",".join(PARTS)) == PARTS
    with pytest.raises(argparse.ArgumentTypeError, match="unknown part tens"):
        parts("burst,tens")


def test_a_mixed_burst_sends_each_exit_after_its_share_of_the_entries():
    entries, exits = [("entry", str(n)) for n in range(6)], [("exit", "a"), ("exit", "b")]

    assert [b for _, b in _interleave(entries, exits)] == ["0", "1", "2", "a", "3", "4", "5", "b"]


def test_the_report_of_the_mixed_burst_alone_has_its_row_and_its_verdict_and_nothing_else():
    mixed = {"workload": "mixed burst: 40 exits and 120 entries at once", "accepted": 160, "placed": 158,
             "expired": 2, "dead_lettered": 0, "alert_to_broker_s": {"p50": 1.0, "p95": 2.0, "p99": 3.0},
             "max_broker_requests_1s": 9, "max_broker_requests_60s": 171, "broker_requests_per_placed": 1.08,
             "worker_429s": 0, "simulator_429s": 0, "exits": 40, "positions_held": 40, "entries": 120,
             "broker_quiet_before_s": 61.0, "exits_placed": 40, "entries_placed": 118,
             "not_placed": {"EXPIRED STALE": 2}, "last_exit_placed_s": 5.1, "last_entry_placed_s": 19.0,
             "exit_claim_to_placement_s": {"p50": 1.2, "p95": 2.0, "p99": 2.1, "max": 2.1},
             "entries_placed_before_last_exit": 9, "entries_placed_before_first_exit_arrived": 7,
             "entries_placed_ahead_of_a_waiting_exit": 1, "entries_placed_ahead_of_a_waiting_exit_no_grace": 2,
             "grace_s": 0.5, "criterion": "every exit placed, each before any entry still waiting when the exit arrived",
             "criterion_met": False}
    report = {"started": "2026-12-05T02:00:00", "parts": ["mixed"],
              "machine": {"cores": 2, "cpu": "EPYC", "load_average": [1.0], "load_average_after": [2.0],
                          "commit": "abc"}, "mixed": mixed}

    table = markdown(report)

    assert "Parts run: mixed (`--only`)." in table
    assert "| mixed burst: 40 exits and 120 entries at once | 160 | 158 | 2 | 0 | 1.00 / 2.00 / 3.00 s |" in table
    assert "(not placed: 2 EXPIRED STALE)" in table and "**1 placed ahead of an exit already waiting**" in table
    assert table.rstrip().endswith("**NOT met**.")
    assert "Webhook" not in table and "Entry point" not in table and "Firestore" not in table


def test_the_report_table_shows_every_workload_level_and_entry_point():
    workload = {"workload": "burst of 150", "accepted": 150, "placed": 150, "expired": 0, "dead_lettered": 0,
                "alert_to_broker_s": {"p50": 1.0, "p95": 2.0, "p99": 3.0}, "max_broker_requests_1s": 9,
                "max_broker_requests_60s": 170, "broker_requests_per_placed": 1.1, "worker_429s": 0,
                "simulator_429s": 0}
    report = {"started": "2026-12-04T10:00:00", "machine": {"cores": 2, "cpu": "EPYC", "load_average": [1.0],
                                                           "load_average_after": [2.0], "commit": "abc"},
              "workloads": [workload], "webhook_ms": {"10": {"p50": 10, "p95": 20, "p99": 30, "requests": 200,
                                                             "not_accepted": 0}},
              "entry_points": {"webhook": {"framework_import_s": 0.1, "import_s": 0.2, "first_request_s": 0.3,
                                           "status": 200}},
              "firestore_per_alert": {"workload": "steady", "reads": 5, "writes": 10, "deletes": 0,
                                      "usd_per_1000_alerts": 0.021, "prices_usd_per_100k": {"reads": 0.06}}}

    table = markdown(report)

    assert "| burst of 150 | 150 | 150 | 0 | 0 | 1.00 / 2.00 / 3.00 s | 9 / 170 | 1.1 | 0 | 0 |" in table
    assert "| 10 | 10 ms | 20 ms | 30 ms | 200 | 0 |" in table
    assert "| webhook | 100 ms | 200 ms | 300 ms | 200 |" in table and "$0.0210 per 1,000 alerts" in table
