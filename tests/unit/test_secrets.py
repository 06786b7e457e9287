"""The secret store: Secret Manager (real client, local fake), env overlay, cache, factory."""

from __future__ import annotations

import base64
import logging
import stat
import threading

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud.secretmanager import SecretManagerServiceClient

from common.errors import ConfigError, SecretNotFound
from common.secrets import (
    CachedSecretStore,
    EnvSecretStore,
    InMemorySecretStore,
    SecretManagerStore,
    make_secret_store,
)
from common.settings import Settings
from tests.fakes.secret_manager import FakeSecretManager

PROJECT = "router-test"


@pytest.fixture(scope="module")
def fake():
    with FakeSecretManager() as server:
        yield server


@pytest.fixture
def store(fake):
    client = SecretManagerServiceClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=fake.endpoint),
    )
    return SecretManagerStore(PROJECT, client, timeout=5.0)


# --- Secret Manager, through the real client ------------------------------------


def test_get_reads_the_latest_version(fake, store):
    fake.create_secret(PROJECT, "FYERS_APP_ID", "APP-old", "APP-new")

    assert store.get("FYERS_APP_ID") == "APP-new"


def test_put_adds_a_version_and_disables_the_older_enabled_ones(fake, store):
    fake.create_secret(PROJECT, "FYERS_ACCESS_TOKEN", "tok-1", "tok-2")
    fake.set_state(PROJECT, "FYERS_ACCESS_TOKEN", 1, "DISABLED")

    store.put("FYERS_ACCESS_TOKEN", "tok-3")

    assert fake.versions(PROJECT, "FYERS_ACCESS_TOKEN") == [
        (1, "DISABLED", "tok-1"),
        (2, "DISABLED", "tok-2"),
        (3, "ENABLED", "tok-3"),
    ]
    assert store.get("FYERS_ACCESS_TOKEN") == "tok-3"
    # One add, one list, one disable (version 1 was already disabled), then the read.
    calls = [entry for entry in fake.requests if "FYERS_ACCESS_TOKEN" in entry[1]]
    assert [method for method, _ in calls] == ["POST", "GET", "POST", "GET"]
    assert calls[2][1].endswith("/versions/2:disable")


def test_put_never_disables_a_newer_version_added_concurrently(fake, store, monkeypatch):
    fake.create_secret(PROJECT, "FYERS_ACCESS_TOKEN_RACE", "tok-1")
    add_version = fake.add_version

    def add_then_another_process_adds_too(secret, **kwargs):
        answer = add_version(secret, **kwargs)
        add_version(secret, **{**kwargs, "body": {"payload": {"data": "dG9rLTM="}}})  # "tok-3"
        return answer

    monkeypatch.setattr(fake, "add_version", add_then_another_process_adds_too)

    store.put("FYERS_ACCESS_TOKEN_RACE", "tok-2")

    assert fake.versions(PROJECT, "FYERS_ACCESS_TOKEN_RACE") == [
        (1, "DISABLED", "tok-1"),
        (2, "ENABLED", "tok-2"),  # the other put disables it, not this one
        (3, "ENABLED", "tok-3"),
    ]
    assert store.get("FYERS_ACCESS_TOKEN_RACE") == "tok-3"


def test_put_into_a_secret_that_does_not_exist_raises_secret_not_found(store):
    with pytest.raises(SecretNotFound) as raised:
        store.put("NO_SUCH_SECRET", "s3cr3t-value")

    assert "s3cr3t-value" not in str(raised.value)
    assert "NO_SUCH_SECRET" in raised.value.message


def test_missing_secret_raises_secret_not_found_naming_only_the_secret(store):
    with pytest.raises(SecretNotFound) as raised:
        store.get("MISSING_SECRET")

    assert raised.value.code == "SECRET_NOT_FOUND"
    assert "MISSING_SECRET" in raised.value.message
    assert store.get_optional("MISSING_SECRET") is None


def test_secret_without_versions_is_not_found(fake, store):
    fake.create_secret(PROJECT, "EMPTY_SECRET")

    assert store.get_optional("EMPTY_SECRET") is None


def test_disabled_latest_version_is_not_found_and_the_value_is_not_revealed(fake, store):
    fake.create_secret(PROJECT, "OPERATOR_KEY", "op-key-value")
    fake.set_state(PROJECT, "OPERATOR_KEY", 1, "DISABLED")

    with pytest.raises(SecretNotFound) as raised:
        store.get("OPERATOR_KEY")

    assert "op-key-value" not in str(raised.value)


def test_put_logs_nothing_secret_even_at_debug(fake, store, caplog, monkeypatch):
    # Worst case: the app logs everything at DEBUG and lets the google loggers propagate.
    monkeypatch.setattr(logging.getLogger("google"), "propagate", True)
    monkeypatch.setattr(logging.getLogger("google.cloud.secretmanager_v1"), "level", logging.NOTSET)
    fake.create_secret(PROJECT, "FYERS_REFRESH_TOKEN", "refresh-1")
    caplog.set_level(logging.DEBUG)

    store.put("FYERS_REFRESH_TOKEN", "refresh-2-very-secret")

    encoded = base64.b64encode(b"refresh-2-very-secret").decode()
    for record in caplog.records:
        dump = repr(record.__dict__)
        assert "refresh-2-very-secret" not in dump and encoded not in dump


def test_invalid_names_are_refused_before_any_call(store):
    with pytest.raises(ConfigError):
        store.get("../etc/passwd")


def test_the_client_is_created_once_under_concurrent_first_use(monkeypatch):
    from google.cloud import secretmanager

    created = []

    class CountingClient:
        def __init__(self) -> None:
            created.append(self)

    monkeypatch.setattr(secretmanager, "SecretManagerServiceClient", CountingClient)
    lazy = SecretManagerStore(PROJECT, timeout=1.0)
    barrier = threading.Barrier(8)

    def first_use() -> None:
        barrier.wait()
        lazy._get_client()

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(created) == 1


# --- environment + overlay ------------------------------------------------------


def test_env_store_reads_the_variable_of_the_same_name(tmp_path):
    store = EnvSecretStore({"WEBHOOK_SECRET": "hook-secret", "FYERS_PIN": ""}, tmp_path)

    assert store.get("WEBHOOK_SECRET") == "hook-secret"
    assert store.get_optional("FYERS_PIN") is None  # empty counts as unset
    with pytest.raises(SecretNotFound):
        store.get("FYERS_SECRET_KEY")


def test_env_store_put_writes_a_private_overlay_that_other_processes_see(tmp_path):
    overlay = tmp_path / "secrets"
    login = EnvSecretStore({"FYERS_ACCESS_TOKEN": "stale-from-env"}, overlay)

    login.put("FYERS_ACCESS_TOKEN", "fresh-token")

    # Another function, another process: a new store over the same directory.
    worker = EnvSecretStore({"FYERS_ACCESS_TOKEN": "stale-from-env"}, overlay)
    assert worker.get("FYERS_ACCESS_TOKEN") == "fresh-token"
    assert stat.S_IMODE((overlay / "FYERS_ACCESS_TOKEN").stat().st_mode) == 0o600
    assert [p.name for p in overlay.iterdir()] == ["FYERS_ACCESS_TOKEN"]  # no temp files left


def test_env_store_without_overlay_cannot_put():
    with pytest.raises(ConfigError):
        EnvSecretStore({}, None).put("FYERS_ACCESS_TOKEN", "x")


def test_env_store_refuses_names_that_would_leave_the_overlay(tmp_path):
    with pytest.raises(ConfigError):
        EnvSecretStore({}, tmp_path).put("../escape", "x")


# --- cache ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_serves_the_cached_value_until_the_ttl_passes():
    inner = InMemorySecretStore({"FYERS_ACCESS_TOKEN": "tok-1"})
    clock = Clock()
    cached = CachedSecretStore(inner, ttl_seconds=60, clock=clock)

    assert cached.get("FYERS_ACCESS_TOKEN") == "tok-1"
    inner.put("FYERS_ACCESS_TOKEN", "tok-2")
    clock.now += 59
    assert cached.get("FYERS_ACCESS_TOKEN") == "tok-1"
    clock.now += 1
    assert cached.get("FYERS_ACCESS_TOKEN") == "tok-2"


def test_invalidate_makes_the_next_read_go_to_the_store():
    inner = InMemorySecretStore({"FYERS_ACCESS_TOKEN": "tok-1"})
    cached = CachedSecretStore(inner, ttl_seconds=60, clock=Clock())
    cached.get("FYERS_ACCESS_TOKEN")
    inner.put("FYERS_ACCESS_TOKEN", "tok-2")

    cached.invalidate("FYERS_ACCESS_TOKEN")

    assert cached.get("FYERS_ACCESS_TOKEN") == "tok-2"


def test_a_read_in_flight_during_invalidate_does_not_cache_its_stale_value():
    class SlowStore(InMemorySecretStore):
        def __init__(self) -> None:
            super().__init__({"FYERS_ACCESS_TOKEN": "stale"})
            self.reading = threading.Event()
            self.release = threading.Event()

        def get(self, name: str) -> str:
            value = super().get(name)
            self.reading.set()
            self.release.wait(5)
            return value

    inner = SlowStore()
    cached = CachedSecretStore(inner, ttl_seconds=60, clock=Clock())
    reader = threading.Thread(target=cached.get, args=("FYERS_ACCESS_TOKEN",))
    reader.start()
    inner.reading.wait(5)
    cached.invalidate("FYERS_ACCESS_TOKEN")
    inner.release.set()
    reader.join()

    InMemorySecretStore.put(inner, "FYERS_ACCESS_TOKEN", "fresh")
    assert cached.get("FYERS_ACCESS_TOKEN") == "fresh"


def test_cache_put_writes_through_and_drops_the_cached_value():
    inner = InMemorySecretStore({"FYERS_ACCESS_TOKEN": "tok-1"})
    cached = CachedSecretStore(inner, ttl_seconds=60, clock=Clock())
    cached.get("FYERS_ACCESS_TOKEN")

    cached.put("FYERS_ACCESS_TOKEN", "tok-2")

    assert inner.get("FYERS_ACCESS_TOKEN") == "tok-2"
    assert cached.get("FYERS_ACCESS_TOKEN") == "tok-2"


def test_zero_ttl_never_caches():
    inner = InMemorySecretStore({"OPERATOR_KEY": "k1"})
    cached = CachedSecretStore(inner, ttl_seconds=0, clock=Clock())
    cached.get("OPERATOR_KEY")
    inner.put("OPERATOR_KEY", "k2")

    assert cached.get("OPERATOR_KEY") == "k2"


def test_cache_passes_missing_secrets_through():
    cached = CachedSecretStore(InMemorySecretStore(), ttl_seconds=60, clock=Clock())

    assert cached.get_optional("TELEGRAM_BOT_TOKEN") is None


# --- factory --------------------------------------------------------------------


def test_factory_picks_the_backend_from_settings(tmp_path):
    env_store = make_secret_store(Settings(), {"OPERATOR_KEY": "k"}, overlay_dir=tmp_path)
    sm_store = make_secret_store(
        Settings(SECRET_BACKEND="secretmanager", GOOGLE_CLOUD_PROJECT="p1", SECRET_PROJECT="p2"), {}
    )

    assert isinstance(env_store, EnvSecretStore)
    assert env_store.get("OPERATOR_KEY") == "k"
    assert isinstance(sm_store, SecretManagerStore)
    assert sm_store._secret_path("OPERATOR_KEY") == "projects/p2/secrets/OPERATOR_KEY"
