"""The ``scheduler`` HTTP function: runs one maintenance job per request.

Cloud Scheduler calls it with ``?job=<name>`` (or a JSON body ``{"job": ...}``);
in the cloud only its OIDC identity gets through, as the function is deployed
with ``--no-allow-unauthenticated`` and the platform checks the token.

Jobs: ``session`` (is the Fyers session alive), ``symbols`` (refresh the symbol
master), ``reconcile`` (orders vs the broker's book), ``health``. Each returns a
JSON report, answered with 200. Failures map through
:func:`common.errors.http_response`; only failures worth retrying answer 5xx (a
report marked ``retryable``, an unreachable Firestore or broker), so a Cloud
Scheduler retry means something. An unknown job is a 400. Each run logs one
structured summary line.
"""

from __future__ import annotations

import importlib
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from common.errors import BadRequest, MethodNotAllowed, RouterError, StoreUnavailable, http_response
from common.logs import get_logger, log_context
from common.settings import Settings

log = get_logger("scheduler")

# job -> (module, run function). Imported on first use: each job's imports stay off the others' runs.
JOBS: dict[str, tuple[str, str]] = {
    "session": ("functions.jobs.session", "run_session_job"),
    "symbols": ("functions.jobs.symbols", "run_symbols"),
    "reconcile": ("functions.jobs.reconcile", "run_reconcile"),
    "health": ("functions.jobs.health", "run_health"),
}
_MAX_BODY_BYTES = 4096
_SUMMARY_KEYS = ("ok", "status", "version", "error", "retryable", "checked", "book_orders", "notified")


@dataclass
class SchedulerDeps:
    """Builders of each job's own dependencies (called per run; they may cache inside)."""

    settings: Settings
    session: Callable[[], Any]
    symbols: Callable[[], Any]
    reconcile: Callable[[], Any]
    health: Callable[[], Any]
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)


def serve(request: Any, deps: SchedulerDeps) -> tuple[dict[str, Any], int]:
    """Run the requested job; returns (JSON body, HTTP status). Never raises."""
    request_id = request.headers.get("Function-Execution-Id") or uuid.uuid4().hex[:16]
    started = time.monotonic()
    job: str | None = None
    report: dict[str, Any] | None = None
    with log_context(request_id=request_id):
        try:
            job = _job_name(request)
            report = _run(job, deps)
            status = 503 if report.get("retryable") else 200
            body: dict[str, Any] = {"status": "done" if status == 200 else "retry", "job": job, "report": report}
        except Exception as exc:  # every failure becomes a sanitised answer
            body, status = http_response(_classify(exc))
            if job is not None:
                body["job"] = job
            if status >= 500:
                log.error("scheduler job failed", exc_info=not isinstance(exc, RouterError))
        summary = {key: report[key] for key in _SUMMARY_KEYS if report and key in report}
        log.info("scheduler job finished", extra={"fields": {
            "job": job, "http_status": status, "duration_ms": round((time.monotonic() - started) * 1000),
            **summary, **({"error": body.get("error")} if "error" in body else {})}})
        return body, status


def _job_name(request: Any) -> str:
    if request.method not in ("GET", "POST"):
        raise MethodNotAllowed("Use POST (or GET) with ?job=<name>.")
    job = request.args.get("job")
    if job is None and request.content_length and request.content_length <= _MAX_BODY_BYTES:
        payload = request.get_json(force=True, silent=True)
        job = payload.get("job") if isinstance(payload, dict) else None
    if not isinstance(job, str) or job not in JOBS:
        shown = job if isinstance(job, str) and job.isidentifier() and len(job) <= 40 else None
        raise BadRequest(f"Unknown job {shown!r}; expected one of {', '.join(JOBS)}."
                         if shown else f"Name a job: ?job=<{'|'.join(JOBS)}>.")
    return job


def _run(job: str, deps: SchedulerDeps) -> dict[str, Any]:
    module, function = JOBS[job]
    run = getattr(importlib.import_module(module), function)
    job_deps = getattr(deps, job)()
    return run(job_deps, deps.clock())


def _classify(exc: BaseException) -> BaseException:
    """Google API failures (Firestore, Storage) are retryable outages, not internal errors."""
    if isinstance(exc, RouterError):
        return exc
    from google.api_core.exceptions import GoogleAPIError

    if isinstance(exc, GoogleAPIError):
        return StoreUnavailable(f"A Google Cloud service did not answer ({type(exc).__name__}); retry.")
    return exc
