"""Scriptable faults: what the next N calls of a route should suffer.

A route is ``"METHOD /path"`` (``"POST /api/v3/orders/sync"``), a bare path
(any method) or ``"*"`` (any API route; the ``/_sim`` controls never fault).

Kinds, and when they strike:

- before authentication (the gateway's doing): ``rate_limit`` (429 with
  ``Retry-After``/``X-Retry-After-Ms``), ``http_503_html`` (non-JSON 503),
  ``hang`` (sleep ``seconds``; with ``record`` the request is processed first and
  its answer sent late, with ``land_after`` it is processed that many seconds after
  it arrived, whatever became of the client, else nothing is processed and a 504
  page follows),
  ``reset_connection`` (the socket is closed unanswered; with ``record`` the
  request is processed first);
- after authentication (the OMS's doing): ``algo_not_allowed`` (-50 algo
  refusal), ``reject`` (-99 with ``message``), ``no_ack`` (code 201; with
  ``record`` the order is booked first), ``async_reject`` (accepted with 1101,
  booked as status 5 with ``message`` or the margin-shortfall text), ``shuffle``
  (list answers in reverse order: clients must match quotes by ``n``).

``expire_tokens`` is not queued: the simulator applies it at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, asdict

PRE_AUTH = {"rate_limit", "http_503_html", "hang", "reset_connection"}
POST_AUTH = {"algo_not_allowed", "reject", "no_ack", "async_reject", "shuffle"}
KINDS = PRE_AUTH | POST_AUTH


@dataclass
class Fault:
    kind: str
    route: str = "*"
    count: int = 1
    seconds: float = 0.0
    record: bool = False
    message: str = ""
    retry_after_ms: int = 1000
    land_after: float | None = None
    used: int = field(default=0)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {sorted(KINDS)}")
        if self.count < 1:
            raise ValueError("count must be at least 1")

    def matches(self, route_key: str) -> bool:
        path = route_key.partition(" ")[2]
        return self.route in ("*", route_key, path)

    def as_dict(self) -> dict:
        return asdict(self)


class FaultQueue:
    """Pending faults in the order they were added. Thread-safe."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def take(self, route_key: str, kinds: set[str]) -> Fault | None:
        """Consume one use of the first fault of one of ``kinds`` matching the route."""
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds and fault.matches(route_key):
                    fault.used += 1
                    if fault.used >= fault.count:
                        self._faults.remove(fault)
                    return fault
        return None

    def pending(self) -> list[dict]:
        with self._lock:
            return [fault.as_dict() for fault in self._faults]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
