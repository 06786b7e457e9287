"""The artifact store: a local directory, and GCS through the in-process storage emulator."""

from __future__ import annotations

import socket
import threading

import pytest

from common.artifacts import GcsStore, LocalDirStore, make_artifact_store
from common.errors import ArtifactNotFound, ConfigError
from common.settings import Settings

BUCKET = "router-artifacts"
MASTER = b"Fytoken,Symbol Details\n101125012345,NIFTY 23 Jan 24500 CE\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def emulator():
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def gcs(emulator, monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
    client = storage.Client(project="router-test", credentials=AnonymousCredentials())
    store = GcsStore(BUCKET, client, timeout=5.0)
    yield store
    for blob in client.list_blobs(BUCKET):
        blob.delete()


@pytest.fixture(params=["local", "gcs"])
def any_store(request, tmp_path):
    if request.param == "local":
        return LocalDirStore(tmp_path / "artifacts")
    return request.getfixturevalue("gcs")


# --- behaviour both backends share ----------------------------------------------


def test_stored_bytes_read_back_unchanged(any_store):
    any_store.put_bytes("masters/NSE_FO.csv", MASTER, content_type="text/csv")

    assert any_store.get_bytes("masters/NSE_FO.csv") == MASTER
    assert any_store.exists("masters/NSE_FO.csv")


def test_a_second_put_replaces_the_content(any_store):
    any_store.put_bytes("masters/NSE_FO.csv", b"old")
    any_store.put_bytes("masters/NSE_FO.csv", b"new")

    assert any_store.get_bytes("masters/NSE_FO.csv") == b"new"


def test_a_missing_artifact_raises_artifact_not_found(any_store):
    with pytest.raises(ArtifactNotFound) as raised:
        any_store.get_bytes("masters/BSE_FO.csv")

    assert raised.value.code == "ARTIFACT_NOT_FOUND"
    assert "masters/BSE_FO.csv" in raised.value.message
    assert not any_store.exists("masters/BSE_FO.csv")


def test_list_returns_the_sorted_names_under_a_prefix(any_store):
    for name in ("masters/NSE_FO.csv", "masters/BSE_FO.csv", "masters/old/NSE_CM.csv", "reports/day.json"):
        any_store.put_bytes(name, b"x")

    assert any_store.list("masters/") == ["masters/BSE_FO.csv", "masters/NSE_FO.csv", "masters/old/NSE_CM.csv"]
    assert any_store.list("reports") == ["reports/day.json"]
    assert len(any_store.list()) == 4
    assert any_store.list("nothing/") == []


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "../up", "a/../../b", "a//b", "dir/", "./a"])
def test_names_that_could_leave_the_store_are_refused(any_store, bad):
    with pytest.raises(ConfigError):
        any_store.put_bytes(bad, b"x")


# --- local directory specifics --------------------------------------------------


def test_local_writes_leave_no_temporary_files(tmp_path):
    store = LocalDirStore(tmp_path)
    store.put_bytes("masters/NSE_FO.csv", MASTER)

    assert sorted(p.name for p in (tmp_path / "masters").iterdir()) == ["NSE_FO.csv"]


def test_local_readers_never_see_a_partial_file(tmp_path):
    store = LocalDirStore(tmp_path)
    old, new = b"o" * 1_000_000, b"n" * 1_000_000
    store.put_bytes("big.bin", old)
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            data = store.get_bytes("big.bin")
            seen.add(data[:1] + data[-1:])

    thread = threading.Thread(target=reader)
    thread.start()
    for _ in range(20):
        store.put_bytes("big.bin", new)
        store.put_bytes("big.bin", old)
    stop.set()
    thread.join()

    assert seen <= {b"oo", b"nn"}


def test_local_list_of_a_missing_root_is_empty(tmp_path):
    assert LocalDirStore(tmp_path / "never-created").list() == []


# --- factory --------------------------------------------------------------------


def test_factory_picks_the_backend_from_settings(tmp_path):
    local = make_artifact_store(Settings(ARTIFACT_DIR=str(tmp_path)))
    gcs = make_artifact_store(Settings(ARTIFACT_BACKEND="gcs", ARTIFACT_BUCKET="b"))

    assert isinstance(local, LocalDirStore)
    assert isinstance(gcs, GcsStore)
    with pytest.raises(ConfigError):
        make_artifact_store(Settings(ARTIFACT_BACKEND="gcs"))
