"""Builds each function's dependencies from the settings, once per instance.

This is the edge: it is handed the environment and the settings by ``main.py``
and wires real clients. Tests build the same dependency objects themselves,
with emulator-backed or failing parts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from common import secret_table
from common.clients import Lazy, firestore_client
from common.orders import OrderStore
from common.pubsub import Publisher
from common.secrets import EnvSecretStore
from common.settings import Settings
from functions.webhook import WebhookDeps

if TYPE_CHECKING:  # the other functions' modules are imported only by their own builders
    from common.broker import FyersBroker
    from common.notify import Notifier
    from common.secrets import SecretStore
    from functions.auth import AuthDeps
    from functions.jobs.health import HealthDeps
    from functions.jobs.reconcile import ReconcileDeps
    from functions.jobs.session import SessionJobDeps
    from functions.jobs.symbols import SymbolsDeps
    from functions.order_worker import WorkerDeps
    from functions.scheduler import SchedulerDeps


def webhook_deps(settings: Settings, environ: Mapping[str, str]) -> WebhookDeps:
    """The webhook's parts. Its secret comes from the environment even in the cloud
    (deployed with ``--set-secrets``), so its cold start never imports Secret Manager."""
    secrets = EnvSecretStore(environ)
    store = Lazy(lambda: OrderStore(firestore_client(settings.project), timeout=settings.firestore_timeout))
    return WebhookDeps(
        settings=settings,
        webhook_secrets=lambda: _split(secrets.get_optional(secret_table.WEBHOOK_SECRET)),
        store=store.get,
        publisher=Publisher(settings.project, timeout=settings.publish_timeout),
        clock=settings.clock(),
    )


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def auth_deps(settings: Settings, environ: Mapping[str, str]) -> "AuthDeps":
    """The auth function's parts: the configured secret store (it writes the day's token),
    Firestore, and the notifier. Imported here, not at the top, to keep them off the
    webhook's cold start."""
    from common.secrets import make_secret_store
    from functions.auth import AuthDeps

    secrets = make_secret_store(settings, environ)
    db = Lazy(lambda: firestore_client(settings.project))
    return AuthDeps(settings=_firestore_timeout(settings, settings.login_firestore_timeout), secrets=secrets,
                    db=db.get, notifier=_notifier(settings, secrets),
                    clock=settings.clock())


def _firestore_timeout(settings: Settings, seconds: float) -> Settings:
    """``settings`` with ``firestore_timeout`` (the webhook's, read by the modules the
    functions share) set to this function's own Firestore timeout."""
    return settings.model_copy(update={"firestore_timeout": seconds})


def _notifier(settings: Settings, secrets: "SecretStore") -> "Notifier":
    """Notifications on the notifications topic (and Telegram/webhook when configured)."""
    from common.notify import Notifier

    return Notifier(settings, Publisher(settings.project, timeout=settings.publish_timeout).publish, secrets)


def worker_deps(settings: Settings, environ: Mapping[str, str]) -> "WorkerDeps":
    """The order worker's parts: Firestore, the secret store, the broker (paced, under the pacer lease), the symbol master."""
    import uuid
    from datetime import timedelta

    from common.artifacts import make_artifact_store
    from common.breaker import CircuitBreaker
    from common.broker import FyersBroker
    from common.controls import ControlsReader
    from common.ledger import Ledger
    from common.master_store import MasterRepository
    from common.pacer_lease import FirestorePacerStore, PacerLease
    from common.ratelimit import SlidingWindowLimiter
    from common.secrets import make_secret_store
    from common.session import SessionStore, TokenReader
    from functions.order_worker import WorkerDeps

    secrets = make_secret_store(settings, environ)
    db = firestore_client(settings.project)
    clock = settings.clock()
    tokens = TokenReader(secrets, ttl_seconds=settings.token_cache_seconds, wall_clock=clock)
    sessions = SessionStore(db, timeout=settings.worker_firestore_timeout)
    masters = MasterRepository(db, make_artifact_store(settings), check_seconds=settings.master_check_seconds)
    worker_id = f"{environ.get('K_REVISION', 'local')}-{uuid.uuid4().hex[:6]}"
    # Only the holder of the pacer lease calls Fyers, should Cloud Run run two instances.
    pacer = PacerLease(FirestorePacerStore(db, timeout=settings.worker_firestore_timeout), worker_id, clock=clock)
    return WorkerDeps(
        settings=settings,
        store=OrderStore(db, timeout=settings.worker_firestore_timeout),
        controls=ControlsReader(db, ttl=settings.controls_cache_seconds, timeout=settings.worker_firestore_timeout),
        breaker=CircuitBreaker(db, threshold=settings.breaker_threshold,
                               cooldown=timedelta(seconds=settings.breaker_cooldown_seconds),
                               timeout=settings.worker_firestore_timeout),
        master=masters.current,
        broker=FyersBroker.from_settings(settings, secrets.get(secret_table.FYERS_APP_ID), tokens.get),
        invalidate_token=tokens.invalidate,
        needs_login=lambda reason, now: sessions.mark_needs_login("TOKEN_DEAD", reason, now),
        notify=_notifier(settings, secrets).send,
        limiter=SlidingWindowLimiter(settings.orders_per_second, settings.orders_per_minute, gate=pacer),
        ledger=Ledger(db, timeout=settings.worker_firestore_timeout),
        worker_id=worker_id,
        clock=clock,
    )


def scheduler_deps(settings: Settings, environ: Mapping[str, str]) -> "SchedulerDeps":
    """The scheduler's parts: one Firestore client, secret store, notifier and symbol-master
    repository shared by the jobs; each job's own dependencies built on its first run."""
    from common.artifacts import make_artifact_store
    from common.master_store import MasterRepository
    from common.secrets import make_secret_store
    from functions.scheduler import SchedulerDeps

    secrets = make_secret_store(settings, environ)  # uncached: the session job must see a fresh login
    clock = settings.clock()
    db = Lazy(lambda: firestore_client(settings.project))
    notifier = _notifier(settings, secrets)
    masters = Lazy(lambda: MasterRepository(db.get(), make_artifact_store(settings),
                                            check_seconds=settings.master_check_seconds,
                                            timeout=settings.scheduler_firestore_timeout))

    def session() -> "SessionJobDeps":
        from functions.jobs.session import SessionJobDeps

        return SessionJobDeps(settings=_firestore_timeout(settings, settings.scheduler_firestore_timeout),
                              secrets=secrets, db=db.get(), notifier=notifier)

    def symbols() -> "SymbolsDeps":
        from functions.jobs.symbols import SymbolsDeps

        return SymbolsDeps(settings=settings, masters=masters.get(), notifier=notifier)

    def fyers() -> "FyersBroker":
        from common.broker import FyersBroker
        from common.session import TokenReader

        # The token is read on every call, uncached: a run must see the morning login. The
        # adapter rebuilds its SDK model only when the token changes.
        return FyersBroker.from_settings(settings, secrets.get(secret_table.FYERS_APP_ID), TokenReader(secrets, ttl_seconds=0, wall_clock=clock).get)

    broker = Lazy(fyers)

    def reconcile() -> "ReconcileDeps":
        from functions.jobs.reconcile import ReconcileDeps

        from common.ledger import Ledger

        timeout = settings.scheduler_firestore_timeout
        return ReconcileDeps(settings=settings, store=OrderStore(db.get(), timeout=timeout), broker=broker.get,
                             notifier=notifier, ledger=Ledger(db.get(), timeout=timeout), timeout=timeout)

    def health() -> "HealthDeps":
        from functions.jobs.health import HealthDeps

        return HealthDeps(settings=settings, db=db.get(), masters=masters.get(), notifier=notifier,
                          timeout=settings.scheduler_firestore_timeout)

    return SchedulerDeps(settings=settings, session=session, symbols=symbols, reconcile=reconcile, health=health,
                         clock=clock)
