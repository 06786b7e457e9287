"""The whole router on one machine, in one command: ``./deploy/local/run.sh [options]``.

Starts, each in its own process group on its own port:

* the Firestore and Pub/Sub emulators (:mod:`deploy.local.emulators`);
* the Fyers simulator, as a process (``python -m deploy.local.fyers_simulator
  --auto-approve``), with symbol masters generated for today, which a small HTTP
  server in this process also serves as ``/sym_details/<NAME>.csv``;
* the four functions, each ``functions-framework --target=NAME --source=main.py``,
  configured by environment variables as a deployment is; the worker is served the way
  Cloud Run runs it (:mod:`deploy.local.cloud_run`): with the concurrency and instance
  limit that deploy.sh deploys, and HTTP 429 beyond them.

It creates the topics (``orders``, ``notifications``, ``orders-dlq``) as soon as
Pub/Sub answers, and pushes ``orders`` to the worker with the trigger subscription's
retry backoff and dead-letter policy (:mod:`deploy.local.pubsub_push`: the emulator's own
push keeps neither, and pushes two at a time). Once everything runs, it loads the symbol
master through the scheduler's ``symbols`` job, logs in to the simulator through the
auth function (``/login`` with the operator key, the simulator's auto-approve,
``/callback``), prints the webhook URL with a ready ``curl`` and the operator
commands, and prints notifications as they arrive. Ctrl-C (or SIGTERM) stops every
process group it started and empties the run's token folder.

Generated values (secrets, the project id) reach a command line only as
``--option=value``, so a value starting with "-" is never taken for an option.

Pointing it at a broker: when ``FYERS_API_BASE``, ``FYERS_DATA_BASE`` or
``SYMBOL_MASTER_BASE`` is set, no simulator is started, the unset ones keep their
production defaults, ``FYERS_APP_ID`` and ``FYERS_SECRET_KEY`` come from the
environment, and the login is left to the operator's browser. Other router
settings in the environment (``DRY_RUN``, ``MAX_LOTS_PER_ALERT``...) reach the
functions; those that wire the stack (project, topics, backends, auth URLs) do not.

``--check`` starts everything, sends the example alert, waits for its outcome,
prints it and stops: exit status 0 when the order was PLACED.

Logs, generated masters and stored artifacts stay in ``.local/runs/<project>/``
(the newest few runs are kept).
"""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

from common.errors import ConfigError
from common.records import OrderStatus, today_ist
from common.settings import Settings, load_settings
from deploy.local import emulators as emu
from deploy.local.cloud_run import WORKER, Shape
from deploy.local.mastergen import write_masters
from deploy.local.pubsub_push import WORKER_TRIGGER, PushDelivery

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / ".local" / "runs"
KEEP_RUNS = 5
HOST = "127.0.0.1"

# name -> signature type, in start order (stopped in reverse).
FUNCTIONS = {"webhook": "http", "order_worker": "cloudevent", "auth": "http", "scheduler": "http"}
PORT_NAMES = ("firestore", "pubsub", "simulator", "masters", *FUNCTIONS)
BROKER_SETTINGS = ("FYERS_API_BASE", "FYERS_DATA_BASE", "SYMBOL_MASTER_BASE")
# Settings that wire the stack together: the caller's environment never overrides them.
WIRING = ("GOOGLE_CLOUD_PROJECT", "ORDERS_TOPIC", "NOTIFICATIONS_TOPIC", "SECRET_BACKEND", "SECRET_OVERLAY_DIR",
          "ARTIFACT_BACKEND", "ARTIFACT_DIR", "AUTH_REDIRECT_URL", "AUTH_PUBLIC_URL")
# Never inherited: they would point a local run at real cloud resources.
DROPPED = ("SECRET_PROJECT", "ARTIFACT_BUCKET", "STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS")

ORDERS_TOPIC, NOTIFICATIONS_TOPIC, DLQ_TOPIC = "orders", "notifications", "orders-dlq"
WORKER_SUBSCRIPTION = "order-worker-push"
SIM_APP_ID = "LOCALSTACK-100"

START_TIMEOUT = 90.0
JOB_TIMEOUT = 150.0
HTTP_TIMEOUT = 15.0
OUTCOME_TIMEOUT = 45.0
STOP_GRACE = 8.0


class StackError(Exception):
    """The stack could not start or check; the message says what and where to look."""


@dataclass(frozen=True)
class Options:
    port_base: int | None = None
    check: bool = False
    ignore_market_hours: bool = False


@dataclass
class Child:
    """A process the stack started, leader of its own process group."""

    name: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pgid(self) -> int:
        return self.process.pid  # start_new_session: the leader's pid is the group id


def allocate_ports(base: int | None) -> dict[str, int]:
    """One port per piece: ``base``, ``base+1``... (each must be free), or any free ports."""
    if base is None:
        return {name: emu.free_port() for name in PORT_NAMES}
    ports = {name: base + offset for offset, name in enumerate(PORT_NAMES)}
    for name, port in ports.items():
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                raise StackError(f"port {port} (for {name}) is in use: choose another --port-base") from None
    return ports


def prune_runs(runs: Path, keep: int) -> None:
    """Delete the oldest run directories beyond ``keep``, and the tokens kept by any other run
    (a runner killed before its cleanup leaves them), sparing the runs of live runners."""
    if not runs.is_dir():
        return
    dirs = sorted((d for d in runs.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime, reverse=True)
    for age, old in enumerate(dirs):
        if not _runner_alive(old):
            shutil.rmtree(old if age >= keep else old / "secrets", ignore_errors=True)


def _runner_alive(run_dir: Path) -> bool:
    try:
        os.kill(int((run_dir / "runner.pid").read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, indented for the console."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {line}" for line in text)


def simulator_args(python: str, host: str, port: int, app_id: str, app_secret: str,
                   masters: list[Path]) -> list[str]:
    """The Fyers simulator's command line; free-text values are attached with "=", so that
    a generated secret starting with "-" stays a value."""
    return [python, "-m", "deploy.local.fyers_simulator", f"--host={host}", f"--port={port}",
            f"--app-id={app_id}", f"--app-secret={app_secret}", "--auto-approve",
            *(f"--master={path}" for path in masters)]


def function_args(framework: str, name: str, source: Path, host: str, port: int) -> list[str]:
    """One function's ``functions-framework`` command line (values attached with "=")."""
    return [framework, f"--target={name}", f"--source={source}", f"--signature-type={FUNCTIONS[name]}",
            f"--host={host}", f"--port={port}"]


def worker_args(python: str, source: Path, host: str, port: int, shape: Shape) -> list[str]:
    """The order worker's command line: served as Cloud Run serves it, with ``shape``'s limits."""
    return [python, "-m", "deploy.local.cloud_run", "--target=order_worker", f"--source={source}",
            f"--signature-type={FUNCTIONS['order_worker']}", f"--host={host}", f"--port={port}",
            f"--concurrency={shape.concurrency}", f"--max-instances={shape.max_instances}"]


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # the console is for the operator
        pass


class Stack:
    """Starts, watches and stops the local router; see the module docstring."""

    def __init__(self, options: Options, environ: Mapping[str, str], out: TextIO) -> None:
        self.options = options
        self.environ = dict(environ)
        self.out = out
        self.project = f"local-{uuid.uuid4().hex[:8]}"
        self.run_dir = RUNS / self.project
        self.secrets_dir = self.run_dir / "secrets"  # this run's token store: runs never share a session
        self.external = any(self.environ.get(name) for name in BROKER_SETTINGS)
        self.ports = allocate_ports(options.port_base)
        self.webhook_secret = self.environ.get("WEBHOOK_SECRET") or secrets.token_urlsafe(24)
        self.operator_key = self.environ.get("OPERATOR_KEY") or secrets.token_urlsafe(18)
        if self.external:
            if options.check:
                raise StackError("--check places an order: it runs against the simulator only "
                                 "(unset FYERS_API_BASE, FYERS_DATA_BASE and SYMBOL_MASTER_BASE).")
            self.app_id = self.environ.get("FYERS_APP_ID", "")
            self.app_secret = self.environ.get("FYERS_SECRET_KEY", "")
            if not (self.app_id and self.app_secret):
                raise StackError("With a real broker (FYERS_API_BASE/FYERS_DATA_BASE/SYMBOL_MASTER_BASE set), "
                                 "export FYERS_APP_ID and FYERS_SECRET_KEY too.")
        else:
            self.app_id, self.app_secret = SIM_APP_ID, secrets.token_urlsafe(18)
        self.env = self._function_env()
        try:
            self.settings: Settings = load_settings(self.env)
        except ConfigError as exc:
            raise StackError(exc.message) from None
        self.children: list[Child] = []
        self._children_lock = threading.Lock()
        self._say_lock = threading.Lock()
        self._masters_server: ThreadingHTTPServer | None = None
        self._listeners: list[Any] = []
        self._subscriber: Any = None
        self._delivery: PushDelivery | None = None
        self._stopped = False

    # --- addresses and configuration ------------------------------------------------

    def url(self, name: str) -> str:
        return f"http://{HOST}:{self.ports[name]}"

    def _broker_urls(self) -> dict[str, str]:
        if self.external:
            return {}  # the caller's, or the production defaults
        sim = self.url("simulator")
        return {"FYERS_API_BASE": f"{sim}/api/v3", "FYERS_DATA_BASE": f"{sim}/data",
                "SYMBOL_MASTER_BASE": f"{self.url('masters')}/sym_details"}

    def _function_env(self) -> dict[str, str]:
        """The environment of every function: the caller's, plus the deployment's wiring."""
        env = {k: v for k, v in self.environ.items() if k not in WIRING and k not in DROPPED}
        enforce = "false" if self.options.ignore_market_hours else self.environ.get("ENFORCE_MARKET_HOURS", "true")
        auth = self.url("auth")
        env.update({
            "GOOGLE_CLOUD_PROJECT": self.project,
            "FIRESTORE_EMULATOR_HOST": f"{HOST}:{self.ports['firestore']}",
            "PUBSUB_EMULATOR_HOST": f"{HOST}:{self.ports['pubsub']}",
            "ORDERS_TOPIC": ORDERS_TOPIC, "NOTIFICATIONS_TOPIC": NOTIFICATIONS_TOPIC,
            "SECRET_BACKEND": "env", "SECRET_OVERLAY_DIR": str(self.secrets_dir), "ARTIFACT_BACKEND": "local", "ARTIFACT_DIR": str(self.run_dir / "artifacts"),
            "WEBHOOK_SECRET": self.webhook_secret, "OPERATOR_KEY": self.operator_key,
            "FYERS_APP_ID": self.app_id, "FYERS_SECRET_KEY": self.app_secret,
            "AUTH_REDIRECT_URL": f"{auth}/callback", "AUTH_PUBLIC_URL": auth,
            "ENFORCE_MARKET_HOURS": enforce, "PYTHONUNBUFFERED": "1",
            **self._broker_urls(),
        })
        return env

    # --- console --------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        with self._say_lock:
            print(text, file=self.out, flush=True)

    def _done(self, what: str, started: float) -> None:
        self.say(f"✓ {what} ({time.monotonic() - started:.1f} s)")

    # --- start ----------------------------------------------------------------------

    def start(self) -> None:
        """Start everything, or raise :class:`StackError` (what was started is stopped by :meth:`stop`)."""
        self.run_dir.mkdir(parents=True)
        (self.run_dir / "runner.pid").write_text(str(os.getpid()))
        prune_runs(RUNS, KEEP_RUNS)
        self.say(f"Local stack {self.project}: logs in {self._shown(self.run_dir / 'logs')}")
        try:
            emu.ensure_tools()
        except (RuntimeError, subprocess.CalledProcessError) as exc:
            raise StackError(f"the emulator tools could not be installed: {exc}") from None
        masters = None if self.external else write_masters(self.run_dir / "masters" / "sym_details",
                                                           today_ist(datetime.now(timezone.utc)))
        # This process's own clients (topics, notifications, --check) talk to the emulators too.
        os.environ.update({name: self.env[name] for name in ("FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST")})
        # Every port is known in advance, so everything boots at once (the topics as soon as
        # Pub/Sub answers); each `with` waits for all its tasks, even after a failure or
        # Ctrl-C, so that stop() knows every process.
        with ThreadPoolExecutor(max_workers=8) as pool:
            waits = [pool.submit(self._start_firestore), pool.submit(self._start_messaging)]
            if masters is not None:
                waits.append(pool.submit(self._start_simulator, list(masters.values())))
                self._serve_masters(self.run_dir / "masters")
            waits += [pool.submit(self._start_function, name) for name in FUNCTIONS]
            for wait in waits:
                wait.result()
        # One after the other: run beside the symbols job, the login's first calls to a freshly
        # started Firestore emulator took over 1 s, the auth function's timeout, in 2 starts of 3.
        self._load_symbol_master()
        if not self.external:
            self._login()

    def _shown(self, path: Path) -> str:
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    def _adopt(self, child: Child) -> Child:
        with self._children_lock:
            self.children.append(child)
            # For a runner killed without its cleanup: `kill -- -PGID` for each line.
            with open(self.run_dir / "pgids", "a") as pgids:
                pgids.write(f"{child.pgid} {child.name}\n")
        return child

    def _start_firestore(self) -> None:
        started = time.monotonic()
        try:
            e = emu.start_firestore(self.run_dir / "logs", port=self.ports["firestore"], timeout=START_TIMEOUT)
        except RuntimeError as exc:  # it did not come up, and was killed
            raise StackError(str(exc)) from None
        self._adopt(Child("firestore", e.process, e.log_path))
        self._done(f"Firestore emulator on {e.host}", started)

    def _start_messaging(self) -> None:
        """The Pub/Sub emulator, then the topics and the console's subscriptions."""
        self._start_pubsub()
        self._create_topics()
        self._print_notifications()

    def _start_pubsub(self) -> None:
        started = time.monotonic()
        try:
            e = emu.start_pubsub(self.run_dir / "logs", self.project, port=self.ports["pubsub"],
                                 timeout=START_TIMEOUT)
        except RuntimeError as exc:  # it did not come up, and was killed
            raise StackError(str(exc)) from None
        self._adopt(Child("pubsub", e.process, e.log_path))
        self._done(f"Pub/Sub emulator on {e.host}", started)

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> Child:
        log_path = self.run_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(args, cwd=ROOT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        return self._adopt(Child(name, process, log_path))

    def _wait_listening(self, child: Child, port: int) -> None:
        """Until ``port`` accepts connections; raise if the child dies or takes too long."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise StackError(f"{child.name} exited with status {child.process.returncode}; "
                                 f"the end of {self._shown(child.log_path)}:\n{tail(child.log_path)}")
            try:
                with socket.create_connection((HOST, port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise StackError(f"{child.name} did not listen on {port} within {START_TIMEOUT:.0f} s; "
                         f"see {self._shown(child.log_path)}")

    def _start_simulator(self, master_paths: list[Path]) -> None:
        started = time.monotonic()
        child = self._spawn("fyers-simulator", simulator_args(sys.executable, HOST, self.ports["simulator"],
                                                              self.app_id, self.app_secret, master_paths))
        self._wait_listening(child, self.ports["simulator"])
        self._done(f"Fyers simulator on {self.url('simulator')} (app {self.app_id}, auto-approve)", started)

    def _serve_masters(self, directory: Path) -> None:
        try:
            server = ThreadingHTTPServer((HOST, self.ports["masters"]),
                                         functools.partial(_QuietFiles, directory=str(directory)))
        except OSError as exc:
            raise StackError(f"the symbol master file server could not listen on {self.ports['masters']}: "
                             f"{exc.strerror}") from None
        threading.Thread(target=server.serve_forever, name="masters", daemon=True).start()
        self._masters_server = server
        self.say(f"✓ Symbol masters for today served on {self.url('masters')}/sym_details/")

    def _start_function(self, name: str) -> None:
        started = time.monotonic()
        if name == "order_worker":
            # THREADS as deploy.sh sets it, for code that sizes itself by the instance's concurrency.
            child = self._spawn(name, worker_args(sys.executable, ROOT / "main.py", HOST, self.ports[name], WORKER),
                                {**self.env, "THREADS": str(WORKER.concurrency)})
            shape = f" ({WORKER.concurrency} requests at a time, {WORKER.max_instances} instance, 429 beyond)"
        else:
            child = self._spawn(name, function_args(_functions_framework(), name, ROOT / "main.py", HOST,
                                                    self.ports[name]))
            shape = ""
        self._wait_listening(child, self.ports[name])
        self._done(f"function {name} on {self.url(name)}{shape}", started)

    def _create_topics(self) -> None:
        from google.cloud import pubsub_v1

        started = time.monotonic()
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        self._subscriber = subscriber
        topic = functools.partial(publisher.topic_path, self.project)
        sub = functools.partial(subscriber.subscription_path, self.project)
        for name in (ORDERS_TOPIC, NOTIFICATIONS_TOPIC, DLQ_TOPIC):
            publisher.create_topic(name=topic(name), timeout=30)
        # Pulled here and pushed by PushDelivery, which keeps the retry and dead-letter policy.
        for name, source in ((WORKER_SUBSCRIPTION, ORDERS_TOPIC), ("notifications-log", NOTIFICATIONS_TOPIC),
                             ("orders-dlq-hold", DLQ_TOPIC)):
            subscriber.create_subscription(request={"name": sub(name), "topic": topic(source)}, timeout=30)
        publisher.transport.close()
        # The push URL names the topic, so functions-framework fills the CloudEvent's source.
        self._delivery = PushDelivery(project=self.project, subscription=WORKER_SUBSCRIPTION,
                                      endpoint=f"{self.url('order_worker')}/{topic(ORDERS_TOPIC)}",
                                      policy=WORKER_TRIGGER, dead_letter_topic=DLQ_TOPIC).start()
        self._done(f"topics {ORDERS_TOPIC} (pushed to order_worker: {WORKER_TRIGGER.max_delivery_attempts} "
                   f"attempts, backoff {WORKER_TRIGGER.min_backoff:g}-{WORKER_TRIGGER.max_backoff:g} s, then "
                   f"{DLQ_TOPIC}), {NOTIFICATIONS_TOPIC}", started)

    def _print_notifications(self) -> None:
        """Show each notification and dead letter on the console as it arrives."""
        from common.notify import Notification, format_message

        def notification(message: Any) -> None:
            try:
                text = format_message(Notification.model_validate_json(message.data))
            except ValueError:
                text = message.data.decode("utf-8", "replace")[:300]
            self.say("🔔 " + text.replace("\n", "\n   "))
            message.ack()

        def dead_letter(message: Any) -> None:
            order_id = message.attributes.get("order_id", "?")
            self.say(f"☠  order command for {order_id} dead-lettered after {WORKER_TRIGGER.max_delivery_attempts} failed "
                     f"deliveries: python -m ops show {order_id}")
            message.ack()

        for name, callback in (("notifications-log", notification), ("orders-dlq-hold", dead_letter)):
            path = self._subscriber.subscription_path(self.project, name)
            self._listeners.append(self._subscriber.subscribe(path, callback=callback))

    def _load_symbol_master(self) -> None:
        from ops.cli import CliError, post_json

        started = time.monotonic()
        try:
            status, answer = post_json(f"{self.url('scheduler')}/?job=symbols", None, timeout=JOB_TIMEOUT)
        except CliError as exc:
            raise StackError(f"the symbols job failed: {exc}") from None
        report = answer.get("report", {}) if isinstance(answer, dict) else {}
        if status != 200 or not report.get("ok"):
            raise StackError(f"the symbols job failed (HTTP {status}): {answer}; "
                             f"see {self._shown(self.run_dir / 'logs' / 'scheduler.log')}")
        self._done(f"symbol master {report.get('version')} loaded from {self.settings.symbol_master_base} "
                   f"by the scheduler's symbols job", started)

    def _login(self) -> None:
        """The daily login, through the real auth function: the operator key form, the
        simulator's (auto-approved) login page, the callback that stores the token."""
        import requests

        started = time.monotonic()
        try:
            with requests.Session() as http:
                answer = http.post(f"{self.url('auth')}/login", data={"key": self.operator_key},
                                   timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            raise StackError(f"the login through the auth function failed: {type(exc).__name__}") from None
        if answer.status_code != 200 or "<title>Logged in</title>" not in answer.text:
            title = answer.text.partition("<title>")[2].partition("</title>")[0] or answer.text[:200]
            raise StackError(f"the login through the auth function failed: HTTP {answer.status_code} {title!r}; "
                             f"see {self._shown(self.run_dir / 'logs' / 'auth.log')}")
        self._done("logged in to the simulator through the auth function (/login → Fyers → /callback)", started)

    # --- after start ----------------------------------------------------------------

    def banner(self) -> str:
        """What the operator needs: URLs, the secret (shown once), a curl, the CLI commands."""
        webhook, auth, scheduler = self.url("webhook"), self.url("auth"), self.url("scheduler")
        hours = ("IGNORED (--ignore-market-hours): orders are placed at any hour"
                 if not self.settings.enforce_market_hours else
                 f"enforced: orders only {self.settings.market_open:%H:%M}-{self.settings.market_close:%H:%M} IST "
                 "on weekdays (use --ignore-market-hours for an evening demo)")
        broker = (f"REAL broker at {self.settings.fyers_api_base} (app {self.app_id})" if self.external else
                  f"Fyers simulator at {self.url('simulator')}")
        body = ('{"secret":"\'"$WEBHOOK_SECRET"\'","action":"BUY","symbol":"NIFTY","expiry":"WEEKLY",'
                '"strike":"ATM","optionType":"CE","lots":1,"strategy":"local",'
                '"time":"\'"$(date -u +%Y-%m-%dT%H:%M:%SZ)"\'"}')
        lines = [
            "",
            f"Router running locally (project {self.project})",
            f"  broker        {broker}",
            f"  market hours  {hours}",
            f"  dry run       {'ON: nothing reaches the broker' if self.settings.dry_run else 'off'}",
            f"  webhook       {webhook}/",
            f"  auth          {auth}/  (login: {auth}/login)",
            f"  scheduler     {scheduler}/?job=session|symbols|reconcile|health",
            "",
            "In another terminal (the secrets are shown only here):",
            f"  export FIRESTORE_EMULATOR_HOST={self.env['FIRESTORE_EMULATOR_HOST']} "
            f"GOOGLE_CLOUD_PROJECT={self.project}",
            f"  export WEBHOOK_SECRET={shlex.quote(self.webhook_secret)}   # operator key: {self.operator_key}",
            "",
            "Send a TradingView-style alert (NIFTY weekly ATM CE, 1 lot):",
            f"  curl -sS -X POST {webhook}/ -H 'Content-Type: text/plain' \\",
            f"    -d '{body}'",
            f"  # or: .venv/bin/python -m ops alert --url {webhook}/",
            "",
            "Watch and steer:",
            "  .venv/bin/python -m ops orders              # today's orders",
            "  .venv/bin/python -m ops show ORDER_ID       # one order and its events",
            "  .venv/bin/python -m ops kill on|off         # on = trading disabled",
            "  .venv/bin/python -m ops dry-run on|off",
            f"  .venv/bin/python -m ops job health --url {scheduler}/",
        ]
        if self.external:
            lines += ["", f"Log in to Fyers: open {auth}/login and enter the operator key. The Fyers app's "
                          f"redirect URL must be exactly {self.settings.auth_redirect_url} "
                          "(use --port-base for a stable port)."]
        lines += ["", "Ctrl-C stops everything."]
        return "\n".join(lines)

    def wait(self) -> int:
        """Until Ctrl-C (KeyboardInterrupt) or a process dies (returns 1)."""
        while True:
            for child in list(self.children):
                if child.process.poll() is not None:
                    self.say(f"✗ {child.name} exited with status {child.process.returncode}; the end of "
                             f"{self._shown(child.log_path)}:\n{tail(child.log_path)}")
                    return 1
            time.sleep(0.5)

    def check(self) -> int:
        """Send the example alert and wait for its outcome: 0 if PLACED."""
        from google.cloud import firestore

        from common.orders import OrderStore
        from ops.cli import CliError, example_alert, order_report, orders_table, post_json

        started = time.monotonic()
        try:
            status, answer = post_json(f"{self.url('webhook')}/", example_alert(self.webhook_secret,
                                                                                strategy="local-check"))
        except CliError as exc:
            raise StackError(str(exc)) from None
        if status != 200 or not isinstance(answer, dict) or "order_id" not in answer:
            self.say(f"✗ the webhook answered HTTP {status}: {answer}")
            return 1
        order_id = answer["order_id"]
        self.say(f"✓ example alert accepted: order {order_id}")
        store = OrderStore(firestore.Client(project=self.project), timeout=10)
        record = _wait_for(lambda: store.get(order_id), lambda r: r is not None and OrderStatus(r.status).terminal,
                           OUTCOME_TIMEOUT)
        if record is None:
            self.say(f"✗ order {order_id} was not recorded within {OUTCOME_TIMEOUT:.0f} s")
            return 1
        self.say(orders_table([record]))
        if record.status == OrderStatus.PLACED:
            self._done(f"order {order_id} PLACED with the broker as {record.broker_order_id}", started)
            return 0
        self.say(order_report(record, store.events(order_id)))
        self.say(f"✗ order {order_id} ended {record.status}, not PLACED; see "
                 f"{self._shown(self.run_dir / 'logs' / 'order_worker.log')}")
        return 1

    # --- stop -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process group started, in reverse order; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if self._delivery is not None:
            self._delivery.stop()
        for listener in self._listeners:
            listener.cancel()
        for listener in self._listeners:
            try:
                listener.result(timeout=5)
            except Exception:  # noqa: BLE001 - a cancelled pull ends with an exception by design
                pass
        if self._subscriber is not None:
            self._subscriber.close()
        if self._masters_server is not None:
            self._masters_server.shutdown()
            self._masters_server.server_close()
        children = list(reversed(self.children))
        for child in children:
            _signal_group(child.pgid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in children:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for child in children:
            # Also reaches children left behind by a leader that exited (an emulator's Java).
            _signal_group(child.pgid, signal.SIGKILL)
            child.process.wait()
        self._forget_tokens()
        self.say(f"✓ stopped {len(children)} process groups; logs kept in {self._shown(self.run_dir / 'logs')}")

    def _forget_tokens(self) -> None:
        """Delete the run's secret overlay, so every token stored during the run goes, whichever
        login stored it: a simulator token is useless once the simulator is gone, and a real
        one should not linger on disk. Runs only once every process has stopped writing."""
        try:
            shutil.rmtree(self.secrets_dir)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.say(f"✗ the tokens in {self._shown(self.secrets_dir)} could not be removed ({exc}): delete them")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_for(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float) -> Any:
    """Poll ``read`` until ``done`` says so or ``timeout`` passes; returns the last reading."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
    return value


def _functions_framework() -> str:
    beside = Path(sys.executable).parent / "functions-framework"
    found = str(beside) if beside.exists() else shutil.which("functions-framework")
    if not found:
        raise StackError("functions-framework is not installed: run ./deploy/local/run.sh (it sets up .venv)")
    return found


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _ignore(signum: int, frame: Any) -> None:
    print("(stopping…)", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="deploy/local/run.sh",
                                     description="Run the whole router locally (emulators, simulator, functions).")
    parser.add_argument("--port-base", type=int, help="use ports BASE..BASE+7 (default: any free ports)")
    parser.add_argument("--ignore-market-hours", action="store_true",
                        help="place orders at any hour (default: market hours are enforced)")
    parser.add_argument("--check", action="store_true",
                        help="start, send the example alert, wait for PLACED, print it, stop (exit 0/1)")
    args = parser.parse_args(argv)
    return Options(port_base=args.port_base, check=args.check, ignore_market_hours=args.ignore_market_hours)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    # google-api-core's notice about Python 3.11's end of life is noise on the console.
    warnings.filterwarnings("ignore", message="You are using a Python version", category=FutureWarning)
    out = sys.stdout
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack = Stack(options, os.environ, out)
    except StackError as exc:
        print(f"✗ {exc}", file=out, flush=True)
        return 1
    status = 1
    try:
        stack.start()
        stack.say(stack.banner())
        status = stack.check() if options.check else stack.wait()
    except KeyboardInterrupt:
        stack.say("\nStopping…")
        status = 1 if options.check else 0
    except StackError as exc:
        stack.say(f"✗ {exc}")
    finally:
        signal.signal(signal.SIGINT, _ignore)
        signal.signal(signal.SIGTERM, _ignore)
        stack.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
