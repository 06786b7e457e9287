"""Run the Fyers v3 simulator as a process (the local stack's broker).

    python -m deploy.local.fyers_simulator --port 8700 --master NSE_FO.csv \
        --master NSE_CM.csv --app-id APPID-100 --app-secret SECRET [--auto-approve]

The implementation lives in :mod:`deploy.local.fyers_sim`; this module is the
stable entry point and re-exports :class:`FyersSimulator`. Drive a running
simulator with its ``/_sim/...`` control routes (faults, prices, tokens, clock).
"""

from __future__ import annotations

import argparse
import signal
import threading

from deploy.local.fyers_sim import FyersSimulator

__all__ = ["FyersSimulator", "main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Fyers v3 simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--master", action="append", default=[], help="symbol master CSV (repeatable)")
    parser.add_argument("--app-id", action="append", default=[], help="known app id (repeatable)")
    parser.add_argument("--app-secret", action="append", default=[], help="its secret, in the same order")
    parser.add_argument("--auto-approve", action="store_true", help="skip the login page's Approve button")
    parser.add_argument("--rate-per-second", type=int, default=10)
    parser.add_argument("--rate-per-minute", type=int, default=200)
    args = parser.parse_args(argv)
    if len(args.app_id) != len(args.app_secret):
        parser.error("give one --app-secret per --app-id")
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
