"""The HTTP session under the Fyers SDK: deadlines, base URLs, and a record of each call.

``fyers_apiv3`` 3.2.0 sends through ``model.service.session`` with no timeout
and swallows every failure (fyers-v3.md §11). :class:`TimedSession` replaces
that session so that each request

* carries ``(connect, read)`` timeouts;
* goes to this adapter's base URLs: the SDK builds URLs from the process-global
  ``Config.API``/``Config.DATA_API``. Instead of mutating those globals (two
  adapters with different bases, e.g. a canary or a test against a closed port,
  would then race), we leave them at the SDK's fixed defaults and map those two
  prefixes onto our bases here. A URL under neither prefix means someone else
  changed ``Config``; the call fails closed with :class:`ConfigError` rather
  than reach an unknown host;
* leaves a :class:`CallRecord` (thread-local) saying what happened before the
  SDK flattens it: the exception and whether it struck before the request was
  sent, the HTTP status, the retry hints.

Imports ``requests``: load it only on the broker path.
"""

from __future__ import annotations

import threading
import urllib.parse
from typing import Any

import requests
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from common.broker.outcome import CallRecord
from common.errors import ConfigError

# fyers_apiv3.fyersModel.Config defaults (3.2.0), which the SDK prefixes to every path.
SDK_API_BASE = "https://api-t1.fyers.in/api/v3"
SDK_DATA_BASE = "https://api-t1.fyers.in/data"
RETRY_HEADERS = ("Retry-After", "X-Retry-After-Ms")


def failed_before_send(exc: BaseException) -> bool:
    """True if the request never left: connection refused, DNS failure, connect timeout, TLS handshake."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError) and exc.args:
        reason = getattr(exc.args[0], "reason", exc.args[0])  # MaxRetryError wraps the cause
        return isinstance(reason, (NewConnectionError, ConnectTimeoutError))
    return False


class TimedSession(requests.Session):
    """A ``requests.Session`` with deadlines, our base URLs, and a per-thread call record."""

    def __init__(self, *, api_base: str, data_base: str, connect_timeout: float, read_timeout: float) -> None:
        super().__init__()
        self._bases = ((SDK_API_BASE, api_base.rstrip("/")), (SDK_DATA_BASE, data_base.rstrip("/")))
        self._timeout = (connect_timeout, read_timeout)
        self._local = threading.local()

    @property
    def last(self) -> CallRecord | None:
        """The record of this thread's latest request (None after :meth:`forget`)."""
        return getattr(self._local, "record", None)

    def forget(self) -> None:
        self._local.record = None

    def _route(self, url: str) -> str:
        for sdk_base, ours in self._bases:
            for base in (sdk_base, ours):  # our own bases pass (direct callers use them)
                if url == base or url.startswith((base + "/", base + "?")):
                    return ours + url[len(base):]
        raise ConfigError("fyers_apiv3.Config was changed by other code; refusing to send to an unknown host.")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        record = CallRecord(method=method.upper(), path=urllib.parse.urlsplit(url).path)
        self._local.record = record
        try:
            url = self._route(url)
        except ConfigError as exc:
            record.error, record.sent = exc, False
            raise
        kwargs["timeout"] = self._timeout  # the SDK never passes one
        try:
            response = super().request(method, url, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - recorded, then re-raised for the SDK to swallow
            record.error, record.sent = exc, not failed_before_send(exc)
            raise
        record.status = response.status_code
        record.headers = {name: response.headers[name] for name in RETRY_HEADERS if name in response.headers}
        return response
