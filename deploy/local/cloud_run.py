"""Cloud Run's request admission, for a function served locally: the shape it is deployed
with, and HTTP 429 beyond it.

Cloud Run lets at most ``concurrency`` requests into one instance at a time, and runs at
most ``max_instances`` instances. A request beyond ``concurrency x max_instances`` is
answered 429 ("no available instance") without reaching the code, and Pub/Sub counts
that answer as a failed delivery: it is redelivered with backoff and, after
``max-delivery-attempts``, dead-lettered. functions-framework on its own takes every
request, so :class:`Admission` (a WSGI middleware counting requests in flight) stands in
front of the app where the local stack and the test pipeline serve it.

Two simplifications, both the harsher case for the caller: Cloud Run may hold a request
for a moment in a pending queue while an instance frees up, where this answers 429 at
once; and the local process is one instance however many are allowed, so its
``concurrency x max_instances`` requests run in one process.

Run as a program (the local stack's worker, the benchmark's webhook), it serves the function
with the server Cloud Run runs it on: functions-framework's production server, gunicorn with
one worker process and a pool of threads (:func:`serve_as_deployed`). :func:`serve`, a
werkzeug server on a thread, is for tests that serve an app inside their own process.

:data:`WORKER` and :data:`WEBHOOK` are those functions' shapes exactly as
``deploy/deploy.sh`` deploys them by default (``tests/deploy`` checks that they agree).

Run: ``python -m deploy.local.cloud_run --target=NAME --source=main.py
--signature-type=TYPE --host=H --port=P --concurrency=N --max-instances=M``.
"""

from __future__ import annotations

import argparse
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable

# Cloud Run's own answer when no instance can take a request.
REFUSAL = b"The request was aborted because there was no available instance."


@dataclass(frozen=True)
class Shape:
    """How a function is deployed: requests per instance, instances, request timeout (s)."""

    concurrency: int
    max_instances: int
    timeout: int

    @property
    def capacity(self) -> int:
        return self.concurrency * self.max_instances


# As deploy.sh deploys them by default (docs/deploy.md says why these numbers).
WORKER = Shape(concurrency=200, max_instances=1, timeout=180)
WEBHOOK = Shape(concurrency=8, max_instances=10, timeout=30)


class Admission:
    """WSGI middleware: at most ``shape.capacity`` requests in the app at once, 429 beyond.

    Counts what it admitted, refused and the most in flight at once (``stats()``).
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], shape: Shape) -> None:
        self.app = app
        self.shape = shape
        self._lock = threading.Lock()
        self._in_flight = 0
        self._admitted = 0
        self._refused = 0
        self._peak = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with self._lock:
            if self._in_flight >= self.shape.capacity:
                self._refused += 1
                refused = True
            else:
                refused = False
                self._in_flight += 1
                self._admitted += 1
                self._peak = max(self._peak, self._in_flight)
        if refused:
            start_response("429 Too Many Requests", [("Content-Type", "text/plain"),
                                                      ("Content-Length", str(len(REFUSAL)))])
            return [REFUSAL]
        try:
            # The body is read whole before the slot is given back: a request holds its slot
            # until its answer is complete, as on Cloud Run.
            return list(self.app(environ, start_response))
        finally:
            with self._lock:
                self._in_flight -= 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"admitted": self._admitted, "refused": self._refused, "peak_in_flight": self._peak,
                    "in_flight": self._in_flight}


def function_app(target: str, source: str, signature_type: str, shape: Shape) -> Any:
    """The functions-framework app for ``target``, behind :class:`Admission` (``app.admission``)."""
    from functions_framework import create_app

    app = create_app(target, source, signature_type)
    app.admission = Admission(app.wsgi_app, shape)
    app.wsgi_app = app.admission
    return app


def serve(app: Any, host: str, port: int) -> Any:
    """A threaded server for ``app``, to run on a thread of the caller's process (a thread per
    connection: admission is the only limit)."""
    from werkzeug.serving import make_server

    # An access line per request would drown the function's own logs.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return make_server(host, port, app, threaded=True)


def serve_as_deployed(app: Any, host: str, port: int, shape: Shape) -> None:
    """Serve ``app`` until stopped, as Cloud Run serves a function: with functions-framework's
    production server (what its ``functions-framework`` command runs, and what the local stack
    runs the other functions with), gunicorn's threaded worker in a process forked from this one.

    Not werkzeug's development server: it starts a thread for every connection (TradingView
    sends each alert on a new one), which on a machine shared with the emulators made the
    benchmarked webhook slower, in CPU per alert and in latency, than the deployed one.
    """
    from functions_framework._http import create_server

    # Deployed, an instance runs THREADS = its concurrency. Here one process stands for all the
    # instances, and Admission, not the pool, must be the limit: a request beyond the capacity
    # has to reach it to be refused, so the pool holds as many threads again.
    create_server(app, False, threads=2 * shape.capacity).run(host, port)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deploy.local.cloud_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--signature-type", required=True, choices=("http", "cloudevent", "event"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--max-instances", type=int, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    shape = Shape(args.concurrency, args.max_instances, WORKER.timeout)
    app = function_app(args.target, args.source, args.signature_type, shape)
    print(f"{args.target} on http://{args.host}:{args.port}: at most {shape.concurrency} requests x "
          f"{shape.max_instances} instance(s) in flight, 429 beyond", flush=True)
    serve_as_deployed(app, args.host, args.port, shape)


if __name__ == "__main__":
    main()
