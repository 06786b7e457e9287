"""The narrow views of Fyers that the router's parts depend on, as Protocols.

:class:`~common.broker.client.FyersBroker` satisfies each; a part names the
smallest one it needs, so a reader sees which broker calls it can make.
"""

from __future__ import annotations

from typing import Iterable, Protocol

from common.broker.models import BrokerOrder, OrderRequest, PlaceResult, Position, Quote


class OrderBook(Protocol):
    """Reading today's orders: the reconcile job, and the worker's look-ups."""

    def orders(self) -> list[BrokerOrder]: ...

    def orders_by_tag(self, tag: str) -> list[BrokerOrder]: ...

    def order_by_id(self, order_id: str) -> BrokerOrder | None: ...


class Trading(OrderBook, Protocol):
    """Everything the order worker asks of Fyers."""

    def quotes(self, tickers: Iterable[str]) -> dict[str, Quote]: ...

    def positions(self) -> list[Position]: ...

    def place_order(self, request: OrderRequest) -> PlaceResult: ...

    def cancel_order(self, order_id: str) -> None: ...
