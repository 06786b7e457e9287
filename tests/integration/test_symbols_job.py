"""The ``symbols`` job and the symbol-master repository, specified by what the trader's
router must do when Fyers' files are good, unchanged, truncated, garbage or unreachable.

Real parts: the Firestore and Pub/Sub emulators (pointer, notifications topic), a
local HTTP server standing in for ``public.fyers.in/sym_details`` and serving
generated masters, and the artifact store in a temporary directory (one scenario
on the in-process Cloud Storage emulator).
"""

from __future__ import annotations

import json
import threading
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from common.artifacts import LocalDirStore
from common.errors import MasterUnavailable
from common.master_store import MasterRepository
from common.notify import Notifier
from common.pubsub import Publisher
from common.secrets import InMemorySecretStore
from common.selectors import ExpirySelector, StrikeSelector
from common.settings import load_settings
from deploy.local.mastergen import generate_masters
from functions.jobs.symbols import SymbolsDeps, run_symbols

pytestmark = pytest.mark.emulators

IST = timezone(timedelta(hours=5, minutes=30))
TODAY = date(2026, 11, 23)  # a Monday
REFRESH_AT = datetime(2026, 11, 23, 8, 15, tzinfo=IST)
CONFIGURED = ("NSE_FO", "BSE_FO", "NSE_CM")


class MasterServer:
    """Serves ``/sym_details/<NAME>.csv`` from a dict; scripted misbehaviour per file."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.status: dict[str, int] = {}  # name -> HTTP status to answer instead
        self.short: dict[str, int] = {}  # name -> bytes actually sent (Content-Length says more)
        self.requests: list[str] = []
        server = ThreadingHTTPServer(("127.0.0.1", 0), _MasterHandler)
        server.daemon_threads = True
        server.masters = self  # type: ignore[attr-defined]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/sym_details"

    def serve_day(self, day: date, **kwargs: Any) -> None:
        """Serve the generated masters of ``day`` (the configured three)."""
        masters = generate_masters(day, **kwargs)
        self.files = {name: masters[name].encode() for name in CONFIGURED}
        self.status.clear()
        self.short.clear()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _MasterHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        masters: MasterServer = self.server.masters  # type: ignore[attr-defined]
        name = self.path.rsplit("/", 1)[-1].removesuffix(".csv")
        masters.requests.append(name)
        body = masters.files.get(name)
        status = masters.status.get(name, 200 if body is not None else 404)
        if status != 200:
            body = b"<html>error</html>"
        self.send_response(status)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        sent = masters.short.get(name)
        self.wfile.write(body if sent is None else body[:sent])
        if sent is not None:
            self.close_connection = True


@pytest.fixture(scope="module")
def master_server() -> Iterator[MasterServer]:
    server = MasterServer()
    yield server
    server.stop()


class Ticker:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env(emulators, clean_firestore, topics, master_server, gcp_project) -> dict[str, str]:
    master_server.serve_day(TODAY)
    return {**emulators, **topics.env(), "GOOGLE_CLOUD_PROJECT": gcp_project,
            "SYMBOL_MASTER_BASE": master_server.base, "SYMBOL_MASTERS": ",".join(CONFIGURED)}


@pytest.fixture
def artifacts(tmp_path) -> LocalDirStore:
    return LocalDirStore(tmp_path / "artifacts")


def make_deps(env: dict[str, str], firestore_db, artifacts, **overrides: str) -> SymbolsDeps:
    settings = load_settings({**env, **overrides})
    repository = MasterRepository(firestore_db, artifacts, check_seconds=settings.master_check_seconds)
    publisher = Publisher(settings.project, timeout=5.0)
    return SymbolsDeps(settings=settings, masters=repository,
                       notifier=Notifier(settings, publisher.publish, InMemorySecretStore()),
                       download_timeout=2.0)


@pytest.fixture
def deps(env, firestore_db, artifacts) -> SymbolsDeps:
    return make_deps(env, firestore_db, artifacts)


def notifications(topics) -> list[dict[str, Any]]:
    return [json.loads(m.data) for m in topics.pull(topics.notifications)]


def nifty_atm_call(master, today: date = TODAY):
    return master.resolve("NIFTY", option_type="CE", expiry=ExpirySelector("WEEKLY"),
                          strike=StrikeSelector("ATM"), today=today, price_of=lambda _: 24512.0)


# --- a good refresh ----------------------------------------------------------------


def test_served_masters_become_a_stored_version_and_the_pointer_moves(deps, artifacts, master_server, topics):
    report = run_symbols(deps, REFRESH_AT)

    assert report["ok"] is True and report["status"] == "updated"
    version = report["version"]
    assert version.startswith("20261123T081500-")
    assert sorted(master_server.requests[-3:]) == sorted(CONFIGURED)
    pointer = deps.masters.pointer()
    assert pointer is not None and pointer.version == version and pointer.previous_version is None
    assert pointer.source == master_server.base and pointer.data_date == "2026-11-23"
    for name in CONFIGURED:
        stored = artifacts.get_bytes(f"symbol-master/{version}/{name}.csv")
        assert stored == master_server.files[name]
        assert pointer.rows[name] == report["rows"][name] == stored.count(b"\n")
    assert pointer.index_object == f"symbol-master/{version}/index.bin"
    assert notifications(topics) == []


def test_the_worker_side_repository_serves_the_published_version(deps, artifacts, firestore_db):
    version = run_symbols(deps, REFRESH_AT)["version"]

    worker = MasterRepository(firestore_db, artifacts, check_seconds=300)
    contract = nifty_atm_call(worker.current())

    assert worker.loaded_version == version
    assert contract.ticker == "NSE:NIFTY26NOV24500CE" and contract.lot_size == 65


def test_the_same_files_again_make_no_new_version(deps, artifacts):
    first = run_symbols(deps, REFRESH_AT)
    again = run_symbols(deps, REFRESH_AT + timedelta(hours=1))

    assert again == {**again, "ok": True, "status": "unchanged", "version": first["version"]}
    pointer = deps.masters.pointer()
    assert pointer.version == first["version"]
    assert pointer.checked_at == REFRESH_AT + timedelta(hours=1)  # the health job's "master age"
    assert {name.split("/")[1] for name in artifacts.list("symbol-master/")} == {first["version"]}


def test_the_next_days_files_become_a_new_version_pointing_back(deps, master_server):
    first = run_symbols(deps, REFRESH_AT)
    master_server.serve_day(TODAY + timedelta(days=1))

    second = run_symbols(deps, REFRESH_AT + timedelta(days=1))

    assert second["status"] == "updated" and second["version"] > first["version"]
    assert second["previous_version"] == first["version"]
    assert deps.masters.pointer().previous_version == first["version"]


def test_a_worker_picks_up_a_new_version_without_a_restart(deps, artifacts, firestore_db, master_server):
    first = run_symbols(deps, REFRESH_AT)["version"]
    ticker = Ticker()
    worker = MasterRepository(firestore_db, artifacts, check_seconds=300, clock=ticker)
    assert nifty_atm_call(worker.current()).expiry == date(2026, 11, 24)

    master_server.serve_day(TODAY + timedelta(days=2))  # the 24 Nov contracts are gone on the 25th
    second = run_symbols(deps, REFRESH_AT + timedelta(days=2))["version"]
    ticker.now += 299
    assert worker.loaded_version == first and worker.current().expiries("NIFTY")[0] == date(2026, 11, 24)

    ticker.now += 2
    master = worker.current()

    assert worker.loaded_version == second
    assert master.expiries("NIFTY")[0] == date(2026, 12, 1)


def test_a_worker_keeps_its_version_when_the_pointer_names_a_missing_one(deps, artifacts, firestore_db, tmp_path):
    version = run_symbols(deps, REFRESH_AT)["version"]
    ticker = Ticker()
    worker = MasterRepository(firestore_db, artifacts, check_seconds=300, clock=ticker)
    worker.current()
    firestore_db.collection("system").document("symbol_master").update({"version": "29990101T000000-deadbeef",
                                                                         "objects.index": "symbol-master/x/index.bin",
                                                                         "objects.NSE_FO": "symbol-master/x/NSE_FO.csv"})
    ticker.now += 301

    master = worker.current()

    assert worker.loaded_version == version
    assert nifty_atm_call(master).ticker == "NSE:NIFTY26NOV24500CE"


def test_a_corrupt_index_falls_back_to_the_raw_files(deps, artifacts, firestore_db):
    version = run_symbols(deps, REFRESH_AT)["version"]
    artifacts.put_bytes(f"symbol-master/{version}/index.bin", b"not an index")

    worker = MasterRepository(firestore_db, artifacts, check_seconds=300)

    assert nifty_atm_call(worker.current()).ticker == "NSE:NIFTY26NOV24500CE"


def test_a_worker_with_nothing_published_gets_master_unavailable(emulators, clean_firestore, firestore_db, artifacts):
    worker = MasterRepository(firestore_db, artifacts, check_seconds=300)

    with pytest.raises(MasterUnavailable, match="run the symbols job"):
        worker.current()


def test_publish_is_simple_to_call_from_other_tests(emulators, clean_firestore, firestore_db, artifacts):
    repository = MasterRepository(firestore_db, artifacts, check_seconds=300)
    masters = generate_masters(TODAY)

    version = repository.publish({"NSE_FO": masters["NSE_FO"], "NSE_CM": masters["NSE_CM"]},
                                 source="test", now=REFRESH_AT)

    assert repository.loaded_version is None
    assert nifty_atm_call(repository.current()).ticker == "NSE:NIFTY26NOV24500CE"
    assert repository.loaded_version == version


def test_the_pointer_never_moves_back_to_an_older_version(emulators, clean_firestore, firestore_db, artifacts):
    repository = MasterRepository(firestore_db, artifacts, check_seconds=300)
    masters = generate_masters(TODAY)
    newer = repository.publish({"NSE_FO": masters["NSE_FO"]}, source="test", now=REFRESH_AT + timedelta(minutes=1))

    older = repository.publish({"NSE_FO": masters["NSE_FO"] + masters["BSE_FO"]}, source="test", now=REFRESH_AT)

    assert older < newer and repository.pointer().version == newer


def test_versions_work_on_cloud_storage_too(emulators, clean_firestore, firestore_db, monkeypatch):
    from gcp_storage_emulator.server import create_server
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from common.artifacts import GcsStore
    from deploy.local.emulators import free_port

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="masters")
    server.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        client = storage.Client(project="test", credentials=AnonymousCredentials())
        store = GcsStore("masters", client, timeout=5.0)
        repository = MasterRepository(firestore_db, store, check_seconds=300)
        masters = generate_masters(TODAY)
        version = repository.publish({name: masters[name] for name in CONFIGURED}, source="test", now=REFRESH_AT)

        worker = MasterRepository(firestore_db, store, check_seconds=300)

        assert nifty_atm_call(worker.current()).ticker == "NSE:NIFTY26NOV24500CE"
        assert store.list(f"symbol-master/{version}/") == [
            f"symbol-master/{version}/{name}" for name in ("BSE_FO.csv", "NSE_CM.csv", "NSE_FO.csv", "index.bin")]
    finally:
        server.stop()


# --- refreshes that must not replace the current version -----------------------------


def assert_refused(deps, topics, report, version, error, retryable):
    assert report["ok"] is False and report["status"] == "failed"
    assert report["error"] == error and report["retryable"] is retryable
    assert report["kept_version"] == version and report["notified"] is True
    assert deps.masters.pointer().version == version
    sent = notifications(topics)
    assert [(n["kind"], n["severity"], n["text"]) for n in sent] == [
        ("MASTER_REFRESH_FAILED", "ERROR", report["reason"])]
    assert sent[0]["fields"]["kept_version"] == version


def test_a_truncated_master_keeps_the_pointer_and_notifies(deps, master_server, topics):
    version = run_symbols(deps, REFRESH_AT)["version"]
    lines = master_server.files["NSE_FO"].split(b"\n")
    master_server.files["NSE_FO"] = b"\n".join(lines[: len(lines) // 3]) + b"\n"

    report = run_symbols(deps, REFRESH_AT + timedelta(hours=1))

    assert_refused(deps, topics, report, version, "MASTER_INVALID", retryable=False)
    assert "NSE_FO" in report["reason"] and "less than half" in report["reason"]


def test_garbage_instead_of_a_master_keeps_the_pointer_and_notifies(deps, master_server, topics):
    version = run_symbols(deps, REFRESH_AT)["version"]
    master_server.files["BSE_FO"] = b"<html><body>Service temporarily unavailable</body></html>\n" * 40

    report = run_symbols(deps, REFRESH_AT + timedelta(hours=1))

    assert_refused(deps, topics, report, version, "MASTER_INVALID", retryable=False)
    assert "BSE_FO" in report["reason"] and "21 columns" in report["reason"]


def test_binary_garbage_is_refused(deps, master_server, topics):
    version = run_symbols(deps, REFRESH_AT)["version"]
    master_server.files["NSE_CM"] = bytes(range(256)) * 100

    report = run_symbols(deps, REFRESH_AT + timedelta(hours=1))

    assert_refused(deps, topics, report, version, "MASTER_INVALID", retryable=False)
    assert "NSE_CM is not UTF-8" in report["reason"]


def test_a_transfer_cut_short_is_a_retryable_failure(deps, master_server, topics):
    version = run_symbols(deps, REFRESH_AT)["version"]
    master_server.serve_day(TODAY + timedelta(days=1))
    master_server.short["NSE_FO"] = 50_000

    report = run_symbols(deps, REFRESH_AT + timedelta(days=1))

    assert_refused(deps, topics, report, version, "MASTER_DOWNLOAD_FAILED", retryable=True)
    assert "NSE_FO" in report["reason"]


def test_an_http_error_from_the_source_is_a_retryable_failure(deps, master_server, topics):
    version = run_symbols(deps, REFRESH_AT)["version"]
    master_server.status["NSE_FO"] = 503

    report = run_symbols(deps, REFRESH_AT + timedelta(hours=1))

    assert_refused(deps, topics, report, version, "MASTER_DOWNLOAD_FAILED", retryable=True)
    assert report["reason"] == "NSE_FO.csv: HTTP 503 from the master source."


def test_an_unreachable_source_is_a_retryable_failure(env, firestore_db, artifacts, topics):
    from deploy.local.emulators import free_port

    deps = make_deps(env, firestore_db, artifacts, SYMBOL_MASTER_BASE=f"http://127.0.0.1:{free_port()}/x")

    report = run_symbols(deps, REFRESH_AT)

    assert report["error"] == "MASTER_DOWNLOAD_FAILED" and report["retryable"] is True
    assert report["kept_version"] is None and "connection failed" in report["reason"]
    assert deps.masters.pointer() is None
    assert [n["kind"] for n in notifications(topics)] == ["MASTER_REFRESH_FAILED"]


def test_a_master_above_the_size_cap_is_refused(env, firestore_db, artifacts, topics):
    deps = make_deps(env, firestore_db, artifacts, MASTER_MAX_BYTES="100000")

    report = run_symbols(deps, REFRESH_AT)

    assert report["error"] == "MASTER_INVALID" and "100,000-byte cap" in report["reason"]
    assert deps.masters.pointer() is None


def test_a_master_whose_contracts_have_all_expired_is_refused(deps, master_server, topics):
    version = run_symbols(deps, REFRESH_AT)["version"]
    master_server.serve_day(date(2026, 8, 3))  # a stale copy: its last NIFTY expiry is in October

    report = run_symbols(deps, REFRESH_AT + timedelta(hours=1))

    assert_refused(deps, topics, report, version, "MASTER_INVALID", retryable=False)
    assert report["reason"].startswith("NIFTY cannot be resolved for 2026-11-23")


def test_a_first_version_needs_a_minimum_of_rows(deps, master_server, topics):
    master_server.files["NSE_CM"] = master_server.files["NSE_CM"].split(b"\n", 3)[0] + b"\n"

    report = run_symbols(deps, REFRESH_AT)

    assert report["error"] == "MASTER_INVALID" and "NSE_CM has 1 row(s)" in report["reason"]
    assert deps.masters.pointer() is None
