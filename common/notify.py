"""Notifications to the trader: always to the ``notifications`` Pub/Sub topic, optionally
to Telegram and to a generic webhook.

:meth:`Notifier.send` never raises: each channel has its own timeout, and a channel's
failure is logged and reported in the returned :class:`NotifyResult`. Nothing logged or
returned holds the Telegram bot token or a channel URL (the token is part of Telegram's
URL, and webhook URLs are often secret themselves), so failures are described by HTTP
status or exception class only, never by the exception's text.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from typing import TYPE_CHECKING, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from common import secret_table
from common.errors import SecretNotFound
from common.records import IST

if TYPE_CHECKING:
    from common.secrets import SecretStore
    from common.settings import Settings

log = logging.getLogger(__name__)

TELEGRAM_TOKEN_SECRET = secret_table.TELEGRAM_BOT_TOKEN
TELEGRAM_MAX_CHARS = 4000  # Telegram's limit is 4096 UTF-16 units; emoji take two.
_MAX_RESPONSE_BYTES = 64 * 1024

# publish(topic, data, attributes): the team's Pub/Sub wrapper, with its own timeout.
Publish = Callable[[str, bytes, dict[str, str]], object]


class NotificationKind(StrEnum):
    ORDER_PLACED = "ORDER_PLACED"
    ORDER_REJECTED = "ORDER_REJECTED"
    ORDER_FAILED = "ORDER_FAILED"
    ORDER_EXPIRED = "ORDER_EXPIRED"
    ORDER_BLOCKED = "ORDER_BLOCKED"
    ORDER_UNKNOWN = "ORDER_UNKNOWN"
    ORDER_NOT_QUEUED = "ORDER_NOT_QUEUED"
    POSITION_CLOSED = "POSITION_CLOSED"
    DUPLICATE_AT_BROKER = "DUPLICATE_AT_BROKER"
    UNRECORDED_AT_BROKER = "UNRECORDED_AT_BROKER"
    NEEDS_LOGIN = "NEEDS_LOGIN"
    LOGGED_IN = "LOGGED_IN"
    HEALTH = "HEALTH"
    MASTER_REFRESH_FAILED = "MASTER_REFRESH_FAILED"
    INFO = "INFO"


class Severity(StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


_EMOJI = {
    NotificationKind.ORDER_PLACED: "📨",
    NotificationKind.ORDER_REJECTED: "❌",
    NotificationKind.ORDER_FAILED: "🛑",
    NotificationKind.ORDER_EXPIRED: "⌛",
    NotificationKind.ORDER_BLOCKED: "🚫",
    NotificationKind.ORDER_UNKNOWN: "❓",
    NotificationKind.ORDER_NOT_QUEUED: "📭",
    NotificationKind.POSITION_CLOSED: "💰",
    NotificationKind.DUPLICATE_AT_BROKER: "‼️",
    NotificationKind.UNRECORDED_AT_BROKER: "👻",
    NotificationKind.NEEDS_LOGIN: "🔑",
    NotificationKind.LOGGED_IN: "✅",
    NotificationKind.HEALTH: "🩺",
    NotificationKind.MASTER_REFRESH_FAILED: "📛",
    NotificationKind.INFO: "ℹ️",
}


class Notification(BaseModel):
    """One message to the trader. ``title`` is the headline, ``text`` the reason or detail."""

    model_config = ConfigDict(frozen=True)

    kind: NotificationKind
    severity: Severity = Severity.INFO
    title: str
    text: str = ""
    order_id: str | None = None
    fields: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    login_url: str | None = None
    at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


def format_message(notification: Notification) -> str:
    """The notification as plain text that reads well on a phone.

    ``❌ REJECTED NIFTY2612324500CE BUY 65 — RED:Margin Shortfall (order tvabc123)``,
    then one ``key: value`` line per field, the login link, and the time in IST.
    """
    n = notification
    headline = f"{_EMOJI[n.kind]} {n.title}"
    if n.text:
        headline += f" — {n.text}"
    if n.order_id:
        headline += f" (order {n.order_id})"
    lines = [headline]
    lines += [f"{key}: {value}" for key, value in n.fields.items()]
    if n.login_url:
        lines.append(f"Log in: {n.login_url}")
    at = n.at if n.at.tzinfo else n.at.replace(tzinfo=timezone.utc)
    lines.append(at.astimezone(IST).strftime("%d %b %H:%M:%S IST"))
    message = "\n".join(lines)
    if len(message) > TELEGRAM_MAX_CHARS:
        message = message[: TELEGRAM_MAX_CHARS - 1] + "…"
    return message


@dataclass(frozen=True)
class ChannelResult:
    """What happened on one channel. ``detail`` is safe to log and store."""

    status: Literal["sent", "failed", "skipped"]
    detail: str = ""


@dataclass(frozen=True)
class NotifyResult:
    pubsub: ChannelResult
    telegram: ChannelResult
    webhook: ChannelResult


_SKIPPED = ChannelResult("skipped", "not configured")


class _ChannelFailed(Exception):
    """A channel failed; the message is a safe description."""


class Notifier:
    """Sends notifications; see the module docstring. Stateless, so safe across threads."""

    def __init__(self, settings: Settings, publish: Publish, secrets: SecretStore) -> None:
        self._topic = settings.notifications_topic
        self._chat_id = settings.telegram_chat_id
        self._telegram_base = settings.telegram_api_base
        self._webhook_url = settings.notify_webhook_url
        self._timeout = settings.notify_timeout
        self._publish = publish
        self._secrets = secrets

    def send(self, notification: Notification) -> NotifyResult:
        """Send ``notification`` on every configured channel. Never raises."""
        pubsub = self._channel("pubsub", notification, self._send_pubsub)
        telegram = self._channel("telegram", notification, self._send_telegram) if self._chat_id else _SKIPPED
        webhook = self._channel("webhook", notification, self._send_webhook) if self._webhook_url else _SKIPPED
        return NotifyResult(pubsub=pubsub, telegram=telegram, webhook=webhook)

    def _channel(
        self, channel: str, notification: Notification, send: Callable[[Notification], None]
    ) -> ChannelResult:
        try:
            send(notification)
        except _ChannelFailed as exc:
            detail = str(exc)
        except Exception as exc:  # noqa: BLE001 - a notification failure must never reach the caller
            # Only the class name: exception texts may hold the URL, hence the bot token.
            detail = type(exc).__name__
        else:
            return ChannelResult("sent")
        log.warning("Notification %s via %s failed: %s", notification.kind.value, channel, detail)
        return ChannelResult("failed", detail)

    def _send_pubsub(self, notification: Notification) -> None:
        attributes = {"kind": notification.kind.value, "severity": notification.severity.value}
        if notification.order_id:
            attributes["order_id"] = notification.order_id
        self._publish(self._topic, notification.model_dump_json().encode("utf-8"), attributes)

    def _send_telegram(self, notification: Notification) -> None:
        message = format_message(notification)
        try:
            token = self._secrets.get(TELEGRAM_TOKEN_SECRET)
        except SecretNotFound:
            raise _ChannelFailed("bot token not set") from None
        url = f"{self._telegram_base}/bot{urllib.parse.quote(token, safe=':')}/sendMessage"
        payload = {"chat_id": self._chat_id, "text": message, "disable_web_page_preview": True}
        status, body = self._post_json(url, payload)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = {}
        if status != 200 or not isinstance(answer, dict) or answer.get("ok") is not True:
            description = answer.get("description", "") if isinstance(answer, dict) else ""
            detail = f"HTTP {status}" + (f": {str(description)[:200]}" if description else "")
            raise _ChannelFailed(detail.replace(token, "***"))

    def _send_webhook(self, notification: Notification) -> None:
        # Chat webhooks (Slack-style) show `text`; other receivers read `notification`.
        payload = {"text": format_message(notification), "notification": notification.model_dump(mode="json")}
        status, _ = self._post_json(self._webhook_url, payload)
        if not 200 <= status < 300:
            raise _ChannelFailed(f"HTTP {status}")

    def _post_json(self, url: str, payload: dict) -> tuple[int, bytes]:
        """POST ``payload`` as JSON; the HTTP status and (the start of) the body.

        Plain urllib on purpose: unlike requests/urllib3 it does not log request URLs at
        DEBUG, and the Telegram URL holds the bot token.
        """
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise _ChannelFailed("URL is not http(s)")
        request = urllib.request.Request(
            url,
            data=json.dumps(payload).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return response.status, response.read(_MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read(_MAX_RESPONSE_BYTES)
        except TimeoutError:
            raise _ChannelFailed(f"timed out after {self._timeout:g}s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise _ChannelFailed(f"timed out after {self._timeout:g}s") from None
            raise _ChannelFailed(f"connection failed ({type(exc.reason).__name__})") from None
