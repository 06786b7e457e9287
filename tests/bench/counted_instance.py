"""A function served as ``deploy.local.cloud_run`` serves it, with its Firestore operations
counted (tests/bench/firestore_ops.py) and readable at ``GET /__bench/firestore-ops``.

The benchmark runs the webhook in a process of its own, as its own instance; its Firestore
operations are billed with the worker's, so they are counted there and read over HTTP.
Same arguments as ``python -m deploy.local.cloud_run``.
"""

from __future__ import annotations

import flask

from deploy.local import cloud_run
from tests.bench.firestore_ops import counting

OPS_PATH = "/__bench/firestore-ops"


def main() -> None:
    args = cloud_run.parse_args()
    shape = cloud_run.Shape(args.concurrency, args.max_instances, cloud_run.WORKER.timeout)
    app = cloud_run.function_app(args.target, args.source, args.signature_type, shape)
    # Entered before gunicorn forks its worker: the patched client methods and these counts
    # are the worker's own from then on, and so is the route that reads them.
    with counting() as counts:
        app.add_url_rule(OPS_PATH, "bench-firestore-ops", lambda: flask.jsonify(counts.snapshot()))
        cloud_run.serve_as_deployed(app, args.host, args.port, shape)

if __name__ == "__main__":
    main()
