"""The TradingView alert: what the trader's webhook message may say, validated.

An alert names *what* to trade in the trader's words (``NIFTY``, ``WEEKLY``,
``ATM+1``, ``CE``, 2 lots); the order worker later resolves that into a Fyers
contract. Everything here is pure validation: no I/O, cheap to import.

Alerts are strict, because a field the router ignores is an order it gets wrong:
an unknown field (a typo) is refused with the nearest known name, a value that
is still a ``{{placeholder}}`` is refused as not rendered by TradingView, and a
``time`` without a zone is refused rather than guessed.
"""

from __future__ import annotations

import difflib
import math
import re
from datetime import date, datetime
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
from common.indices import INDEX_UNDERLYINGS
from common.selectors import (
    ExpirySelector,
    StrikeSelector,
    parse_continuous_future,
    parse_expiry,
    parse_strike,
)


_FULL_TICKER = re.compile(r"^(NSE|BSE|MCX|NFO|BFO):[A-Z0-9&_-]+$")
_UNDERLYING = re.compile(r"^[A-Z0-9&_-]{1,30}$")
_KEY = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
IDEMPOTENCY_KEY_RULE = "must be 1-128 characters: letters, digits and ._:@/+=-"
_ORDER_TYPES = {"MARKET": "MARKET", "MKT": "MARKET", "LIMIT": "LIMIT", "LMT": "LIMIT", "SL": "SL",
                "SL-L": "SL", "SLL": "SL", "STOPLIMIT": "SL", "SL-M": "SL-M", "SLM": "SL-M", "STOP": "SL-M"}
_OPTION_TYPES = {"CE": "CE", "CALL": "CE", "C": "CE", "PE": "PE", "PUT": "PE", "P": "PE"}
_PLACEHOLDER = re.compile(r"\{\{[^{}]*\}\}")
_SHOWN_CHARS = 40  # how much of an unknown field's name or a placeholder an error repeats

Kind = Literal["OPTION", "FUTURE", "EQUITY", "TICKER"]


class Alert(BaseModel):
    """One validated TradingView alert.

    The position fields carry TradingView's strategy placeholders: ``position`` and
    ``position_size`` what the strategy holds after this order
    (``{{strategy.market_position}}``, ``{{strategy.market_position_size}}``),
    ``prev_position`` and ``prev_position_size`` what it held before. Sizes are
    absolute, in the unit of ``lots``. ``options`` says how an option strategy
    expresses a view: ``buy`` (the default: long buys calls, short buys puts) or
    ``sell`` (long sells puts, short sells calls). The worker derives the order's intent
    (enter, add, reduce, exit or reverse) from them and ``action``.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True,
                              allow_inf_nan=False)

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
    comment: str | None = Field(None, max_length=500)
    position: Literal["long", "short", "flat"] | None = None
    position_size: int | None = Field(None, ge=0, le=1_000_000)
    prev_position: Literal["long", "short", "flat"] | None = None
    prev_position_size: int | None = Field(None, ge=0, le=1_000_000)
    options: Literal["buy", "sell"] | None = None  # unset means buy

    # --- normalisation ------------------------------------------------------

    @field_validator("action", "product", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("position", "prev_position", "options", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        # TradingView renders market positions in lower case; traders type any case.
        return value.strip().lower() if isinstance(value, str) else value

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
        try:
            return parse_strike(value)
        except OverflowError:  # an integer too large to be a price
            raise ValueError("must be a positive price") from None

    @field_validator("option_type", mode="before")
    @classmethod
    def _option_type(cls, value: Any) -> Any:
        return _from_table(value, _OPTION_TYPES, "must be CE or PE (CALL/PUT accepted)")

    @field_validator("order_type", mode="before")
    @classmethod
    def _order_type(cls, value: Any) -> Any:
        return _from_table(value, _ORDER_TYPES, "must be MARKET, LIMIT, SL or SL-M")

    @field_validator("lots", "position_size", "prev_position_size", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        # {{strategy.order.contracts}} and the position sizes render as "2" or "2.0".
        if isinstance(value, str):
            value = value.strip()
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            return value  # pydantic reports the type or range error
        if not math.isfinite(number) or number != int(number):
            raise ValueError("must be a whole number of lots")
        return int(number)

    @field_validator("idempotency_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None and not valid_idempotency_key(value):
            raise ValueError(IDEMPOTENCY_KEY_RULE)
        return value

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        # TradingView's {{timenow}} is UTC ("...Z"). A time without a zone is someone's
        # local time: guessing UTC would make an IST alert 5.5 h old (or new).
        if value is not None and value.tzinfo is None:
            raise ValueError('has no time zone: use "{{timenow}}" (UTC, ends in Z) or add an offset such as +05:30')
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Alert":
        self._check_instrument()
        self._check_order_type()
        _check_position(self.position, self.position_size, "position", "position_size",
                        "{{strategy.market_position_size}}")
        _check_position(self.prev_position, self.prev_position_size, "prev_position", "prev_position_size",
                        "{{strategy.prev_market_position_size}}")
        return self

    def _check_instrument(self) -> None:
        kind = self.kind
        if kind == "OPTION":
            if self.option_type is None and self.position is None:
                # With the position placeholders the view picks it: long buys CE (options buy) or sells PE (sell).
                raise ValueError("optionType (CE or PE) is required with a strike, unless position says the view")
            if self.strike is None:
                raise ValueError("strike is required with an optionType (a number, ATM, ATM+1, OTM2...)")
            return
        if self.strike is not None or self.option_type is not None:
            raise ValueError(f"strike/optionType do not apply to {self.symbol}")
        if self.options is not None:
            raise ValueError(f"options (buy or sell) applies to option alerts only, not to {self.symbol}")
        if self.expiry is not None and (kind != "FUTURE" or self.underlying in INDEX_UNDERLYINGS
                                        or parse_continuous_future(self.symbol)):
            # An expiry alone used to make an index alert a future: a forgotten strike traded one.
            raise ValueError(f"expiry applies to {self.symbol} only with strike and optionType (an option); "
                             f"for the future, use {self.underlying}1! (this month) or {self.underlying}2! (next)")
        if kind == "EQUITY" and self.symbol in INDEX_UNDERLYINGS and self.action != "EXIT" and self.position is None:
            # EXIT, or a position, alone on an index speaks of what the strategy holds in it.
            raise ValueError(f"{self.symbol} is an index: give expiry, strike and optionType for an option, "
                             f"or use {self.symbol}1! for the future")

    def _check_order_type(self) -> None:
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
        """The normalised order, as stored and published: no secret, no idempotency key."""
        return self.model_dump(mode="json", exclude={"secret", "idempotency_key"})


def valid_idempotency_key(value: str) -> bool:
    """True when a trader's idempotency key (field or header) keeps to :data:`IDEMPOTENCY_KEY_RULE`."""
    return _KEY.fullmatch(value) is not None


def _check_position(position: str | None, size: int | None, position_name: str, size_name: str,
                    placeholder: str) -> None:
    """A position and its size must agree: TradingView renders them together."""
    if size is None:
        return
    if position is None:
        raise ValueError(f"{size_name} needs {position_name} (long, short or flat) beside it")
    if (position == "flat") != (size == 0):
        raise ValueError(f"{position_name} {position} does not match {size_name} {size}: "
                         f"use {placeholder}, the absolute size")


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


def _accepted_names() -> dict[str, str]:
    """Every key an alert may use (field names and legacy aliases) -> the documented spelling."""
    names: dict[str, str] = {}
    for name, info in Alert.model_fields.items():
        alias = info.validation_alias
        choices = [c for c in alias.choices if isinstance(c, str)] if isinstance(alias, AliasChoices) else []
        documented = choices[0] if choices else name
        for accepted in (name, *choices):
            names[accepted] = documented
    return names


_ACCEPTED = _accepted_names()
_ACCEPTED_LOWER = {name.lower(): documented for name, documented in _ACCEPTED.items()}


def parse_alert(payload: dict[str, Any]) -> Alert:
    """Validate a decoded alert body, or raise :class:`ValidationFailed` listing each field error."""
    errors: list[dict[str, Any]] = []
    fields: dict[str, Any] = {}
    unrendered: set[str] = set()
    spelt: dict[str, str] = {}  # documented name -> the spelling this alert used
    for key, value in payload.items():
        if key not in _ACCEPTED:
            errors.append(_unknown_field(key))
        elif spelt.setdefault(_ACCEPTED[key], key) != key:
            errors.append({"field": key, "message": f"`{key}` is another spelling of `{spelt[_ACCEPTED[key]]}`: "
                                                    "give only one"})
        elif isinstance(value, str) and (placeholder := _PLACEHOLDER.search(value)):
            unrendered.add(_ACCEPTED[key])
            errors.append({"field": key, "message": f"{_shown(placeholder.group())} was not rendered by "
                           "TradingView: it works only in a strategy alert, and only if spelt exactly"})
        else:
            fields[key] = value
    try:
        alert = Alert.model_validate(fields)
    except ValidationError as exc:
        # A field left out for its placeholder must not also be reported as missing, nor the
        # alert-wide rules it would have satisfied.
        errors.extend(error for error in map(_field_error, exc.errors())
                      if not unrendered or (error["field"] != "alert" and _ACCEPTED.get(error["field"]) not in unrendered))
    if errors:
        raise ValidationFailed(errors)
    return alert


def _unknown_field(key: str) -> dict[str, Any]:
    field = _shown(key)
    guess = difflib.get_close_matches(key.lower(), _ACCEPTED_LOWER, n=1, cutoff=0.6) if len(key) <= 64 else []
    hint = f"did you mean `{_ACCEPTED_LOWER[guess[0]]}`?" if guess else "free text belongs under `comment`"
    return {"field": field, "message": f"unknown field `{field}`: {hint}"}


def _shown(text: str) -> str:
    """Text repeated in an error, cut short: a key or value may be kilobytes long."""
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


def _field_error(error: Any) -> dict[str, Any]:
    # Never echo the input: it may be the secret (e.g. a secret sent as a list).
    field = ".".join(str(part) for part in error["loc"]) or "alert"
    message = error["msg"].removeprefix("Value error, ")
    return {"field": field, "message": message}
