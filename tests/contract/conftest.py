"""The Fyers simulator, started once per session on a free port, and adapters pointed at it.

The simulator's clock is frozen at 10:00 IST on Monday 2026-11-23 and its masters
are generated for that day (``deploy.local.mastergen``). Its rate limits are
raised so the suite never trips them by accident; tests about rate limits set
their own. Every test starts from a reset simulator.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

from tests.secret_scan import register
from common.broker import FyersBroker, OrderRequest
from deploy.local.fyers_simulator import FyersSimulator
from deploy.local.mastergen import generate_masters

IST = timezone(timedelta(hours=5, minutes=30))
TODAY = date(2026, 11, 23)
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=IST)
APP_ID = "SIMAPP1234-100"
APP_SECRET = "sim-secret-9f8e7d"
register(APP_SECRET, "other-secret")
OTHER_APP_ID = "OTHERAPP99-100"

FUT = "NSE:NIFTY26NOVFUT"  # lot 65, tick 0.1
OPT = "NSE:NIFTY26NOV24500CE"  # lot 65, tick 0.05
EQ = "NSE:SBIN-EQ"  # lot 1, tick 0.05
INDEX = "NSE:NIFTY50-INDEX"

CONNECT_TIMEOUT = 0.5
READ_TIMEOUT = 0.5


@pytest.fixture(scope="session")
def sim() -> Iterator[FyersSimulator]:
    simulator = FyersSimulator(
        masters=list(generate_masters(TODAY).values()),
        apps={APP_ID: APP_SECRET, OTHER_APP_ID: "other-secret"},
        clock=lambda: NOW,
        auto_approve=True,
        rate_per_second=100_000,
        rate_per_minute=1_000_000,
    ).start()
    yield simulator
    simulator.stop()


@pytest.fixture(autouse=True)
def fresh_sim(sim: FyersSimulator) -> FyersSimulator:
    sim.reset()
    return sim


@pytest.fixture
def token(sim: FyersSimulator) -> str:
    return sim.mint_token(APP_ID)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "sdk-logs"


@pytest.fixture
def broker(sim: FyersSimulator, token: str, log_dir: Path) -> FyersBroker:
    return make_broker(sim, lambda: token, log_dir)


def make_broker(sim: FyersSimulator, token_provider, log_dir: Path, *, api_base: str | None = None,
                data_base: str | None = None) -> FyersBroker:
    return FyersBroker(
        APP_ID,
        token_provider,
        api_base=api_base or sim.api_base,
        data_base=data_base or sim.data_base,
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        log_dir=log_dir,
    )


def market(symbol: str = FUT, qty: int = 65, side: int = 1, tag: str | None = "tv1", **kw) -> OrderRequest:
    return OrderRequest(symbol=symbol, qty=qty, side=side, type=2, product=kw.pop("product", "MARGIN"), tag=tag, **kw)
