"""Probe: what the Pub/Sub emulator's own push does with concurrency, retry backoff and dead letters.

The findings are in deploy/local/pubsub_push.py, which models what it does not keep.
Run: ``python -m tests.bench.emulator_push [--seconds 150]`` (prints JSON).

* ``slow``: 20 messages to an endpoint that answers 200 after 2 s: the most pushes in flight.
* ``few`` (3) and ``many`` (40) messages always answered 429, dead-letter policy 5 attempts,
  with a retry policy of 10-60 s (``--no-retry-policy``: without one): attempts per message,
  the gaps between them, what reached the dead-letter topic.
* ``nopolicy``: one message always answered 429, no policy at all.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from deploy.local import emulators as emu

PROJECT = "probe-project"


class _Endpoint(BaseHTTPRequestHandler):
    log: dict[str, list[tuple[float, str, Any]]] = defaultdict(list)
    in_flight: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    lock = threading.Lock()
    started = time.monotonic()

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        kind = self.path.strip("/")
        with self.lock:
            self.in_flight[kind] += 1
            self.peak[kind] = max(self.peak[kind], self.in_flight[kind])
            self.log[kind].append((round(time.monotonic() - self.started, 2), body["message"]["messageId"],
                                   body.get("deliveryAttempt")))
        if kind == "slow":
            time.sleep(2)
        with self.lock:
            self.in_flight[kind] -= 1
        self.send_response(200 if kind == "slow" else 429)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def probe(seconds: float, retry_policy: bool) -> dict[str, Any]:
    from google.cloud import pubsub_v1

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    emulator = emu.start_pubsub(Path(tempfile.mkdtemp(prefix="push-probe-")), PROJECT)
    try:
        os.environ.update(emulator.env)
        pub, sub = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        url = f"http://127.0.0.1:{server.server_port}"
        for topic in ("slow", "few", "many", "nopolicy", "dlq"):
            pub.create_topic(name=pub.topic_path(PROJECT, topic))
        for kind in ("slow", "few", "many", "nopolicy"):
            request: dict[str, Any] = {"name": sub.subscription_path(PROJECT, f"{kind}-push"),
                                       "topic": pub.topic_path(PROJECT, kind), "ack_deadline_seconds": 60,
                                       "push_config": {"push_endpoint": f"{url}/{kind}"}}
            if kind in ("few", "many"):
                request["dead_letter_policy"] = {"dead_letter_topic": pub.topic_path(PROJECT, "dlq"),
                                                 "max_delivery_attempts": 5}
                if retry_policy:
                    request["retry_policy"] = {"minimum_backoff": {"seconds": 10}, "maximum_backoff": {"seconds": 60}}
            sub.create_subscription(request=request)
        sub.create_subscription(name=sub.subscription_path(PROJECT, "dlq-hold"), topic=pub.topic_path(PROJECT, "dlq"))
        counts = {"slow": 20, "few": 3, "many": 40, "nopolicy": 1}
        futures = [pub.publish(pub.topic_path(PROJECT, kind), f"{kind}{n}".encode(), kind=kind)
                   for kind, count in counts.items() for n in range(count)]
        for future in futures:
            future.result(timeout=10)
        time.sleep(seconds)
        held = sub.pull(subscription=sub.subscription_path(PROJECT, "dlq-hold"), max_messages=100, timeout=10)
    finally:
        emulator.stop()
        server.shutdown()
    dead: dict[str, int] = defaultdict(int)
    for received in held.received_messages:
        dead[received.message.attributes.get("kind", "?")] += 1
    report: dict[str, Any] = {"retry_policy": "10-60 s" if retry_policy else "none",
                              "peak_in_flight": dict(_Endpoint.peak), "dead_lettered": dict(dead),
                              "slow_all_answered_after_s": _Endpoint.log["slow"][-1][0]}
    for kind in ("few", "many", "nopolicy"):
        times: dict[str, list[float]] = defaultdict(list)
        for at, message_id, _ in _Endpoint.log[kind]:
            times[message_id].append(at)
        report[kind] = {
            "attempts_per_message": sorted(len(t) for t in times.values()),
            "gaps_s_first_3": [[round(b - a, 1) for a, b in zip(t, t[1:])][:6] for t in list(times.values())[:3]],
            "delivery_attempt_field": sorted({str(d) for _, _, d in _Endpoint.log[kind]}),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--no-retry-policy", action="store_true")
    args = parser.parse_args()
    emu.ensure_tools()
    print(json.dumps(probe(args.seconds, retry_policy=not args.no_retry_policy), indent=1))


if __name__ == "__main__":
    main()
