"""What a signal means for the strategy's position: enter, add, reduce, exit or reverse.

TradingView's alert engine cannot see the broker's positions, and a sell meant
to close a long can grow a short instead (shared/tradingview.md). So the router
decides from what the strategy holds, in its ledger (common/ledger.py):

* With the position placeholders (``position``/``position_size``), the target is
  known: the difference from what the ledger holds is the intent. A target of
  flat closes every leg; a target across zero closes every leg, then opens the
  new one (two orders, in that order).
* Without them, ``action`` keeps its meaning, except that a SELL of an option or
  future the strategy holds long (a BUY of one it holds short) reduces or closes
  it, never opening a new leg, and an ``EXIT`` closes everything the strategy
  holds in that instrument.

Closing steps name the exact held contract and quantity: never a strike or
expiry resolved afresh, so an ATM that drifted, or a ``NIFTY1!`` that rolled,
still closes what was bought. A reduction never closes more than is held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from common.alert import Alert
from common.errors import IntentConflict
from common.indices import INDEX_UNDERLYINGS
from common.ledger import Leg, Position
from common.symbols import SymbolMaster, canonical_underlying

Kind = Literal["ENTER", "ADD", "REDUCE", "EXIT", "REVERSE", "NONE", "ORDER"]


@dataclass(frozen=True)
class Step:
    """One order of an intent.

    ``CLOSE`` steps name the held ``ticker`` and ``quantity`` (units). ``OPEN`` steps
    name ``lots`` of the contract the alert selects, with ``option_type`` for an
    option (derived from the position and ``options`` when the alert gives none),
    or of the held ``ticker`` when adding to a leg.
    """

    effect: Literal["OPEN", "CLOSE"]
    side: int  # 1 buy, -1 sell
    lots: int = 0
    ticker: str | None = None
    quantity: int | None = None
    option_type: str | None = None

    def describe(self) -> str:
        verb = "BUY" if self.side == 1 else "SELL"
        if self.ticker and self.quantity:
            return f"{self.effect.lower()} {verb} {self.ticker} x{self.quantity}"
        what = self.ticker or ("the selected " + (self.option_type or "contract"))
        return f"{self.effect.lower()} {verb} {self.lots} lot(s) of {what}"


@dataclass(frozen=True)
class Intent:
    kind: Kind
    steps: tuple[Step, ...]
    reason: str  # for the order's record and the trader: "long 2 -> flat: close NSE:NIFTY26NOV24500CE x130"


def derive(alert: Alert, held: Position | None) -> Intent:
    """The intent of ``alert`` for a strategy that holds ``held`` (None: nothing yet)."""
    legs = list(held.legs) if held else []
    if alert.position is not None:
        return _towards_target(alert, legs)
    return _by_action(alert, legs, held)


def signals_reduction(alert: Alert) -> bool:
    """Whether the signal itself says the strategy holds less after it than before (an exit, a
    reduction, a flip): known before the ledger is read, so that its broker calls can go first."""
    if alert.action == "EXIT":
        return True
    if alert.position is None or alert.prev_position is None:
        return False
    before = {"long": 1, "short": -1, "flat": 0}[alert.prev_position] * (alert.prev_position_size or 0)
    after = target_lots(alert)
    return before != 0 and (after * before < 0 or abs(after) < abs(before))


def target_lots(alert: Alert) -> int:
    """The signed target exposure in lots from the position placeholders."""
    size = alert.position_size or 0
    return {"long": size, "short": -size, "flat": 0}[alert.position or "flat"]


def _towards_target(alert: Alert, legs: list[Leg]) -> Intent:
    held = sum(leg.exposure for leg in legs)
    target = target_lots(alert)
    change = f"{_view(held)} -> {_view(target)}"
    if target == held:
        return Intent("NONE", (), f"{change}: the strategy already holds this")
    if target == 0:
        return Intent("EXIT", _close(legs, None), f"{change}: close every leg")
    if held == 0:
        return Intent("ENTER", (_open(alert, target),), f"{change}: open")
    if (held > 0) != (target > 0):
        return Intent("REVERSE", (*_close(legs, None), _open(alert, target)), f"{change}: close every leg, then open")
    if abs(target) > abs(held):
        newest = legs[-1]
        add = Step("OPEN", 1 if newest.side == "LONG" else -1, lots=abs(target) - abs(held), ticker=newest.ticker,
                   option_type=newest.option_type)
        return Intent("ADD", (add,), f"{change}: add to {newest.ticker}")
    return Intent("REDUCE", _close(legs, abs(held) - abs(target)), f"{change}: close part, oldest leg first")


def _by_action(alert: Alert, legs: list[Leg], held: Position | None) -> Intent:
    if alert.action == "EXIT":
        chosen = [leg for leg in legs if _same_contract_family(alert, leg)]
        if not chosen:
            return Intent("EXIT", (), f"EXIT: the ledger holds {held.summary() if held else 'nothing'}")
        return Intent("EXIT", _close(chosen, None), "EXIT: close what the strategy holds")
    side = 1 if alert.action == "BUY" else -1
    if alert.kind in ("OPTION", "FUTURE"):
        # A sell against a held long (a buy against a held short) closes it: never a new leg.
        against = [leg for leg in legs if _same_contract_family(alert, leg) and (leg.side == "LONG") == (side == -1)]
        if against:
            lots_held = sum(leg.lots for leg in against)
            lots = min(alert.lots, lots_held)
            kind: Kind = "EXIT" if lots == lots_held else "REDUCE"
            return Intent(kind, _close(against, lots), f"{alert.action} against a held {against[0].side.lower()}: "
                                                       f"close {lots} of {lots_held} lot(s), never a new leg")
    return Intent("ORDER", (Step("OPEN", side, lots=alert.lots, option_type=alert.option_type),), alert.action)


def _same_contract_family(alert: Alert, leg: Leg) -> bool:
    """Whether a held leg is what the alert speaks of: the same option type for an option
    alert, the exact ticker for a full ticker, any leg of the instrument otherwise."""
    if alert.kind == "TICKER":
        return leg.ticker == alert.symbol
    if alert.kind == "OPTION" and alert.option_type is not None:
        return leg.option_type == alert.option_type
    if alert.kind == "FUTURE":
        return leg.option_type is None
    return True


def _close(legs: list[Leg], lots: int | None) -> tuple[Step, ...]:
    """Closing orders for ``lots`` of the legs (all of them when None), oldest leg first."""
    steps: list[Step] = []
    left = lots
    for leg in sorted(legs, key=lambda g: g.opened_at):
        take = leg.lots if left is None else min(left, leg.lots)
        if take <= 0:
            continue
        quantity = leg.quantity if take == leg.lots else take * leg.lot_size
        steps.append(Step("CLOSE", -1 if leg.side == "LONG" else 1, lots=take, ticker=leg.ticker, quantity=quantity,
                          option_type=leg.option_type))
        if left is not None:
            left -= take
    return tuple(steps)


def _open(alert: Alert, target: int) -> Step:
    """The opening order for a signed target: for options, the leg that expresses the view."""
    if alert.kind == "OPTION":
        selling = alert.options == "sell"
        option_type = ("PE" if target > 0 else "CE") if selling else ("CE" if target > 0 else "PE")
        if alert.option_type is not None and alert.option_type != option_type:
            raise IntentConflict(f"optionType {alert.option_type} contradicts position {alert.position} with options "
                              f"{alert.options or 'buy'}, which means {'SELL' if selling else 'BUY'} {option_type}; "
                              "leave optionType out and the router picks it")
        return Step("OPEN", -1 if selling else 1, lots=abs(target), option_type=option_type)
    return Step("OPEN", 1 if target > 0 else -1, lots=abs(target))


def _view(lots: int) -> str:
    return "flat" if lots == 0 else f"{'long' if lots > 0 else 'short'} {abs(lots)}"


def step_alert(alert: Alert, step: Step) -> Alert:
    """The alert to plan one step with: the held contract itself for a close or an add, the
    alert's own selection (with the view's option type) for an opening."""
    action = "BUY" if step.side == 1 else "SELL"
    if step.ticker:
        return alert.model_copy(update={
            "action": action, "symbol": step.ticker, "lots": max(1, step.lots), "expiry": None, "strike": None,
            "option_type": None, "options": None, "position": None, "position_size": None})
    return alert.model_copy(update={"action": action, "lots": step.lots,
                                    "option_type": step.option_type or alert.option_type})


def instrument_of_alert(alert: Alert, master: SymbolMaster) -> str:
    """The ledger's instrument for an alert: the underlying of an option or future, the ticker otherwise."""
    if alert.kind in ("OPTION", "FUTURE"):
        return canonical_underlying(alert.underlying)  # as the contract's own underlying is named
    if alert.kind == "TICKER":
        contract = master.lookup(alert.symbol)
        return contract.underlying if contract.kind in ("CE", "PE", "FUT") and contract.underlying else contract.ticker
    if canonical_underlying(alert.symbol) in INDEX_UNDERLYINGS:  # an exit naming only the index
        return canonical_underlying(alert.symbol)
    return master.equity(alert.symbol, alert.exchange).ticker


def names_one_contract(alert: Alert) -> bool:
    """Whether an alert names one listed contract for good: a full ticker, or an option with a
    numeric strike and a dated expiry. ATM, WEEKLY or NIFTY1! name different contracts over time."""
    if alert.kind == "TICKER":
        return True
    return (alert.kind == "OPTION" and alert.strike is not None and alert.strike.kind == "PRICE"
            and alert.expiry is not None and alert.expiry.kind == "DATE")
