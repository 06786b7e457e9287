"""Reads shared by concurrent deliveries: one quote per ticker per second, one book read per burst."""

from __future__ import annotations

import threading
import time

from common.shared_reads import QuoteCache, SharedRead


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_quote_is_reused_within_its_ttl_and_asked_again_after():
    clock, asked = Ticker(), []
    cache = QuoteCache(ttl=1.0, clock=clock)

    def fetch(ticker: str) -> float:
        asked.append(ticker)
        return 100.0 + len(asked)

    first = cache.ltp("NSE:NIFTY50-INDEX", fetch)
    clock.now = 0.9
    again = cache.ltp("NSE:NIFTY50-INDEX", fetch)
    clock.now = 1.1
    later = cache.ltp("NSE:NIFTY50-INDEX", fetch)

    assert (first, again, later) == (101.0, 101.0, 102.0) and len(asked) == 2


def test_concurrent_askers_for_one_ticker_wait_for_one_request():
    cache, asked = QuoteCache(ttl=1.0), []
    release = threading.Event()

    def fetch(ticker: str) -> float:
        asked.append(ticker)
        release.wait(2)
        return 24512.0

    results: list[float] = []
    threads = [threading.Thread(target=lambda: results.append(cache.ltp("NSE:NIFTY50-INDEX", fetch)))
               for _ in range(10)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    release.set()
    for t in threads:
        t.join()

    assert results == [24512.0] * 10 and len(asked) == 1


def test_a_failed_quote_is_not_reused():
    cache, calls = QuoteCache(ttl=10.0), []

    def flaky(ticker: str) -> float:
        calls.append(ticker)
        if len(calls) == 1:
            raise ConnectionError("down")
        return 50.0

    try:
        cache.ltp("X", flaky)
    except ConnectionError:
        pass
    assert cache.ltp("X", flaky) == 50.0 and len(calls) == 2


def test_one_book_read_serves_every_order_that_asked_while_it_gathered():
    book: SharedRead[list[str]] = SharedRead(gather=0.3)
    reads: list[int] = []

    def fetch(sending) -> list[str]:
        sending()
        reads.append(1)
        return ["row"]

    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(book.read(fetch, timeout=5))) for _ in range(8)]
    for t in threads:
        t.start()
        time.sleep(0.01)
    for t in threads:
        t.join()

    assert results == [["row"]] * 8 and len(reads) == 1


def test_an_order_asking_after_a_read_began_gets_a_read_of_its_own():
    book: SharedRead[int] = SharedRead(gather=0.0)
    reads: list[int] = []

    def fetch(sending) -> int:
        sending()
        reads.append(1)
        return len(reads)

    assert (book.read(fetch, timeout=5), book.read(fetch, timeout=5)) == (1, 2)


def test_when_the_shared_read_fails_the_others_do_not_read_on_their_own():
    book: SharedRead[list[str]] = SharedRead(gather=0.2)
    reads: list[int] = []

    def failing(sending) -> list[str]:
        sending()
        reads.append(1)
        raise ConnectionError("book unreadable")

    results: list[object] = []

    def ask() -> None:
        try:
            results.append(book.read(failing, timeout=5))
        except ConnectionError:
            results.append("leader failed")

    threads = [threading.Thread(target=ask) for _ in range(5)]
    for t in threads:
        t.start()
        time.sleep(0.01)
    for t in threads:
        t.join()

    assert len(reads) == 1 and sorted(map(str, results)) == ["None"] * 4 + ["leader failed"]


def test_a_book_read_goes_as_soon_as_its_batch_has_joined():
    book: SharedRead[list[str]] = SharedRead(gather=30.0, batch=4)
    reads: list[int] = []

    def fetch(sending) -> list[str]:
        sending()
        reads.append(1)
        return ["row"]

    results: list[list[str] | None] = []
    threads = [threading.Thread(target=lambda: results.append(book.read(fetch, timeout=5))) for _ in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Far sooner than the 30 s gather: the fourth asker filled the batch.
    assert results == [["row"]] * 4 and len(reads) == 1 and time.monotonic() - started < 5


def test_a_read_waiting_for_its_broker_slot_serves_those_who_ask_meanwhile_and_none_after_it_is_sent():
    positions: SharedRead[int] = SharedRead(gather=0.0)
    slot, sent, reads = threading.Event(), threading.Event(), []

    def fetch(sending) -> int:
        slot.wait(5)  # the leader waits for its broker slot
        sending()
        reads.append(1)
        sent.set()
        return len(reads)

    results: dict[str, int | None] = {}
    leader = threading.Thread(target=lambda: results.update(leader=positions.read(fetch, timeout=5)))
    leader.start()
    time.sleep(0.05)
    waiting = threading.Thread(target=lambda: results.update(waiting=positions.read(fetch, timeout=5)))
    waiting.start()
    time.sleep(0.05)
    slot.set()
    sent.wait(5)
    results["later"] = positions.read(fetch, timeout=5)
    for t in (leader, waiting):
        t.join()

    assert results == {"leader": 1, "waiting": 1, "later": 2} and len(reads) == 2


def test_an_asker_waiting_for_anothers_read_keeps_its_own_lease_and_stops_when_told():
    positions: SharedRead[int] = SharedRead(gather=0.0)
    release = threading.Event()

    def slow(sending) -> int:
        release.wait(5)  # the leader's broker slot is seconds away
        sending()
        return 1

    leader = threading.Thread(target=lambda: positions.read(slow, timeout=5))
    leader.start()
    time.sleep(0.05)
    renewals: list[int] = []

    def keep_lease() -> None:
        renewals.append(1)
        if len(renewals) == 2:
            raise LookupError("taken over")

    try:
        positions.read(slow, timeout=10, while_waiting=keep_lease)
        outcome = "returned"
    except LookupError:
        outcome = "stopped"
    release.set()
    leader.join()

    assert (outcome, len(renewals)) == ("stopped", 2)  # once a second, until the lease was lost
