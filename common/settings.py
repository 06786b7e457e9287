"""The router's configuration: one typed object, read once from the environment.

Entry points call :func:`load_settings` at the edge and pass the result down.
Only ``main.py`` touches the process environment: it hands it to :func:`load_settings`.
Secrets are *not* settings: only the names under which the secret store keeps
them are (see ``common/secrets.py``).
"""

from __future__ import annotations

from datetime import time
from urllib.parse import urlsplit
from typing import Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.clock import Clock, shifted_clock
from common.errors import ConfigError

FYERS_PRODUCTION_API = "https://api-t1.fyers.in/api/v3"

# TradingView's webhook senders (shared/tradingview.md); ALLOWED_SOURCE_IPS=tradingview uses them.
TRADINGVIEW_IPS = ("52.89.214.238", "34.212.75.30", "54.218.53.128", "52.32.178.7")


def _csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseModel):
    """Every knob of the router. Field aliases are the environment variable names."""

    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")

    # --- Google Cloud ---
    project: str = Field("local-project", alias="GOOGLE_CLOUD_PROJECT")
    orders_topic: str = Field("orders", alias="ORDERS_TOPIC")
    notifications_topic: str = Field("notifications", alias="NOTIFICATIONS_TOPIC")
    secret_backend: Literal["env", "secretmanager"] = Field("env", alias="SECRET_BACKEND")
    secret_project: str = Field("", alias="SECRET_PROJECT")  # defaults to `project`
    # SECRET_BACKEND=env: where secrets written at run time (the day's token) are kept.
    secret_overlay_dir: str = Field("/tmp/tv-fyers-secrets", alias="SECRET_OVERLAY_DIR")
    artifact_backend: Literal["local", "gcs"] = Field("local", alias="ARTIFACT_BACKEND")
    artifact_bucket: str = Field("", alias="ARTIFACT_BUCKET")
    artifact_dir: str = Field("/tmp/tv-fyers-artifacts", alias="ARTIFACT_DIR")

    # --- Fyers ---
    fyers_api_base: str = Field(FYERS_PRODUCTION_API, alias="FYERS_API_BASE")
    fyers_data_base: str = Field("https://api-t1.fyers.in/data", alias="FYERS_DATA_BASE")
    symbol_master_base: str = Field("https://public.fyers.in/sym_details", alias="SYMBOL_MASTER_BASE")
    symbol_masters: list[str] = Field(["NSE_FO", "BSE_FO", "NSE_CM"], alias="SYMBOL_MASTERS")
    broker_connect_timeout: float = Field(3.0, alias="BROKER_CONNECT_TIMEOUT", gt=0)
    broker_read_timeout: float = Field(5.0, alias="BROKER_READ_TIMEOUT", gt=0)
    auth_redirect_url: str = Field("", alias="AUTH_REDIRECT_URL")  # the auth function's /callback

    # --- webhook ---
    max_body_bytes: int = Field(64 * 1024, alias="MAX_BODY_BYTES", gt=0)
    allowed_source_ips: list[str] = Field([], alias="ALLOWED_SOURCE_IPS")
    # Cloud Run appends the caller's address last; earlier X-Forwarded-For entries are client-controlled.
    allowed_symbols: list[str] = Field([], alias="ALLOWED_SYMBOLS")
    max_lots_per_alert: int = Field(10, alias="MAX_LOTS_PER_ALERT", gt=0)
    max_alert_age_seconds: int = Field(60, alias="MAX_ALERT_AGE_SECONDS", gt=0)
    dedupe_window_seconds: int = Field(60, alias="DEDUPE_WINDOW_SECONDS", gt=0)
    alert_ttl_days: int = Field(30, alias="ALERT_TTL_DAYS", gt=0)
    # Firestore timeouts, one per function, each bounding a call (retries included) by what
    # its caller can wait: TradingView's 3 s for the webhook (FIRESTORE_TIMEOUT); for the
    # worker, the order's age limit; for the scheduler, its job's deadline; for auth, the
    # trader's browser on the login page.
    firestore_timeout: float = Field(1.0, alias="FIRESTORE_TIMEOUT", gt=0)
    worker_firestore_timeout: float = Field(10.0, alias="WORKER_FIRESTORE_TIMEOUT", gt=0)
    scheduler_firestore_timeout: float = Field(10.0, alias="SCHEDULER_FIRESTORE_TIMEOUT", gt=0)
    login_firestore_timeout: float = Field(5.0, alias="LOGIN_FIRESTORE_TIMEOUT", gt=0)
    publish_timeout: float = Field(1.2, alias="PUBLISH_TIMEOUT", gt=0)

    # --- order worker ---
    max_order_age_seconds: int = Field(60, alias="MAX_ORDER_AGE_SECONDS", gt=0)
    market_open: time = Field(time(9, 15), alias="MARKET_OPEN")
    market_close: time = Field(time(15, 30), alias="MARKET_CLOSE")
    market_holidays: list[str] = Field([], alias="MARKET_HOLIDAYS")  # ISO dates, IST
    enforce_market_hours: bool = Field(True, alias="ENFORCE_MARKET_HOURS")
    max_orders_per_day: int = Field(100, alias="MAX_ORDERS_PER_DAY", gt=0)
    dry_run: bool = Field(False, alias="DRY_RUN")
    # Fyers' limits are 10/s and 200/min per app. The worker's pace counts a call from send to
    # answer (common/ratelimit.py), so it holds at Fyers' own measure; the margin is the
    # scheduler's jobs' (reconcile, session), which call Fyers with the same app.
    orders_per_second: int = Field(9, alias="ORDERS_PER_SECOND", gt=0, le=10)
    orders_per_minute: int = Field(190, alias="ORDERS_PER_MINUTE", gt=0, le=200)
    lease_seconds: int = Field(30, alias="LEASE_SECONDS", gt=0)
    # An unanswered placement (read timeout, reset after sending, 5xx, 201) may still be booked
    # by Fyers this long after it was sent: no order is placed again before then.
    placement_landing_seconds: float = Field(20.0, alias="PLACEMENT_LANDING_SECONDS", gt=0)
    controls_cache_seconds: float = Field(5.0, alias="CONTROLS_CACHE_SECONDS", ge=0)
    token_cache_seconds: float = Field(60.0, alias="TOKEN_CACHE_SECONDS", ge=0)
    breaker_threshold: int = Field(3, alias="BREAKER_THRESHOLD", gt=0)
    breaker_cooldown_seconds: int = Field(300, alias="BREAKER_COOLDOWN_SECONDS", gt=0)
    cover_only_strategies: list[str] = Field([], alias="COVER_ONLY_STRATEGIES")
    master_check_seconds: int = Field(300, alias="MASTER_CHECK_SECONDS", gt=0)
    master_max_bytes: int = Field(64 * 1024 * 1024, alias="MASTER_MAX_BYTES", gt=0)

    # --- notifications ---
    telegram_chat_id: str = Field("", alias="TELEGRAM_CHAT_ID")
    telegram_api_base: str = Field("https://api.telegram.org", alias="TELEGRAM_API_BASE")
    # A secret (the URL carries its credential): in the cloud Secret Manager puts it into
    # the environment (common/secret_table.py).
    notify_webhook_url: str = Field("", alias="NOTIFY_WEBHOOK_URL")
    notify_timeout: float = Field(3.0, alias="NOTIFY_TIMEOUT", gt=0)

    # --- auth ---
    auth_public_url: str = Field("", alias="AUTH_PUBLIC_URL")  # base URL of the auth function
    login_link_ttl_seconds: int = Field(4 * 3600, alias="LOGIN_LINK_TTL_SECONDS", gt=0)

    log_level: str = Field("INFO", alias="LOG_LEVEL")
    # Local runs and tests only: the router's clock runs this far from the wall clock, so a
    # stack can live at another date (common/clock.py). Refused against the real Fyers API.
    clock_shift_seconds: float = Field(0.0, alias="CLOCK_SHIFT_SECONDS")

    _split = field_validator(
        "symbol_masters", "allowed_source_ips", "allowed_symbols", "market_holidays",
        "cover_only_strategies", mode="before",
    )(_csv)

    @field_validator("allowed_source_ips")
    @classmethod
    def _expand_tradingview(cls, ips: list[str]) -> list[str]:
        expanded: list[str] = []
        for ip in ips:
            expanded.extend(TRADINGVIEW_IPS if ip.lower() == "tradingview" else [ip])
        return expanded

    @field_validator("allowed_symbols", "cover_only_strategies")
    @classmethod
    def _upper(cls, items: list[str]) -> list[str]:
        return [item.upper() for item in items]

    @field_validator("fyers_api_base", "fyers_data_base", "symbol_master_base", "telegram_api_base")
    @classmethod
    def _strip_slash(cls, url: str) -> str:
        return url.rstrip("/")

    @model_validator(mode="after")
    def _real_time_at_the_real_broker(self) -> "Settings":
        host = urlsplit(self.fyers_api_base).hostname or ""
        if self.clock_shift_seconds and (host == "fyers.in" or host.endswith(".fyers.in")):
            raise ValueError("CLOCK_SHIFT_SECONDS is for local runs: unset it, or point FYERS_API_BASE at a simulator")
        return self

    def symbol_allowed(self, underlying: str, symbol: str) -> bool:
        """Whether ``ALLOWED_SYMBOLS`` (empty: everything) admits an alert's underlying or symbol."""
        return not self.allowed_symbols or underlying in self.allowed_symbols or symbol in self.allowed_symbols

    def clock(self) -> Clock:
        """The router's clock: the wall clock, shifted by ``CLOCK_SHIFT_SECONDS``."""
        return shifted_clock(self.clock_shift_seconds)

    @property
    def secrets_project(self) -> str:
        """Project that holds the secrets (the router's own unless SECRET_PROJECT says otherwise)."""
        return self.secret_project or self.project


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Build :class:`Settings` from an environment mapping."""
    env = environ
    names = {field.alias for field in Settings.model_fields.values() if field.alias}
    values = {name: env[name] for name in names if env.get(name, "") != ""}
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors())
        raise ConfigError(f"Invalid configuration: {problems}") from None
