"""Run the Fyers v3 simulator as a process (the local stack's broker).

    python -m deploy.local.fyers_simulator --port 8700 --master NSE_FO.csv \
        --master NSE_CM.csv --app-id=APPID-100 --app-secret=SECRET [--auto-approve]

A value may begin with "-" (generated secrets do): ``--app-secret=-x`` and
``--app-secret -x`` both mean the secret ``-x``.

The implementation lives in :mod:`deploy.local.fyers_sim`; this module is the
stable entry point and re-exports :class:`FyersSimulator`. Drive a running
simulator with its ``/_sim/...`` control routes (faults, prices, tokens, clock).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from deploy.local.fyers_sim import FyersSimulator

__all__ = ["FyersSimulator", "main", "parse_args"]

# Options whose values are free text (ids, generated secrets, paths): the word after one
# is always its value, whereas argparse takes a word starting with "-" for an option.
FREE_TEXT_OPTIONS = ("--master", "--app-id", "--app-secret")


def _attach_values(argv: list[str]) -> list[str]:
    """``--option value`` as ``--option=value`` for each free-text option."""
    attached, words = [], iter(argv)
    for word in words:
        value = next(words, None) if word in FREE_TEXT_OPTIONS else None
        attached.append(word if value is None else f"{word}={value}")
    return attached


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The simulator's command line (``sys.argv`` when ``argv`` is None)."""
    # No abbreviations: "--app-s -x" must not slip past FREE_TEXT_OPTIONS.
    parser = argparse.ArgumentParser(description="Local Fyers v3 simulator", allow_abbrev=False)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--master", action="append", default=[], help="symbol master CSV (repeatable)")
    parser.add_argument("--app-id", action="append", default=[], help="known app id (repeatable)")
    parser.add_argument("--app-secret", action="append", default=[], help="its secret, in the same order")
    parser.add_argument("--auto-approve", action="store_true", help="skip the login page's Approve button")
    parser.add_argument("--rate-per-second", type=int, default=10)
    parser.add_argument("--rate-per-minute", type=int, default=200)
    args = parser.parse_args(_attach_values(sys.argv[1:] if argv is None else argv))
    if len(args.app_id) != len(args.app_secret):
        parser.error("give one --app-secret per --app-id")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sim = FyersSimulator(
        masters=args.master,
        apps=dict(zip(args.app_id, args.app_secret)),
        host=args.host,
        port=args.port,
        auto_approve=args.auto_approve,
        rate_per_second=args.rate_per_second,
        rate_per_minute=args.rate_per_minute,
    ).start()
    print(f"fyers simulator on {sim.base_url} ({len(sim.instruments)} instruments)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
