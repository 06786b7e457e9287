"""Notifications: Pub/Sub always, Telegram and a webhook when configured, never raising,
never leaking the bot token."""

from __future__ import annotations

import json
import logging
import socket
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.secret_scan import register
from common.notify import (
    TELEGRAM_MAX_CHARS,
    ChannelResult,
    Notification,
    NotificationKind,
    Notifier,
    Severity,
    format_message,
)
from common.secrets import InMemorySecretStore
from common.settings import Settings

BOT_TOKEN = "123456789:AAF-very-secret-bot-token"
register(BOT_TOKEN)
CHAT_ID = "987654"

REJECTED = Notification(
    kind=NotificationKind.ORDER_REJECTED,
    severity=Severity.ERROR,
    title="REJECTED NIFTY2612324500CE BUY 65",
    text="RED:Margin Shortfall",
    order_id="tvabc123",
    fields={"strategy": "orb", "lots": 1},
    at=datetime(2026, 1, 20, 4, 0, 5, tzinfo=timezone.utc),
)


class Receiver:
    """A local HTTP server standing in for Telegram and the webhook: records POSTs, answers as told."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []
        self.status = 200
        self.answer: bytes | None = None  # None: {"ok": true}
        self.hang = False
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append((self.path, json.loads(body)))
                if receiver.hang:
                    receiver.release.wait(30)
                    return
                answer = receiver.answer if receiver.answer is not None else b'{"ok": true, "result": {}}'
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def paths(self) -> list[str]:
        return [path for path, _ in self.posts]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class RecordingPublisher:
    def __init__(self, fail: bool = False) -> None:
        self.messages: list[tuple[str, bytes, dict[str, str]]] = []
        self.fail = fail

    def __call__(self, topic: str, data: bytes, attributes: dict[str, str]) -> None:
        self.messages.append((topic, data, attributes))
        if self.fail:
            raise TimeoutError("publish timed out")


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def make_notifier(receiver=None, *, telegram=True, webhook=True, publisher=None, secrets=None):
    settings = Settings(
        TELEGRAM_CHAT_ID=CHAT_ID if telegram else "",
        TELEGRAM_API_BASE=receiver.url if receiver else "http://127.0.0.1:9",
        NOTIFY_WEBHOOK_URL=f"{receiver.url}/hook" if webhook and receiver else "",
        NOTIFY_TIMEOUT=0.3,
    )
    publisher = publisher if publisher is not None else RecordingPublisher()
    secrets = secrets if secrets is not None else InMemorySecretStore({"TELEGRAM_BOT_TOKEN": BOT_TOKEN})
    return Notifier(settings, publisher, secrets), publisher


# --- the message ----------------------------------------------------------------


def test_a_rejection_reads_as_one_line_with_fields_and_time_below():
    assert format_message(REJECTED) == (
        "❌ REJECTED NIFTY2612324500CE BUY 65 — RED:Margin Shortfall (order tvabc123)\n"
        "strategy: orb\n"
        "lots: 1\n"
        "20 Jan 09:30:05 IST"
    )


def test_needs_login_carries_the_login_link():
    message = format_message(
        Notification(
            kind=NotificationKind.NEEDS_LOGIN,
            severity=Severity.CRITICAL,
            title="Fyers session expired",
            text="orders are paused until you log in",
            login_url="https://auth.example.test/login?t=abc",
        )
    )

    assert message.startswith("🔑 Fyers session expired — orders are paused until you log in\n")
    assert "Log in: https://auth.example.test/login?t=abc" in message


def test_a_very_long_message_is_cut_to_telegram_size():
    message = format_message(Notification(kind=NotificationKind.INFO, title="x", text="y" * 10_000))

    assert len(message) == TELEGRAM_MAX_CHARS
    assert message.endswith("…")


# --- delivery -------------------------------------------------------------------


def test_a_notification_goes_to_pubsub_telegram_and_the_webhook(receiver):
    notifier, publisher = make_notifier(receiver)

    result = notifier.send(REJECTED)

    assert result.pubsub == result.telegram == result.webhook == ChannelResult("sent")
    [(topic, data, attributes)] = publisher.messages
    assert topic == "notifications"
    assert Notification.model_validate_json(data) == REJECTED
    assert attributes == {"kind": "ORDER_REJECTED", "severity": "ERROR", "order_id": "tvabc123"}
    (tg_path, tg_body), (hook_path, hook_body) = receiver.posts
    assert tg_path == f"/bot{BOT_TOKEN}/sendMessage"
    assert tg_body["chat_id"] == CHAT_ID
    assert tg_body["text"] == format_message(REJECTED)
    assert hook_path == "/hook"
    assert hook_body["text"] == format_message(REJECTED)
    assert Notification.model_validate(hook_body["notification"]) == REJECTED


def test_unconfigured_channels_are_skipped_and_the_bot_token_is_not_read():
    class NoReads(InMemorySecretStore):
        def get(self, name: str) -> str:
            raise AssertionError("the bot token must not be read when Telegram is off")

    notifier, publisher = make_notifier(telegram=False, webhook=False, secrets=NoReads())

    result = notifier.send(REJECTED)

    assert result.pubsub.status == "sent"
    assert result.telegram.status == result.webhook.status == "skipped"
    assert len(publisher.messages) == 1


@pytest.mark.timeout(20)
def test_a_hanging_server_is_cut_off_at_the_timeout(receiver):
    receiver.hang = True
    notifier, publisher = make_notifier(receiver)

    result = notifier.send(REJECTED)

    assert result.telegram == ChannelResult("failed", "timed out after 0.3s")
    assert result.webhook == ChannelResult("failed", "timed out after 0.3s")
    assert result.pubsub.status == "sent"
    assert receiver.paths() == [f"/bot{BOT_TOKEN}/sendMessage", "/hook"]


def test_a_failing_publisher_does_not_raise_and_the_other_channels_still_send(receiver):
    notifier, publisher = make_notifier(receiver, publisher=RecordingPublisher(fail=True))

    result = notifier.send(REJECTED)

    assert result.pubsub == ChannelResult("failed", "TimeoutError")
    assert result.telegram.status == result.webhook.status == "sent"
    assert len(publisher.messages) == 1


def test_telegram_refusal_is_reported_with_its_description(receiver):
    receiver.status = 400
    receiver.answer = b'{"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}'
    notifier, _ = make_notifier(receiver, webhook=False)

    result = notifier.send(REJECTED)

    assert result.telegram == ChannelResult("failed", "HTTP 400: Bad Request: chat not found")


def test_webhook_server_error_is_a_failure(receiver):
    receiver.status = 500
    receiver.answer = b"oops"
    notifier, _ = make_notifier(receiver, telegram=False)

    assert notifier.send(REJECTED).webhook == ChannelResult("failed", "HTTP 500")


def test_a_missing_bot_token_fails_telegram_without_any_request(receiver):
    notifier, _ = make_notifier(receiver, webhook=False, secrets=InMemorySecretStore())

    result = notifier.send(REJECTED)

    assert result.telegram == ChannelResult("failed", "bot token not set")
    assert receiver.posts == []


def test_a_broken_secret_store_does_not_raise(receiver):
    class Broken(InMemorySecretStore):
        def get(self, name: str) -> str:
            raise ConnectionError("secret manager down")

    notifier, _ = make_notifier(receiver, webhook=False, secrets=Broken())

    assert notifier.send(REJECTED).telegram == ChannelResult("failed", "ConnectionError")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(20)
def test_the_bot_token_never_appears_in_logs_or_results(receiver, caplog):
    caplog.set_level(logging.DEBUG)
    results = []

    # Unreachable Telegram: the exception text would name the URL.
    notifier, _ = make_notifier(receiver, webhook=False)
    notifier._telegram_base = f"http://127.0.0.1:{_closed_port()}"
    results.append(notifier.send(REJECTED))
    # A refusal whose description echoes the request path.
    receiver.status = 401
    receiver.answer = json.dumps({"ok": False, "description": f"bad token in /bot{BOT_TOKEN}/sendMessage"}).encode()
    results.append(make_notifier(receiver, webhook=False)[0].send(REJECTED))
    # A hang.
    receiver.hang = True
    results.append(make_notifier(receiver, webhook=False)[0].send(REJECTED))

    assert [r.telegram.status for r in results] == ["failed", "failed", "failed"]
    assert results[0].telegram.detail == "connection failed (ConnectionRefusedError)"
    assert results[1].telegram.detail == "HTTP 401: bad token in /bot***/sendMessage"
    assert "Notification ORDER_REJECTED via telegram failed" in caplog.text
    assert BOT_TOKEN not in caplog.text
    assert all(BOT_TOKEN not in repr(record.__dict__) for record in caplog.records)
    assert all(BOT_TOKEN not in repr(result) for result in results)


def test_a_non_http_webhook_url_is_refused():
    notifier, _ = make_notifier(telegram=False)
    notifier._webhook_url = "file:///etc/passwd"

    assert notifier.send(REJECTED).webhook == ChannelResult("failed", "URL is not http(s)")
