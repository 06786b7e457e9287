"""The ``order_worker`` CloudEvent function: place each queued order at most once.

Pub/Sub delivers at least once, sometimes twice at the same moment. The
Firestore claim (a transaction with a lease) lets one delivery proceed; another
that finds the lease live waits for the holder to finish or its lease to end,
never acks itself away. Every step is an event on the order.

A delivery, step by step (:func:`handle`):

1. Decode the message into an order command (``claim.decode``). One that cannot be
   read is recorded and dropped: never retried.
2. Record the order if the webhook could not write Firestore
   (``claim.record_for_webhook``); a duplicate of another order is dropped.
3. Claim it (``claim.claim_order``), waiting out another delivery's live lease; the
   first claim notes the message's id and publish time on the order. An order an
   earlier delivery settled goes to step 6.
4. A takeover of an order left PLACING or UNKNOWN settles it from the book first
   (``settling.settled_by_book``); settled, it goes to step 6.
5. Guard, plan and place it (``guards.guard_and_place``): the guards, what the signal
   means for the strategy's position in orders (``position``), the placement
   (``placing``), and how it ended (``endings``).
6. Its later steps (:func:`_next_steps`): each claimed, guarded and placed in turn, or
   SKIPPED if this one did not end PLACED.

Firestore unavailable at any step: nack, and the redelivery starts afresh.

Never twice: each placement failure is classed by what Fyers can still do.

* Never reached Fyers (connection refused, DNS, TLS, connect timeout, the
  gateway's 503 page): sent again with backoff while the signal is fresh.
* Refused by Fyers: REJECTED with its reason.
* May still land (read timeout, reset after sending, a JSON 5xx, 201): UNKNOWN
  with ``may_land_until`` = sent + ``PLACEMENT_LANDING_SECONDS``. The book is
  read at once, and again at that bound; only an order still absent then is
  placed again, and only while the signal is fresh. A takeover after a crash
  honours the same bound, counted from the lease it broke.

Outcomes and notices go through :class:`common.outcome.Outcomes`, shared with the
reconcile job. Return = ack. Raise = nack, and Pub/Sub redelivers: only for
retryable failures still inside the order's age budget.

The modules, each calling only those above it: ``deps`` (:class:`WorkerDeps`, the
delivery in progress, :class:`Retry`), ``broker_calls`` (Fyers through the rate
limiter), ``endings``, ``settling``, ``placing``, ``position``, ``guards``, ``claim``;
this one is the delivery's flow.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from common.errors import StoreUnavailable
from common.logs import get_logger, log_context
from common.orders import Delivered
from common.outcome import Outcomes, landing_deadline, signal_deadline
from common.records import OrderCommand, OrderStatus
from functions.order_worker.claim import claim_order, decode, delivered, record_for_webhook
from functions.order_worker.deps import Job, Retry, WorkerDeps
from functions.order_worker.endings import finish
from functions.order_worker.guards import guard_and_place
from functions.order_worker.settling import settled_by_book

__all__ = ["Retry", "WorkerDeps", "handle"]

log = get_logger("order_worker")


def handle(cloud_event: Any, deps: WorkerDeps) -> None:
    """Process one Pub/Sub delivery. Raises :class:`Retry` only for retryable cases."""
    message = (cloud_event.data or {}).get("message", {})
    command = decode(message, deps)
    if command is None:
        return
    with log_context(request_id=command.request_id, order_id=command.order_id):
        try:
            _process(command, deps, delivered(message, deps.clock()))
        except StoreUnavailable as exc:
            # Nothing was decided that Firestore did not record: the redelivery starts afresh.
            log.warning("Firestore unavailable; Pub/Sub will redeliver", extra={"fields": {"error": exc.message}})
            raise Retry(exc.message) from exc


def _process(command: OrderCommand, deps: WorkerDeps, message: Delivered | None) -> None:
    now = deps.clock()
    if not command.recorded or deps.store.get(command.order_id) is None:
        if not record_for_webhook(command, deps, now):
            return
    claim = claim_order(command, deps, message)
    if claim is None or claim.record is None:
        return
    job = Job(command, claim.record, signal_deadline(command.alert_time, command.received_at, deps.settings),
              claim.record.lease_until, Outcomes(deps.store, deps.notify, deps.clock, deps.worker_id, ledger=deps.ledger))
    if claim.outcome == "terminal":
        return _next_steps(job, deps)  # an earlier delivery settled it; its later steps may remain
    if claim.previous in (OrderStatus.PLACING, OrderStatus.UNKNOWN):
        # A takeover: an earlier attempt may have reached Fyers, or may still.
        may_land_until = landing_deadline(claim.previous_lease_until, claim.record.may_land_until, deps.settings,
                                          default=now)
        if settled_by_book(job, deps, may_land_until, current=OrderStatus.PLACING, request=None):
            return _next_steps(job, deps)
    guard_and_place(job, deps)
    _next_steps(job, deps)


def _next_steps(job: Job, deps: WorkerDeps) -> None:
    """Place this order's later steps, in order, once it is settled; skip them if it did not go through."""
    if not job.record.children:
        return
    current = deps.store.get(job.record.order_id)
    for child_id in job.record.children:
        claim = deps.store.claim(child_id, worker_id=deps.worker_id, now=deps.clock(),
                                 lease=timedelta(seconds=deps.settings.lease_seconds))
        if claim.outcome != "claimed":
            continue  # done by an earlier delivery, or in another's hands
        child = Job(job.command, claim.record, job.deadline, claim.record.lease_until, job.outcomes)
        if current is None or current.status != OrderStatus.PLACED.value:
            finish(child, deps, OrderStatus.SKIPPED, "PREVIOUS_STEP_FAILED",
                   f"Not placed: the step before it ({job.record.order_id}) ended {current.status if current else 'unrecorded'}.",
                   notify=False)
            continue
        guard_and_place(child, deps)

