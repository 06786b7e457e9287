"""Benchmark of the symbol master on a full-size generated NSE_FO (~75,000 rows).

Run: ``python -m tests.bench.bench_symbols``. Targets: parse < 1.5 s, look-up and
resolve < 50 µs per call, index memory < 60 MB.
"""

from __future__ import annotations

import gc
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import date
from typing import Callable

from common.selectors import parse_expiry, parse_strike
from common.symbols import SymbolMaster
from deploy.local import mastergen

TODAY = date(2026, 11, 23)


def best_of(repeats: int, action: Callable[[], object]) -> float:
    """The fastest of ``repeats`` runs, in seconds."""
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return min(timings)


def per_call_us(calls: int, action: Callable[[], object]) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        action()
    return (time.perf_counter() - start) / calls * 1e6


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * 4096 / 1e6


_FRESH_PROCESS = """
import gc, sys
from pathlib import Path
from common.symbols import SymbolMaster
from tests.bench.bench_symbols import rss_mb
gc.collect(); before = rss_mb()
path = Path(sys.argv[2])
master = SymbolMaster.from_bytes(path.read_bytes()) if sys.argv[1] == "bytes" else SymbolMaster.from_files(path)
gc.collect(); print(rss_mb() - before)
"""


def fresh_process_rss_delta(kind: str, path: str) -> float:
    """RSS growth of a new interpreter that loads the index (``bytes``) or parses the CSV (``csv``)."""
    answer = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, kind, path], capture_output=True, text=True, check=True
    )
    return float(answer.stdout)


def main() -> None:
    masters = mastergen.generate_masters(TODAY, full_size=True)
    texts = list(masters.values())
    rows = sum(text.count("\n") for text in texts)
    size_mb = sum(len(text) for text in texts) / 1e6

    parse_s = best_of(3, lambda: SymbolMaster.from_csv(*texts))

    tracemalloc.start()
    master = SymbolMaster.from_csv(*texts)
    gc.collect()
    traced_mb, traced_peak_mb = (size / 1e6 for size in tracemalloc.get_traced_memory())
    tracemalloc.stop()

    tickers = random.Random(7).sample(sorted(master._rows), 5000)
    lookups = iter(tickers * 40)
    lookup_us = per_call_us(len(tickers) * 40, lambda: master.lookup(next(lookups)))

    weekly, monthly = parse_expiry("WEEKLY"), parse_expiry("MONTHLY")
    price_strike, atm_plus = parse_strike(24500), parse_strike("ATM+2")
    resolve_price_us = per_call_us(
        100_000,
        lambda: master.resolve("NIFTY", option_type="CE", expiry=weekly, strike=price_strike, today=TODAY),
    )
    resolve_atm_us = per_call_us(
        100_000,
        lambda: master.resolve(
            "BANKNIFTY",
            option_type="PE",
            expiry=monthly,
            strike=atm_plus,
            today=TODAY,
            price_of=lambda _ticker: 52049.5,
        ),
    )
    future_us = per_call_us(100_000, lambda: master.resolve_future("NIFTY", 2, TODAY))

    blob = master.to_bytes()
    dump_s = best_of(3, master.to_bytes)
    load_s = best_of(5, lambda: SymbolMaster.from_bytes(blob))
    with tempfile.TemporaryDirectory() as scratch:
        index_path, csv_path = f"{scratch}/index.bin", f"{scratch}/NSE_FO.csv"
        with open(index_path, "wb") as handle:
            handle.write(blob)
        with open(csv_path, "w") as handle:
            handle.write("".join(texts))
        rss_from_bytes = fresh_process_rss_delta("bytes", index_path)
        rss_from_csv = fresh_process_rss_delta("csv", csv_path)

    figures = [
        ("rows (NSE_FO + BSE_FO + NSE_CM)", f"{rows:,}", ""),
        ("CSV text", f"{size_mb:.1f} MB", ""),
        ("parse + index (best of 3)", f"{parse_s:.3f} s", "< 1.5 s" + _ok(parse_s < 1.5)),
        ("index memory (tracemalloc)", f"{traced_mb:.1f} MB", "< 60 MB" + _ok(traced_mb < 60)),
        ("peak while parsing (tracemalloc)", f"{traced_peak_mb:.1f} MB", "includes the CSV lines"),
        ("RSS growth, fresh process, from_bytes", f"{rss_from_bytes:.1f} MB", "< 60 MB" + _ok(rss_from_bytes < 60)),
        ("RSS growth, fresh process, from CSV", f"{rss_from_csv:.1f} MB", ""),
        ("lookup(ticker)", f"{lookup_us:.2f} µs", "< 50 µs" + _ok(lookup_us < 50)),
        ("resolve(option, price strike)", f"{resolve_price_us:.2f} µs", "< 50 µs" + _ok(resolve_price_us < 50)),
        ("resolve(option, ATM+2)", f"{resolve_atm_us:.2f} µs", "< 50 µs" + _ok(resolve_atm_us < 50)),
        ("resolve_future(n=2)", f"{future_us:.2f} µs", "< 50 µs" + _ok(future_us < 50)),
        ("to_bytes size (zlib-compressed pickle)", f"{len(blob) / 1e6:.2f} MB", ""),
        ("to_bytes time", f"{dump_s * 1e3:.0f} ms", ""),
        ("from_bytes time (best of 5)", f"{load_s * 1e3:.0f} ms", ""),
    ]
    width = max(len(name) for name, _, _ in figures)
    print(f"{'measure':<{width}}  {'value':>12}  target")
    for name, value, target in figures:
        print(f"{name:<{width}}  {value:>12}  {target}")


def _ok(passed: bool) -> str:
    return "  ok" if passed else "  MISSED"


if __name__ == "__main__":
    main()
