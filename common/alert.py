"""The TradingView alert: what the trader's webhook message may say, validated.

An alert names *what* to trade in the trader's words (``NIFTY``, ``WEEKLY``,
``ATM+1``, ``CE``, 2 lots); the order worker later resolves that into a Fyers
contract. Everything here is pure validation: no I/O, cheap to import.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from common.errors import ValidationFailed
from common.selectors import (
    ExpirySelector,
    StrikeSelector,
    parse_continuous_future,
    parse_expiry,
    parse_strike,
)

# Index underlyings: they have no cash instrument, so an alert on one must name
# an option (optionType/strike) or a future (NIFTY1!, or an expiry).
INDEX_UNDERLYINGS = frozenset(
    {"NIFTY", "BANKNIFTY", "FINNIFTY", "MIDCPNIFTY", "NIFTYNXT50", "SENSEX", "BANKEX"}
)

_FULL_TICKER = re.compile(r"^(NSE|BSE|MCX|NFO|BFO):[A-Z0-9&_-]+$")
_UNDERLYING = re.compile(r"^[A-Z0-9&_-]{1,30}$")
_KEY = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_ORDER_TYPES = {"MARKET": "MARKET", "MKT": "MARKET", "LIMIT": "LIMIT", "LMT": "LIMIT", "SL": "SL",
                "SL-L": "SL", "SLL": "SL", "STOPLIMIT": "SL", "SL-M": "SL-M", "SLM": "SL-M", "STOP": "SL-M"}
_OPTION_TYPES = {"CE": "CE", "CALL": "CE", "C": "CE", "PE": "PE", "PUT": "PE", "P": "PE"}

Kind = Literal["OPTION", "FUTURE", "EQUITY", "TICKER"]


class Alert(BaseModel):
    """One validated TradingView alert. Unknown fields are kept (``model_extra``) for the audit."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, str_strip_whitespace=True)

    secret: SecretStr | None = Field(None, validation_alias=AliasChoices("secret", "token"), exclude=True)
    action: Literal["BUY", "SELL", "EXIT"]
    symbol: str = Field(min_length=1, max_length=40)
    exchange: str | None = Field(None, max_length=10)
    expiry: ExpirySelector | None = None
    strike: StrikeSelector | None = Field(None, validation_alias=AliasChoices("strike", "strikeprice", "strikePrice"))
    option_type: Literal["CE", "PE"] | None = Field(None, validation_alias=AliasChoices("optionType", "option_type", "optiontype"))
    lots: int = Field(1, ge=1, le=10_000, validation_alias=AliasChoices("lots", "qty", "quantity"))
    product: Literal["INTRADAY", "MARGIN", "CNC", "CO", "BO"] = Field("INTRADAY", validation_alias=AliasChoices("product", "productType"))
    order_type: Literal["MARKET", "LIMIT", "SL", "SL-M"] = Field("MARKET", validation_alias=AliasChoices("orderType", "order_type", "type"))
    price: float | None = Field(None, gt=0, validation_alias=AliasChoices("price", "limitPrice"))
    trigger_price: float | None = Field(None, gt=0, validation_alias=AliasChoices("triggerPrice", "trigger_price", "stopPrice"))
    sl: float | None = Field(None, gt=0, validation_alias=AliasChoices("sl", "stopLoss", "stoploss"))
    tp: float | None = Field(None, gt=0, validation_alias=AliasChoices("tp", "takeProfit", "target"))
    strategy: str | None = Field(None, max_length=64)
    idempotency_key: str | None = Field(None, validation_alias=AliasChoices("idempotency_key", "idempotencyKey"))
    time: datetime | None = None
    dry_run: bool = False

    # --- normalisation ------------------------------------------------------

    @field_validator("action", "product", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("symbol", mode="before")
    @classmethod
    def _symbol(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        symbol = value.strip().upper()
        if not (_FULL_TICKER.match(symbol) or parse_continuous_future(symbol) or _UNDERLYING.match(symbol)):
            raise ValueError("must be an underlying (NIFTY), a continuous future (NIFTY1!) or a Fyers ticker (NSE:SBIN-EQ)")
        return symbol

    @field_validator("exchange", mode="before")
    @classmethod
    def _exchange(cls, value: Any) -> Any:
        # TradingView's {{exchange}} gets _DL/_DLY suffixes on delayed feeds.
        if isinstance(value, str):
            value = re.sub(r"_DLY?$", "", value.strip().upper())
            return value or None
        return value

    @field_validator("expiry", mode="before")
    @classmethod
    def _expiry(cls, value: Any) -> Any:
        if value is None or value == "" or isinstance(value, ExpirySelector):
            return value or None
        if isinstance(value, (str, date)):
            return parse_expiry(value)
        raise ValueError("must be a date or WEEKLY, MONTHLY, NEXT_WEEKLY, NEXT_MONTHLY")

    @field_validator("strike", mode="before")
    @classmethod
    def _strike(cls, value: Any) -> Any:
        if value is None or value == "" or isinstance(value, StrikeSelector):
            return value or None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError("must be a number, ATM, ATM+N, ATM-N, ITMn or OTMn")
        return parse_strike(value)

    @field_validator("option_type", mode="before")
    @classmethod
    def _option_type(cls, value: Any) -> Any:
        return _from_table(value, _OPTION_TYPES, "must be CE or PE (CALL/PUT accepted)")

    @field_validator("order_type", mode="before")
    @classmethod
    def _order_type(cls, value: Any) -> Any:
        return _from_table(value, _ORDER_TYPES, "must be MARKET, LIMIT, SL or SL-M")

    @field_validator("lots", mode="before")
    @classmethod
    def _lots(cls, value: Any) -> Any:
        # {{strategy.order.contracts}} renders as "2" or "2.0".
        if isinstance(value, str):
            value = value.strip()
        try:
            number = float(value)
        except (TypeError, ValueError):
            return value  # pydantic reports the type error
        if number != int(number):
            raise ValueError("must be a whole number of lots")
        return int(number)

    @field_validator("idempotency_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and not _KEY.match(value):
            raise ValueError("must be 1-128 characters: letters, digits and ._:@/+=-")
        return value

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        # TradingView's {{timenow}} is UTC ("...Z"); a naive time is taken as UTC too.
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Alert":
        kind = self.kind
        if kind == "OPTION":
            if self.option_type is None:
                raise ValueError("optionType (CE or PE) is required with a strike")
            if self.strike is None:
                raise ValueError("strike is required with an optionType (a number, ATM, ATM+1, OTM2...)")
        elif kind in ("FUTURE", "TICKER") and (self.strike is not None or self.option_type is not None):
            raise ValueError(f"strike/optionType do not apply to {self.symbol}")
        elif kind == "EQUITY" and self.symbol in INDEX_UNDERLYINGS:
            raise ValueError(f"{self.symbol} is an index: give optionType and strike for an option, "
                             f"or use {self.symbol}1! (or an expiry) for the future")
        if self.order_type == "LIMIT" and self.price is None:
            raise ValueError("price is required for a LIMIT order")
        if self.order_type == "SL" and (self.price is None or self.trigger_price is None):
            raise ValueError("price and triggerPrice are required for an SL (stop-limit) order")
        if self.order_type == "SL-M" and self.trigger_price is None:
            raise ValueError("triggerPrice is required for an SL-M order")
        if (self.sl is not None or self.tp is not None) and self.product not in ("CO", "BO"):
            # Fyers has no broker-side stop on plain orders: refusing beats silently not protecting.
            raise ValueError("sl/tp need product BO (sl and tp) or CO (sl): Fyers holds stops only on those")
        if self.product == "BO" and (self.sl is None or self.tp is None):
            raise ValueError("sl and tp are required for a bracket order (BO)")
        if self.product == "CO" and self.sl is None:
            raise ValueError("sl is required for a cover order (CO)")
        return self

    # --- derived ------------------------------------------------------------

    @property
    def kind(self) -> Kind:
        """What the symbol names: an option, a future, an equity, or a full ticker."""
        if ":" in self.symbol:
            return "TICKER"
        if parse_continuous_future(self.symbol):
            return "FUTURE"
        if self.option_type is not None or self.strike is not None:
            return "OPTION"
        if self.expiry is not None:
            return "FUTURE"
        return "EQUITY"

    @property
    def underlying(self) -> str:
        """The underlying name (``NIFTY`` for ``NIFTY1!``); the ticker itself for full tickers."""
        continuous = parse_continuous_future(self.symbol)
        return continuous[0] if continuous else self.symbol

    @field_serializer("expiry", "strike")
    def _selector_text(self, value: object) -> str | None:
        return None if value is None else str(value)

    def order_fields(self) -> dict[str, Any]:
        """The normalised order, as stored and published: no secret, no unknown fields."""
        data = self.model_dump(mode="json", exclude={"secret", "idempotency_key"})
        for extra in self.model_extra or {}:
            data.pop(extra, None)
        return data

    def unknown_fields(self) -> dict[str, Any]:
        """Fields the router does not know, kept for the audit record."""
        return dict(self.model_extra or {})


def _from_table(value: Any, table: dict[str, str], message: str) -> Any:
    """A trader's spelling (``call``, ``sl_m``) mapped to the canonical value; blank means unset."""
    if not isinstance(value, str):
        return value
    key = value.strip().upper().replace("_", "-")
    if not key:
        return None
    if key not in table:
        raise ValueError(message)
    return table[key]


def parse_alert(payload: dict[str, Any]) -> Alert:
    """Validate a decoded alert body, or raise :class:`ValidationFailed` listing each field error."""
    try:
        return Alert.model_validate(payload)
    except ValidationError as exc:
        raise ValidationFailed([_field_error(e) for e in exc.errors()]) from None


def _field_error(error: Any) -> dict[str, Any]:
    # Never echo the input: it may be the secret (e.g. a secret sent as a list).
    field = ".".join(str(part) for part in error["loc"]) or "alert"
    message = error["msg"].removeprefix("Value error, ")
    return {"field": field, "message": message}
