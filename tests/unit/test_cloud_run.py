"""The Cloud Run admission model (deploy/local/cloud_run.py): concurrency x instances in flight,
429 beyond, and the worker's command line in the local stack."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from deploy.local import cloud_run
from deploy.local.cloud_run import REFUSAL, Admission, Shape, serve
from deploy.local.stack import worker_args

ROOT = Path(__file__).resolve().parents[2]


class Held:
    """A WSGI app whose requests wait until released; counts how many are inside."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.inside = threading.Semaphore(0)

    def __call__(self, environ, start_response):
        self.inside.release()
        self.release.wait(timeout=10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]


def test_requests_beyond_concurrency_times_instances_get_cloud_runs_429_and_a_freed_slot_is_reused():
    app = Held()
    admission = Admission(app, Shape(concurrency=2, max_instances=2, timeout=60))
    server = serve(admission, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            held = [pool.submit(requests.post, url, timeout=10) for _ in range(4)]
            for _ in range(4):
                assert app.inside.acquire(timeout=10)  # all four are inside the app
            beyond = requests.post(url, timeout=10)
            app.release.set()
            answers = [f.result() for f in held]
        after = requests.post(url, timeout=10)
    finally:
        server.shutdown()

    assert (beyond.status_code, beyond.content) == (429, REFUSAL)
    assert [a.status_code for a in answers] == [200] * 4 and after.status_code == 200
    assert admission.stats() == {"admitted": 5, "refused": 1, "peak_in_flight": 4, "in_flight": 0}


def test_the_local_stack_serves_the_worker_with_the_deployed_shape():
    command = worker_args("python3", ROOT / "main.py", "127.0.0.1", 47105, cloud_run.WORKER)

    assert command[:3] == ["python3", "-m", "deploy.local.cloud_run"]
    args = cloud_run.parse_args(command[3:])
    assert (args.target, args.signature_type, args.source) == ("order_worker", "cloudevent", str(ROOT / "main.py"))
    assert (args.host, args.port) == ("127.0.0.1", 47105)
    assert (args.concurrency, args.max_instances) == (cloud_run.WORKER.concurrency, cloud_run.WORKER.max_instances)
