"""The Fyers trading adapter: the real ``fyers_apiv3`` SDK behind a narrow, typed interface.

Every call has a deadline and ends as a typed result or one of the broker
failure classes of ``common.errors`` (see ``common.broker.outcome``).

Thread safety: one SDK model per thread (``threading.local``), not one model
behind a lock. A lock would queue every request behind the slowest one (a hung
placement holds it for the whole read timeout), and the SDK keeps one mutable
failure dict per model, which threads sharing a model would overwrite under
each other. A thread's model is rebuilt when ``token_provider`` returns a new
token (the daily login), so a new token takes effect on the next call.

The SDK is imported on first use: modules that only import this one (the
webhook) never load it.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from common.broker.models import BrokerOrder, OrderRequest, PlaceResult, Position, Profile, Quote, Trade
from common.broker.outcome import check
from common.errors import BrokerAmbiguous, BrokerNotFound, TokenDead

if TYPE_CHECKING:
    from common.settings import Settings

MAX_QUOTES_PER_CALL = 50
# The SDK opens fyersApi.log and fyersRequests.log in the working directory unless
# told otherwise; Cloud Functions' working directory is read-only.
DEFAULT_LOG_DIR = Path(tempfile.gettempdir()) / "fyers-sdk-logs"

_REQUEST_LOGGER = "FyersAPIRequest"  # the SDK's per-request logger

_sdk_lock = threading.Lock()
_sdk_module: Any = None


def _sdk() -> Any:
    """``fyers_apiv3.fyersModel``, imported once."""
    global _sdk_module
    with _sdk_lock:
        if _sdk_module is None:
            from fyers_apiv3 import fyersModel

            _sdk_module = fyersModel
    return _sdk_module


class FyersBroker:
    """One Fyers app's trading session, safe to share between threads."""

    def __init__(
        self,
        app_id: str,
        token_provider: Callable[[], str],
        *,
        api_base: str,
        data_base: str,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        log_dir: str | Path | None = None,
    ) -> None:
        self.app_id = app_id
        self._token_provider = token_provider
        self._api_base = api_base
        self._data_base = data_base
        self._timeouts = (connect_timeout, read_timeout)
        self._log_dir = Path(log_dir) if log_dir is not None else DEFAULT_LOG_DIR
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: "Settings", app_id: str, token_provider: Callable[[], str]) -> "FyersBroker":
        return cls(
            app_id,
            token_provider,
            api_base=settings.fyers_api_base,
            data_base=settings.fyers_data_base,
            connect_timeout=settings.broker_connect_timeout,
            read_timeout=settings.broker_read_timeout,
        )

    # --- the interface ------------------------------------------------------

    def profile(self) -> Profile:
        """The account behind the token: the cheapest probe of a live session."""
        data = self._call("profile", "get_profile").get("data") or {}
        return Profile(fy_id=str(data.get("fy_id", "")), name=str(data.get("name", "")))

    def funds(self) -> dict[str, float]:
        """Fund limits by Fyers' title (``"Clear Balance"``, ``"Available Balance"``...), equity segment."""
        rows = self._call("funds", "funds").get("fund_limit") or []
        return {str(r.get("title")): float(r.get("equityAmount") or 0.0) for r in rows if isinstance(r, dict)}

    def quotes(self, tickers: Iterable[str]) -> dict[str, Quote]:
        """Quotes by ticker, asked 50 at a time and matched by name (``n``), never by position.

        Tickers Fyers answers with an error item are left out of the result.
        """
        wanted = list(dict.fromkeys(tickers))
        found: dict[str, Quote] = {}
        for start in range(0, len(wanted), MAX_QUOTES_PER_CALL):
            batch = wanted[start : start + MAX_QUOTES_PER_CALL]
            items = self._call("quotes", "quotes", {"symbols": ",".join(batch)}).get("d") or []
            asked = set(batch)
            for item in items:
                if isinstance(item, dict) and item.get("s") == "ok" and item.get("n") in asked:
                    found[item["n"]] = Quote.from_fyers(item["n"], item.get("v") or {})
        return found

    def place_order(self, request: OrderRequest) -> PlaceResult:
        """Place one order. Ambiguous outcomes raise :class:`BrokerAmbiguous`: read the book by tag first."""
        what = f"place {request.symbol}"
        body = self._call(what, "place_order", request.to_fyers(), placement=True)
        code, message = int(body.get("code") or 0), str(body.get("message") or "")
        if body.get("id"):
            return PlaceResult(str(body["id"]), code, message)
        slices = body.get("data")
        if isinstance(slices, list) and slices:
            ids = [str(s["id"]) for s in slices if isinstance(s, dict) and s.get("s") == "ok" and s.get("id")]
            if len(ids) == len(slices):
                return PlaceResult(ids[0], code, message, tuple(ids))
            raise BrokerAmbiguous(f"{what}: {len(ids)} of {len(slices)} slices accepted.",
                                  broker_code=code, broker_message=message, order_ids=ids)
        raise BrokerAmbiguous(f"{what}: accepted without an order id; the order may exist.",
                              broker_code=code, broker_message=message)

    def cancel_order(self, order_id: str) -> None:
        """Cancel a working order (1103). A filled, cancelled or unknown one raises :class:`BrokerRejected`."""
        self._call(f"cancel {order_id}", "cancel_order", {"id": order_id})

    def order_by_id(self, order_id: str) -> BrokerOrder | None:
        """The order with this id, or None if Fyers does not know it."""
        try:
            rows = self._call("order lookup", "orderbook", {"id": order_id}).get("orderBook") or []
        except BrokerNotFound:
            return None
        orders = [BrokerOrder.from_fyers(r) for r in rows if isinstance(r, dict)]
        return next((o for o in orders if o.id == order_id), None)

    def orders_by_tag(self, tag: str) -> list[BrokerOrder]:
        """Today's orders carrying ``tag`` (slices and BO/CO legs included)."""
        try:
            rows = self._call("orders by tag", "orderbook", {"order_tag": f"1:{tag}"}).get("orderBook") or []
        except BrokerNotFound:
            return []
        orders = [BrokerOrder.from_fyers(r) for r in rows if isinstance(r, dict)]
        return [o for o in orders if o.tag == tag]  # do not trust the server-side filter alone

    def orders(self) -> list[BrokerOrder]:
        """Today's whole order book (for untagged CO/BO orders, matched by symbol, side and quantity)."""
        rows = self._call("order book", "orderbook").get("orderBook") or []
        return [BrokerOrder.from_fyers(r) for r in rows if isinstance(r, dict)]

    def positions(self) -> list[Position]:
        rows = self._call("positions", "positions").get("netPositions") or []
        return [Position.from_fyers(r) for r in rows if isinstance(r, dict)]

    def tradebook(self) -> list[Trade]:
        rows = self._call("trade book", "tradebook").get("tradeBook") or []
        return [Trade.from_fyers(r) for r in rows if isinstance(r, dict)]

    # --- plumbing -----------------------------------------------------------

    def _model(self) -> Any:
        token = self._token_provider()
        if not token:
            raise TokenDead("No Fyers access token: a login is needed.")
        local = self._local
        if getattr(local, "token", None) != token:
            from common.broker.transport import TimedSession

            self._log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            model = _sdk().FyersModel(client_id=self.app_id, token=token, is_async=False,
                                      log_path=str(self._log_dir), log_level="ERROR")
            # The SDK logs every request at DEBUG into a file that never rotates (and on
            # Cloud Functions /tmp is memory). Keep its error log, mute the request log;
            # after construction, because the first construction sets the level.
            logging.getLogger(_REQUEST_LOGGER).setLevel(logging.WARNING)
            model.service.session.close()
            model.service.session = TimedSession(
                api_base=self._api_base, data_base=self._data_base,
                connect_timeout=self._timeouts[0], read_timeout=self._timeouts[1],
            )
            if getattr(local, "model", None) is not None:
                local.model.service.session.close()
            local.model, local.token = model, token
        return local.model

    def _call(self, what: str, method: str, *args: Any, placement: bool = False) -> dict[str, Any]:
        model = self._model()
        session = model.service.session
        session.forget()
        answer = getattr(model, method)(*args)
        # The SDK's failure dict is one shared, mutable object: detect it by identity, then copy.
        synthetic = answer is model.service.error_resp or not isinstance(answer, dict)
        body = dict(answer) if isinstance(answer, dict) else {"s": "error", "code": None, "message": "no JSON object"}
        return check(body, session.last, synthetic=synthetic, placement=placement, what=what)
