"""deploy/deploy.sh against a fake `gcloud`: what it creates, that re-running creates
nothing, and what it tells the trader (without ever showing a secret).

The fake cloud (tests/deploy/fake_gcloud) keeps a small model of the project: describes
answer from it, creates add to it, and a create that refers to something missing fails,
so a real (non-dry) run against it also checks the script's ordering. It is served from
this process on a local socket, behind an 8-line bash `gcloud` put first on PATH: a
Python `gcloud` would pay the interpreter's start-up on each of the ~150 calls of a run.
No test touches a real cloud.

The secrets, their grants and mounts come from common/secret_table.py, as in deploy.sh.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import re
import shlex
import shutil
import socketserver
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from common import secret_table
from deploy.local.cloud_run import WEBHOOK, WORKER
from deploy.local.pubsub_push import WORKER_TRIGGER

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "deploy.sh"
FAKE = Path(__file__).with_name("fake_gcloud")


def _load_fake():
    loader = importlib.machinery.SourceFileLoader("fake_gcloud", str(FAKE))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("fake_gcloud", loader))
    loader.exec_module(module)
    return module


fake_gcloud = _load_fake()

# The `gcloud` on PATH: sends "argc\0argv...\0stdin\0" (stdin only for --data-file=-),
# reads back "code\0stdout\0stderr\0".
CLIENT = r"""#!/bin/bash
exec 3<>"/dev/tcp/127.0.0.1/$FAKE_GCLOUD_PORT"
stdin=""
for arg in "$@"; do
  if [[ $arg == --data-file=- ]]; then stdin=$(cat; printf x); stdin=${stdin%x}; fi
done
printf '%s\0' "$#" "$@" "$stdin" >&3
IFS= read -r -d '' code <&3
IFS= read -r -d '' out <&3
IFS= read -r -d '' err <&3
printf '%s' "$out"
printf '%s' "$err" >&2
exit "$code"
"""

PROJECT = "tvf-test-project"
PROJECT_NUMBER = "987654321098"
STATIC_IP = "34.93.200.11"
REGION = "asia-south1"
BUCKET = f"{PROJECT}-tv-fyers-artifacts"
PUBSUB_AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
SECRET_VALUES = {
    "WEBHOOK_SECRET": "tv-hook-5f8a1c9e-DO-NOT-PRINT",
    "FYERS_APP_ID": "XB12345-200",
    "FYERS_SECRET_KEY": "fy-secret-77c1b2-DO-NOT-PRINT",
    "OPERATOR_KEY": "op-key-31d0aa-DO-NOT-PRINT",
}
NOTIFY_URL = "https://discord.com/api/webhooks/1234/tok-9c2f-DO-NOT-PRINT"
FYERS_CALLERS = ("order-worker", "scheduler", "auth")
ACCOUNT = {"webhook": "tvf-webhook", "order-worker": "tvf-worker", "scheduler": "tvf-scheduler", "auth": "tvf-auth"}
BUILD_ROLES = ("roles/logging.logWriter", "roles/artifactregistry.writer", "roles/storage.objectViewer")


def sa(name: str) -> str:
    return f"{name}@{PROJECT}.iam.gserviceaccount.com"


def member(name: str) -> str:
    return f"serviceAccount:{sa(name)}"


CONFIG = f"""\
# fixture config
PROJECT={PROJECT}
REGION={REGION}
MAX_DELIVERY_ATTEMPTS=7   # inline comments are allowed
MIN_RETRY_DELAY_SECONDS=15
MAX_RETRY_DELAY_SECONDS=90
SCHEDULE_SYMBOLS="20 8 * * *"
WORKER_TIMEOUT=90
ALLOWED_SYMBOLS=NIFTY,BANKNIFTY
MAX_LOTS_PER_ALERT=2
MAX_ORDERS_PER_DAY=20
"""


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def commands(self, prefix: str) -> list[list[str]]:
        """The echoed gcloud commands (argv after 'gcloud') of lines starting with ``prefix``."""
        return [shlex.split(line[len(prefix):])[1:] for line in self.stdout.splitlines() if line.startswith(prefix)]


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        argv = [self._token() for _ in range(int(self._token()))]
        code, out, err = self.server.fake.call(argv, self._token())
        self.wfile.write(f"{code}\0{out}\0{err}\0".encode())

    def _token(self) -> str:
        data = bytearray()
        while (byte := self.rfile.read(1)) not in (b"\0", b""):
            data += byte
        return data.decode()


class FakeCloud:
    """A fake project served to deploy.sh, with a source tree and a config file to deploy."""

    def __init__(self, root: Path, state: dict | None = None, config: str = CONFIG,
                 project: str = PROJECT) -> None:
        self.root = root
        self.fake = fake_gcloud.FakeGcloud(
            {"project": project, "project_number": PROJECT_NUMBER, "static_ip": STATIC_IP, **(state or {})})
        self.server = socketserver.TCPServer(("127.0.0.1", 0), _Handler)
        self.server.fake = self.fake
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        bin_dir = root / "bin"
        bin_dir.mkdir()
        (bin_dir / "gcloud").write_text(CLIENT)
        (bin_dir / "gcloud").chmod(0o755)
        # deploy.sh's retries wait 10 s: here they do not wait, and are counted.
        self.sleeps = root / "sleeps"
        (bin_dir / "sleep").write_text(f'#!/bin/sh\necho "$*" >> "{self.sleeps}"\n')
        (bin_dir / "sleep").chmod(0o755)
        self.source = root / "src"
        (self.source / "common").mkdir(parents=True)
        for name in ("__init__.py", "settings.py", "secret_table.py"):
            shutil.copy(REPO / "common" / name, self.source / "common" / name)
        (self.source / "main.py").write_text("")
        (self.source / "requirements.txt").write_text("")
        (self.source / ".gcloudignore").write_text(".venv/\ntests/\n")
        self.config = root / "deploy.env"
        self.config.write_text(config + f"SOURCE_DIR={self.source}\n")
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                    "FAKE_GCLOUD_PORT": str(self.server.server_address[1])}

    @property
    def state(self) -> dict:
        return self.fake.state

    def deploy(self, *args: str, config: Path | None = None, stdin: str = "") -> Result:
        """Runs deploy.sh (standard input: ``stdin``, not a terminal); ``self.fake.calls``
        then holds this run's gcloud calls."""
        self.fake.calls.clear()
        done = subprocess.run(["bash", str(DEPLOY), "--config", str(config or self.config), *args],
                              env=self.env, input=stdin, capture_output=True, text=True, timeout=60)
        return Result(done.returncode, done.stdout, done.stderr)

    def secrets_file(self, values: dict[str, str]) -> Path:
        path = self.root / "secrets.env"
        path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
        return path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def make_cloud(tmp_path_factory):
    clouds = []

    def make(**kwargs) -> FakeCloud:
        clouds.append(FakeCloud(tmp_path_factory.mktemp("cloud"), **kwargs))
        return clouds[-1]

    yield make
    for cloud in clouds:
        cloud.close()


def starting(commands: list[list[str]], *words: str) -> list[list[str]]:
    return [c for c in commands if c[: len(words)] == list(words)]


def only(commands: list[list[str]], *words: str) -> list[str]:
    found = starting(commands, *words)
    assert len(found) == 1, f"expected one `gcloud {' '.join(words)}`, got {found}"
    return found[0]


def flag(command: list[str], name: str) -> str | None:
    values = [a.split("=", 1)[1] for a in command if a.startswith(f"--{name}=")]
    return values[-1] if values else None


def env_vars(command: list[str]) -> dict[str, str]:
    raw = flag(command, "set-env-vars")
    assert raw and raw.startswith("^|^"), raw
    return dict(item.split("=", 1) for item in raw[3:].split("|"))


def bindings(commands: list[list[str]]) -> set[tuple[str, str, str, str]]:
    """(resource kind, resource, role, member) of every IAM grant."""
    found = set()
    for c in commands:
        if "add-iam-policy-binding" in c:
            kind = " ".join(c[: c.index("add-iam-policy-binding")])
            found.add((kind, c[c.index("add-iam-policy-binding") + 1], flag(c, "role"), flag(c, "member")))
        elif c[:2] == ["functions", "add-invoker-policy-binding"]:
            found.add(("function", c[2], "roles/run.invoker", flag(c, "member")))
    return found


def expected_bindings(worker_subscription: str) -> set[tuple[str, str, str, str]]:
    """Every grant: the secrets' from common/secret_table.py, the others spelled out here."""
    grants = {("projects", PROJECT, "roles/datastore.user", member(n))
              for n in ("tvf-webhook", "tvf-worker", "tvf-scheduler", "tvf-auth")}
    grants |= {("projects", PROJECT, role, member("tvf-build")) for role in BUILD_ROLES}
    grants.add(("pubsub topics", "orders", "roles/pubsub.publisher", member("tvf-webhook")))
    grants |= {("pubsub topics", "notifications", "roles/pubsub.publisher", member(n))
               for n in ("tvf-worker", "tvf-scheduler", "tvf-auth")}
    for function, access in secret_table.ACCESS.items():
        grants |= {("secrets", s, "roles/secretmanager.secretAccessor", member(ACCOUNT[function])) for s in access.reads}
        grants |= {("secrets", s, "roles/secretmanager.secretVersionManager", member(ACCOUNT[function]))
                   for s in access.writes}
    grants.add(("storage buckets", f"gs://{BUCKET}", "roles/storage.objectViewer", member("tvf-worker")))
    grants.add(("storage buckets", f"gs://{BUCKET}", "roles/storage.objectAdmin", member("tvf-scheduler")))
    grants.add(("function", "scheduler", "roles/run.invoker", member("tvf-invoker")))
    grants.add(("function", "order-worker", "roles/run.invoker", member("tvf-worker")))
    grants.add(("pubsub topics", "orders-dlq", "roles/pubsub.publisher", PUBSUB_AGENT))
    grants.add(("pubsub subscriptions", worker_subscription, "roles/pubsub.subscriber", PUBSUB_AGENT))
    return grants


@pytest.fixture(scope="module")
def empty_project_dry_run(tmp_path_factory):
    cloud = FakeCloud(tmp_path_factory.mktemp("dry"))
    yield cloud, cloud.deploy("--dry-run")
    cloud.close()


@pytest.fixture(scope="module")
def deployed_twice(tmp_path_factory):
    """A real run on an empty project given only the webhook's secret, the operator adds
    the other values, a second run.

    Yields (cloud, first result, second result); ``cloud.fake.calls`` holds the second run's calls.
    """
    cloud = FakeCloud(tmp_path_factory.mktemp("real"))
    first = cloud.deploy("--secrets-file", str(cloud.secrets_file({"WEBHOOK_SECRET": SECRET_VALUES["WEBHOOK_SECRET"]})))
    assert first.returncode == 0, first.stderr
    cloud.state["secret_values"].update(SECRET_VALUES)
    second = cloud.deploy()
    yield cloud, first, second
    cloud.close()


# --- 1. the plan for an empty project covers every resource --------------------------------

def test_dry_run_on_an_empty_project_changes_nothing_and_warns_about_nothing(empty_project_dry_run):
    cloud, result = empty_project_dry_run
    assert result.returncode == 0, result.stderr
    assert cloud.fake.changes() == []
    assert "warning" not in result.stderr
    assert result.commands("RUN: ") == []
    assert all(c[-1] == f"--project={PROJECT}" for c in result.commands("DRY-RUN: "))


def test_dry_run_enables_every_needed_api(empty_project_dry_run):
    plan = empty_project_dry_run[1].commands("DRY-RUN: ")
    enabled = set(only(plan, "services", "enable")[2:-1])
    for api in ("cloudfunctions", "run", "cloudbuild", "artifactregistry", "eventarc", "pubsub", "firestore",
                "secretmanager", "cloudscheduler", "compute", "vpcaccess", "storage", "logging"):
        assert f"{api}.googleapis.com" in enabled


def test_dry_run_creates_the_firestore_database_ttls_and_indexes(empty_project_dry_run):
    plan = empty_project_dry_run[1].commands("DRY-RUN: ")
    database = only(plan, "firestore", "databases", "create")
    assert flag(database, "location") == REGION and flag(database, "type") == "firestore-native"

    ttls = {(c[4], flag(c, "collection-group")) for c in starting(plan, "firestore", "fields", "ttls", "update")
            if "--enable-ttl" in c}
    assert ttls == {("expire_at", "alerts"), ("expire_at", "auth_states"), ("expire_at", "auth_events"),
                    ("expire_at", "login_links"), ("expire_at", "dedupe_keys")}

    indexes = {(flag(c, "collection-group"), tuple(a for a in c if a.startswith("--field-config=")))
               for c in starting(plan, "firestore", "indexes", "composite", "create")}
    assert indexes == {
        ("orders", ("--field-config=field-path=status,order=ascending", "--field-config=field-path=created_at,order=ascending")),
        ("orders", ("--field-config=field-path=created_day,order=ascending", "--field-config=field-path=status,order=ascending")),
    }


def test_dry_run_creates_the_bucket_topics_and_inspection_subscriptions(empty_project_dry_run):
    plan = empty_project_dry_run[1].commands("DRY-RUN: ")
    bucket = only(plan, "storage", "buckets", "create")
    assert bucket[3] == f"gs://{BUCKET}" and "--uniform-bucket-level-access" in bucket
    assert flag(bucket, "location") == REGION

    assert sorted(c[3] for c in starting(plan, "pubsub", "topics", "create")) == ["notifications", "orders", "orders-dlq"]
    pulls = {c[3]: c for c in starting(plan, "pubsub", "subscriptions", "create")}
    assert flag(pulls["orders-dlq-hold"], "topic") == "orders-dlq"
    assert flag(pulls["notifications-log"], "topic") == "notifications"
    assert all(flag(c, "expiration-period") == "never" for c in pulls.values())


def test_dry_run_puts_a_dead_letter_and_retry_policy_on_the_worker_subscription(empty_project_dry_run):
    plan = empty_project_dry_run[1].commands("DRY-RUN: ")
    update = only(plan, "pubsub", "subscriptions", "update")
    assert flag(update, "dead-letter-topic") == f"projects/{PROJECT}/topics/orders-dlq"
    assert flag(update, "max-delivery-attempts") == "7"
    assert (flag(update, "min-retry-delay"), flag(update, "max-retry-delay")) == ("15s", "90s")
    assert flag(update, "ack-deadline") == "100"  # WORKER_TIMEOUT=90, and 10 s more
    grants = bindings(plan)
    assert ("pubsub topics", "orders-dlq", "roles/pubsub.publisher", PUBSUB_AGENT) in grants
    assert ("pubsub subscriptions", update[3], "roles/pubsub.subscriber", PUBSUB_AGENT) in grants


def test_dry_run_creates_one_service_account_per_function_with_least_privilege(empty_project_dry_run):
    plan = empty_project_dry_run[1].commands("DRY-RUN: ")
    accounts = sorted(c[3] for c in starting(plan, "iam", "service-accounts", "create"))
    assert accounts == ["tvf-auth", "tvf-build", "tvf-invoker", "tvf-scheduler", "tvf-webhook", "tvf-worker"]
    worker_subscription = only(plan, "pubsub", "subscriptions", "update")[3]
    assert bindings(plan) == expected_bindings(worker_subscription)
    assert all(flag(c, "condition") == "None" for c in starting(plan, "projects", "add-iam-policy-binding"))


def test_dry_run_creates_every_secret_of_the_table_and_says_a_real_run_needs_the_webhook_secret(empty_project_dry_run):
    result = empty_project_dry_run[1]
    plan = result.commands("DRY-RUN: ")
    created = starting(plan, "secrets", "create")
    assert sorted(c[2] for c in created) == sorted(secret_table.NAMES)
    assert not any(flag(c, "data-file") for c in created)
    assert starting(plan, "secrets", "versions") == []  # no values given
    assert result.stdout.splitlines()[0] == (
        "# NOTE: a real run first needs a value for WEBHOOK_SECRET: it asks for it in a terminal, "
        "or takes --secrets-file.")


def test_dry_run_builds_the_static_egress_path(empty_project_dry_run):
    plan = empty_project_dry_run[1].commands("DRY-RUN: ")
    assert flag(only(plan, "compute", "networks", "create"), "subnet-mode") == "custom"
    subnet = only(plan, "compute", "networks", "subnets", "create")
    assert (subnet[4], flag(subnet, "network"), flag(subnet, "region")) == ("tvf-egress-subnet", "tvf-vpc", REGION)
    assert flag(subnet, "range").endswith("/28")
    router = only(plan, "compute", "routers", "create")
    assert (router[3], flag(router, "network")) == ("tvf-router", "tvf-vpc")
    address = only(plan, "compute", "addresses", "create")
    assert (address[3], flag(address, "region")) == ("tvf-egress-ip", REGION)
    nat = only(plan, "compute", "routers", "nats", "create")
    assert (flag(nat, "router"), flag(nat, "nat-external-ip-pool")) == ("tvf-router", "tvf-egress-ip")
    assert flag(nat, "nat-custom-subnet-ip-ranges") == "tvf-egress-subnet"
    connector = only(plan, "compute", "networks", "vpc-access", "connectors", "create")
    assert (connector[5], flag(connector, "subnet")) == ("tvf-connector", "tvf-egress-subnet")


def test_dry_run_deploys_the_four_functions_with_their_key_flags(empty_project_dry_run):
    plan = empty_project_dry_run[1].commands("DRY-RUN: ")
    deploys = {c[2]: c for c in starting(plan, "functions", "deploy")}
    assert sorted(deploys) == ["auth", "order-worker", "scheduler", "webhook"]
    entry = {"webhook": "webhook", "order-worker": "order_worker", "scheduler": "scheduler", "auth": "auth"}
    for name, command in deploys.items():
        assert "--gen2" in command and flag(command, "runtime") == "python312"
        assert flag(command, "region") == REGION and flag(command, "entry-point") == entry[name]
        assert flag(command, "service-account") == sa(ACCOUNT[name])
        assert flag(command, "build-service-account") == f"projects/{PROJECT}/serviceAccounts/{sa('tvf-build')}"
        public = name in ("webhook", "auth")
        assert flag(command, "ingress-settings") == ("all" if public else "internal-only"), name
        assert Path(flag(command, "source")) == empty_project_dry_run[0].source
        egress = (flag(command, "vpc-connector"), flag(command, "egress-settings"))
        assert egress == (("tvf-connector", "all") if name in FYERS_CALLERS else (None, None)), name

    webhook, worker, scheduler, auth = (deploys[n] for n in ("webhook", "order-worker", "scheduler", "auth"))
    assert "--trigger-http" in webhook and "--allow-unauthenticated" in webhook
    assert flag(webhook, "min-instances") == "1"
    # The webhook reads its secret from the environment: Secret Manager must mount it there.
    # The optional NOTIFY_WEBHOOK_URL has no value, so nobody mounts it yet.
    assert flag(webhook, "set-secrets") == "WEBHOOK_SECRET=WEBHOOK_SECRET:latest"
    assert all("--clear-secrets" in c for c in (worker, scheduler, auth))
    assert flag(worker, "trigger-topic") == "orders" and "--retry" in worker
    assert flag(worker, "max-instances") == "1" and flag(worker, "timeout") == "90s"
    assert "--trigger-http" in scheduler and "--no-allow-unauthenticated" in scheduler
    assert "--allow-unauthenticated" not in scheduler
    assert "--trigger-http" in auth and "--allow-unauthenticated" in auth


def test_dry_run_gives_every_function_its_settings_and_only_auth_urls_where_needed(empty_project_dry_run):
    plan = empty_project_dry_run[1].commands("DRY-RUN: ")
    auth_url = f"https://{REGION}-{PROJECT}.cloudfunctions.net/auth"
    for command in starting(plan, "functions", "deploy"):
        env = env_vars(command)
        assert env["GOOGLE_CLOUD_PROJECT"] == PROJECT and env["SECRET_BACKEND"] == "secretmanager"
        assert env["ARTIFACT_BACKEND"] == "gcs" and env["ARTIFACT_BUCKET"] == BUCKET
        assert env["ORDERS_TOPIC"] == "orders" and env["NOTIFICATIONS_TOPIC"] == "notifications"
        assert env["ALLOWED_SYMBOLS"] == "NIFTY,BANKNIFTY"  # the comma survives
        assert env["MAX_LOTS_PER_ALERT"] == "2" and env["MAX_ORDERS_PER_DAY"] == "20"
        assert env["THREADS"] == flag(command, "concurrency")
        if command[2] in ("auth", "scheduler"):
            assert env["AUTH_PUBLIC_URL"] == auth_url
            assert env["AUTH_REDIRECT_URL"] == f"{auth_url}/callback"
        else:
            assert "AUTH_REDIRECT_URL" not in env


def test_dry_run_schedules_the_jobs_in_ist_with_oidc(empty_project_dry_run):
    plan = empty_project_dry_run[1].commands("DRY-RUN: ")
    jobs = {c[4]: c for c in starting(plan, "scheduler", "jobs", "create", "http")}
    expected = {
        "tvf-session-open": ("session", "30 8 * * 1-5"),
        "tvf-session-hourly": ("session", "0 9-15 * * 1-5"),
        "tvf-symbols": ("symbols", "20 8 * * *"),
        "tvf-reconcile": ("reconcile", "* 9-15 * * 1-5"),
        "tvf-health": ("health", "*/30 * * * *"),
    }
    assert sorted(jobs) == sorted(expected)
    for name, (job, schedule) in expected.items():
        command = jobs[name]
        assert flag(command, "schedule") == schedule
        assert flag(command, "time-zone") == "Asia/Kolkata"
        assert flag(command, "http-method") == "POST"
        assert flag(command, "uri").endswith(f"?job={job}")
        assert flag(command, "oidc-service-account-email") == sa("tvf-invoker")
        assert flag(command, "oidc-token-audience") == flag(command, "uri").split("?")[0]
        # A cold instance's failure is retried after 30 s, 60 s, 120 s.
        assert (flag(command, "max-retry-attempts"), flag(command, "min-backoff"), flag(command, "max-backoff"),
                flag(command, "max-doublings")) == ("3", "30s", "120s", "2")


# --- 2. idempotency ---------------------------------------------------------------------

def test_a_real_run_on_an_empty_project_creates_everything_in_a_valid_order(deployed_twice):
    cloud, first, _ = deployed_twice
    state = cloud.state["resources"]
    assert sorted(state["functions"]) == ["auth", "order-worker", "scheduler", "webhook"]
    assert len(state["scheduler jobs"]) == 5
    worker_subscription = next(s for s in state["pubsub subscriptions"] if s.startswith("eventarc-"))
    policy = state["pubsub subscriptions"][worker_subscription]
    assert policy["deadLetterPolicy"] == {"deadLetterTopic": f"projects/{PROJECT}/topics/orders-dlq", "maxDeliveryAttempts": 7}
    assert policy["retryPolicy"] == {"minimumBackoff": "15s", "maximumBackoff": "90s"}
    assert policy["ackDeadlineSeconds"] == 100
    assert bindings(first.commands("RUN: ")) == expected_bindings(worker_subscription)


def test_the_worker_is_deployed_by_default_with_the_shape_the_local_stack_runs(make_cloud):
    """deploy/local/cloud_run.py's WORKER (and WEBHOOK) and pubsub_push.py's WORKER_TRIGGER are
    what a config without those keys deploys: local bursts meet the deployed limits."""
    cloud = make_cloud(config=f"PROJECT={PROJECT}\n")
    result = cloud.deploy("--dry-run")
    assert result.returncode == 0, result.stderr
    plan = result.commands("DRY-RUN: ")
    worker = next(c for c in starting(plan, "functions", "deploy") if c[2] == "order-worker")
    assert flag(worker, "concurrency") == env_vars(worker)["THREADS"] == str(WORKER.concurrency)
    assert flag(worker, "max-instances") == str(WORKER.max_instances)
    assert flag(worker, "timeout") == f"{WORKER.timeout}s" and flag(worker, "cpu") == "1"
    update = only(plan, "pubsub", "subscriptions", "update")
    assert flag(update, "max-delivery-attempts") == str(WORKER_TRIGGER.max_delivery_attempts)
    assert (flag(update, "min-retry-delay"), flag(update, "max-retry-delay")) == (
        f"{WORKER_TRIGGER.min_backoff:g}s", f"{WORKER_TRIGGER.max_backoff:g}s")
    assert flag(update, "ack-deadline") == f"{WORKER_TRIGGER.ack_deadline:g}"
    assert WORKER_TRIGGER.ack_deadline > WORKER.timeout
    webhook = next(c for c in starting(plan, "functions", "deploy") if c[2] == "webhook")
    assert (flag(webhook, "concurrency"), flag(webhook, "max-instances"), flag(webhook, "timeout")) == (
        str(WEBHOOK.concurrency), str(WEBHOOK.max_instances), f"{WEBHOOK.timeout}s")


def test_the_longest_worker_timeout_gets_pub_subs_longest_ack_deadline(make_cloud):
    cloud = make_cloud(config=CONFIG + "WORKER_TIMEOUT=540\n")
    result = cloud.deploy("--dry-run")
    assert result.returncode == 0, result.stderr
    assert flag(only(result.commands("DRY-RUN: "), "pubsub", "subscriptions", "update"), "ack-deadline") == "550"


def test_a_second_run_creates_nothing_and_only_redeploys_and_updates_jobs(deployed_twice):
    _, first, second = deployed_twice
    assert second.returncode == 0, second.stderr
    assert len(first.commands("RUN: ")) > 60  # the first run did create everything
    rerun = [c[:4] for c in second.commands("RUN: ")]
    assert rerun == [["functions", "deploy", n, "--gen2"] for n in ("webhook", "order-worker", "scheduler", "auth")] + [
        ["scheduler", "jobs", "update", "http"]] * 5


def test_a_second_run_sends_the_fake_nothing_but_lookups_deploys_and_job_updates(deployed_twice):
    cloud, _, _ = deployed_twice
    sent = cloud.fake.changes()  # the second run's
    assert [c[:2] for c in sent] == [["functions", "deploy"]] * 4 + [["scheduler", "jobs"]] * 5
    assert not any("create" in c or "add-iam-policy-binding" in c or "enable" in c for c in sent)


def deployed(make_cloud, **kwargs) -> FakeCloud:
    """A fake project after a complete one-shot deploy with the required secrets given."""
    cloud = make_cloud(**kwargs)
    result = cloud.deploy("--secrets-file", str(cloud.secrets_file(SECRET_VALUES)))
    assert result.returncode == 0, result.stderr
    return cloud


def test_a_rerun_repairs_only_what_drifted(make_cloud):
    cloud = deployed(make_cloud)
    subscriptions = cloud.state["resources"]["pubsub subscriptions"]
    del subscriptions["notifications-log"]
    worker_subscription = next(s for s in subscriptions if s.startswith("eventarc-"))
    del subscriptions[worker_subscription]["deadLetterPolicy"]  # e.g. reset by a redeploy
    subscriptions[worker_subscription]["ackDeadlineSeconds"] = 10
    cloud.state["iam"]["secrets WEBHOOK_SECRET"] = []

    result = cloud.deploy()

    assert result.returncode == 0, result.stderr
    repairs = [c for c in result.commands("RUN: ") if c[:2] not in (["functions", "deploy"], ["scheduler", "jobs"])]
    assert [c[:4] for c in repairs] == [
        ["pubsub", "subscriptions", "create", "notifications-log"],
        ["secrets", "add-iam-policy-binding", "WEBHOOK_SECRET", f"--member={member('tvf-webhook')}"],
        ["pubsub", "subscriptions", "update", worker_subscription],
    ]


# --- 3. what the trader is told -----------------------------------------------------------

def test_the_output_gives_urls_static_ip_and_alert_template(deployed_twice):
    _, _, second = deployed_twice
    out = second.stdout
    assert f"https://{REGION}-{PROJECT}.cloudfunctions.net/webhook" in out
    assert f"https://{REGION}-{PROJECT}.cloudfunctions.net/auth/login" in out
    assert f"https://{REGION}-{PROJECT}.cloudfunctions.net/auth/callback" in out
    assert STATIC_IP in out
    template = json.loads(next(line for line in out.splitlines() if line.startswith('{"secret"')))
    assert template == {"secret": "<your WEBHOOK_SECRET>", "symbol": "NIFTY", "action": "{{strategy.order.action}}",
                        "expiry": "WEEKLY", "strike": "ATM", "optionType": "CE", "lots": 1,
                        "strategy": "my-strategy", "time": "{{timenow}}"}


def test_no_secret_value_is_ever_read_or_printed(deployed_twice):
    cloud, first, second = deployed_twice
    for result in (first, second):
        for value in SECRET_VALUES.values():
            assert value not in result.stdout and value not in result.stderr
    assert not any(c[:3] == ["secrets", "versions", "access"] for c in cloud.fake.calls)


def reminded(result: Result) -> set[str]:
    return set(re.findall(r"read -rs V && .* gcloud secrets versions add (\S+) --data-file=- ", result.stdout))


def test_the_output_lists_only_the_secrets_still_without_a_value(deployed_twice):
    _, first, second = deployed_twice
    assert reminded(first) == {"FYERS_APP_ID", "FYERS_SECRET_KEY", "FYERS_PIN", "OPERATOR_KEY",
                               "TELEGRAM_BOT_TOKEN", "NOTIFY_WEBHOOK_URL"}
    assert reminded(second) == {"FYERS_PIN", "TELEGRAM_BOT_TOKEN", "NOTIFY_WEBHOOK_URL"}
    assert "After adding NOTIFY_WEBHOOK_URL, re-run deploy.sh" in second.stdout


def test_the_notify_url_is_a_secret_mounted_by_the_notifying_functions_and_never_shown(make_cloud):
    cloud = make_cloud()
    values = {**SECRET_VALUES, "NOTIFY_WEBHOOK_URL": NOTIFY_URL}

    result = cloud.deploy("--secrets-file", "-", stdin="".join(f"{k}={v}\n" for k, v in values.items()))

    assert result.returncode == 0, result.stderr
    assert "tok-9c2f-DO-NOT-PRINT" not in result.stdout + result.stderr
    assert cloud.state["secret_values"]["NOTIFY_WEBHOOK_URL"] == NOTIFY_URL
    sent = {c[2]: c for c in cloud.fake.calls if c[:2] == ["functions", "deploy"]}
    assert not any("tok-9c2f" in arg for c in cloud.fake.calls for arg in c)  # never on a command line
    for name, command in sent.items():
        assert "NOTIFY_WEBHOOK_URL" not in env_vars(command)
        mounted = sorted(secret_table.ACCESS[name].mounts)
        assert flag(command, "set-secrets") == ",".join(f"{s}={s}:latest" for s in mounted), name
        assert flag(command, "format") == "none"  # gcloud would print the env otherwise


def test_a_secret_in_the_config_file_is_refused(make_cloud):
    cloud = make_cloud(config=CONFIG + f"NOTIFY_WEBHOOK_URL={NOTIFY_URL}\n")
    result = cloud.deploy("--dry-run")
    assert result.returncode != 0 and cloud.fake.calls == []
    assert "NOTIFY_WEBHOOK_URL is a secret" in result.stderr
    assert "tok-9c2f" not in result.stdout + result.stderr


# --- 4. a first run on a fresh project ------------------------------------------------------

def final_state(cloud: FakeCloud) -> dict:
    """What a deploy leaves behind, for comparing two ways of getting there."""
    state = json.loads(json.dumps(cloud.state))
    state["iam"] = {key: sorted(map(tuple, value)) for key, value in state["iam"].items()}
    state["enabled_services"] = sorted(state["enabled_services"])
    return state


def test_a_first_run_without_values_stops_before_any_change_and_prints_the_commands(make_cloud, tmp_path):
    cloud = make_cloud()

    stopped = cloud.deploy()

    assert stopped.returncode != 0
    assert cloud.fake.changes() == []
    assert "WEBHOOK_SECRET has no value" in stopped.stderr and "Nothing was changed" in stopped.stderr
    commands = [line.strip() for line in stopped.stdout.splitlines() if line.startswith("  ")]
    assert commands == [
        f"gcloud services enable secretmanager.googleapis.com --project={PROJECT}",
        f"gcloud secrets create WEBHOOK_SECRET --replication-policy=automatic --project={PROJECT}",
        f'read -rs V && printf %s "$V" | gcloud secrets versions add WEBHOOK_SECRET --data-file=- --project={PROJECT}; unset V',
    ]

    # The operator runs exactly those commands (typing the value), then deploys again.
    for command in commands:
        done = subprocess.run(["bash", "-c", command], env=cloud.env, input=SECRET_VALUES["WEBHOOK_SECRET"] + "\n",
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
    assert cloud.state["secret_values"] == {"WEBHOOK_SECRET": SECRET_VALUES["WEBHOOK_SECRET"]}
    rerun = cloud.deploy()
    assert rerun.returncode == 0, rerun.stderr
    cloud.state["secret_values"].update(SECRET_VALUES)
    assert cloud.deploy().returncode == 0

    # The same as giving every value to one run.
    one_shot = deployed(make_cloud)
    assert one_shot.deploy().returncode == 0
    assert final_state(cloud) == final_state(one_shot)


def test_values_from_a_file_are_added_before_the_deploys_through_standard_input_only(make_cloud):
    cloud = make_cloud()
    result = cloud.deploy("--secrets-file", str(cloud.secrets_file(SECRET_VALUES)))
    assert result.returncode == 0, result.stderr
    assert cloud.state["secret_values"] == SECRET_VALUES
    order = [c[:3] for c in cloud.fake.changes()]
    first_deploy = order.index(["functions", "deploy", "webhook"])
    assert order.index(["secrets", "versions", "add"]) < first_deploy
    echoed = starting(result.commands("RUN: "), "secrets", "versions", "add")
    assert sorted(c[3] for c in echoed) == sorted(SECRET_VALUES)
    assert all(c[4:] == ["--data-file=-", f"--project={PROJECT}"] for c in echoed)
    assert not any(value in arg for value in SECRET_VALUES.values() for c in cloud.fake.calls for arg in c)
    for value in SECRET_VALUES.values():
        assert value not in result.stdout + result.stderr


def test_a_value_is_never_replaced_and_an_unknown_name_is_refused(make_cloud):
    cloud = deployed(make_cloud)
    kept = cloud.deploy("--secrets-file", "-", stdin="WEBHOOK_SECRET=another-value\n")
    assert kept.returncode == 0, kept.stderr
    assert cloud.state["secret_values"]["WEBHOOK_SECRET"] == SECRET_VALUES["WEBHOOK_SECRET"]
    assert "ok, has a value: WEBHOOK_SECRET" in kept.stderr

    refused = cloud.deploy("--secrets-file", "-", stdin="WEBHOOK_SECRT=typo-value\n")
    assert refused.returncode != 0 and cloud.fake.changes() == []
    assert "-:1: expected NAME=VALUE" in refused.stderr and "typo-value" not in refused.stderr


def test_a_terminal_is_asked_for_each_missing_value_without_echo(make_cloud):
    import pty

    cloud = make_cloud()
    leader, follower = pty.openpty()
    answers = {"WEBHOOK_SECRET": SECRET_VALUES["WEBHOOK_SECRET"], "OPERATOR_KEY": SECRET_VALUES["OPERATOR_KEY"]}
    process = subprocess.Popen(["bash", str(DEPLOY), "--config", str(cloud.config)], env=cloud.env,
                               stdin=follower, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    seen, pending = b"", list(secret_table.NAMES)
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        while pending and f"  {pending[0]} (".encode() in seen.split(b"\n")[-1]:
            name = pending.pop(0)
            os.write(leader, (answers.get(name, "") + "\n").encode())
            seen += b"\n"
        if b"static egress IP" in seen:
            break
    out, _ = process.communicate(timeout=60)
    os.close(leader)
    assert process.returncode == 0, seen.decode(errors="replace")
    assert {k: cloud.state["secret_values"][k] for k in answers} == answers
    for value in answers.values():
        assert value.encode() not in seen + out


# --- 5. checks of what exists -----------------------------------------------------------------

NAT_FIX = f"gcloud compute routers nats update tvf-nat --router=tvf-router --region={REGION}"
ADDRESSES = f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/regions/{REGION}/addresses/"
SUBNETS = f"https://www.googleapis.com/compute/v1/projects/{PROJECT}/regions/{REGION}/subnetworks/"


@pytest.mark.parametrize(
    ("drift", "fix"),
    [
        ({"natIps": [ADDRESSES + "tvf-egress-ip", ADDRESSES + "other-ip"]}, "--nat-external-ip-pool=tvf-egress-ip"),
        ({"natIps": [ADDRESSES + "tvf-egress-ip-old"]}, "--nat-external-ip-pool=tvf-egress-ip"),
        ({"natIpAllocateOption": "AUTO_ONLY", "natIps": []}, "--nat-external-ip-pool=tvf-egress-ip"),
        ({"subnetworks": [{"name": SUBNETS + "other-subnet"}]},
         "--nat-custom-subnet-ip-ranges=other-subnet,tvf-egress-subnet"),
    ],
    ids=["extra-address", "address-named-like-it", "automatic-addresses", "subnet-not-covered"],
)
def test_a_drifted_nat_stops_the_run_with_the_exact_fix(make_cloud, drift, fix):
    cloud = deployed(make_cloud)
    cloud.state["resources"]["compute routers nats"]["tvf-nat"].update(drift)

    result = cloud.deploy()

    assert result.returncode != 0
    assert f"fix Cloud NAT tvf-nat, then re-run: {NAT_FIX} {fix} --project={PROJECT}" in result.stderr
    assert not any(c[:2] == ["functions", "deploy"] for c in cloud.fake.calls)


def test_a_nat_for_all_subnets_through_the_static_ip_alone_passes(make_cloud):
    cloud = deployed(make_cloud)
    cloud.state["resources"]["compute routers nats"]["tvf-nat"].update(
        sourceSubnetworkIpRangesToNat="ALL_SUBNETWORKS_ALL_IP_RANGES", subnetworks=[])
    result = cloud.deploy()
    assert result.returncode == 0, result.stderr
    assert "ok: Cloud NAT tvf-nat sends tvf-egress-subnet out through tvf-egress-ip only" in result.stderr


def test_a_subnet_without_private_google_access_gets_it(make_cloud):
    cloud = deployed(make_cloud)
    cloud.state["resources"]["compute networks subnets"]["tvf-egress-subnet"]["privateIpGoogleAccess"] = False
    result = cloud.deploy()
    assert result.returncode == 0, result.stderr
    assert starting(result.commands("RUN: "), "compute", "networks", "subnets", "update") == [
        ["compute", "networks", "subnets", "update", "tvf-egress-subnet", f"--region={REGION}",
         "--enable-private-ip-google-access", f"--project={PROJECT}"]]


def test_the_dead_letter_subscription_is_the_one_the_trigger_names(make_cloud):
    cloud = make_cloud()
    decoy = f"eventarc-{REGION}-order-worker-000000-sub-001"  # an old trigger's leftover
    cloud.state.setdefault("resources", {})["pubsub subscriptions"] = {decoy: {
        "name": f"projects/{PROJECT}/subscriptions/{decoy}", "topic": f"projects/{PROJECT}/topics/orders"}}
    result = cloud.deploy("--secrets-file", str(cloud.secrets_file(SECRET_VALUES)))
    assert result.returncode == 0, result.stderr
    trigger = cloud.state["resources"]["eventarc triggers"]["order-worker-482913"]
    update = only(result.commands("RUN: "), "pubsub", "subscriptions", "update")
    assert update[3] == trigger["transport"]["pubsub"]["subscription"].rsplit("/", 1)[1] != decoy


def test_ttl_and_index_changes_right_after_the_database_is_created_are_retried(make_cloud):
    cloud = make_cloud(state={"failures": {
        "firestore fields ttls update": {"message": "FAILED_PRECONDITION: the database is not ready", "times": 2},
        "firestore indexes composite create": {"message": "FAILED_PRECONDITION: the database is not ready", "times": 1},
    }})
    result = cloud.deploy("--secrets-file", str(cloud.secrets_file(SECRET_VALUES)))
    assert result.returncode == 0, result.stderr
    assert len(cloud.state["ttls"]) == 5 and len(cloud.state["indexes"]) == 2
    assert cloud.sleeps.read_text().split() == ["10"] * 3
    assert "a new Firestore database takes a moment" in result.stderr


def test_a_failed_lookup_whose_message_holds_404_among_digits_is_not_taken_for_missing(make_cloud):
    cloud = deployed(make_cloud)
    cloud.state["failures"] = {"pubsub topics list": {
        "message": "PERMISSION_DENIED: caller lacks pubsub.topics.list on project 140412345678", "times": 1}}
    result = cloud.deploy()
    assert result.returncode != 0
    assert "lookup failed: gcloud pubsub topics list" in result.stderr
    assert not any(c[:3] == ["pubsub", "topics", "create"] for c in cloud.fake.calls)


# --- 6. dry runs that cannot look anything up -------------------------------------------------

def test_a_dry_run_that_cannot_look_anything_up_says_so_first_and_fails(make_cloud):
    cloud = make_cloud(state={"no_credentials": True})
    result = cloud.deploy("--dry-run")
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert lines[0] == f"# DRY RUN FAILED: cannot look anything up in project {PROJECT}, so there is no plan."
    assert "You do not currently have an active account selected." in lines[1]
    assert result.commands("DRY-RUN: ") == []


def test_assume_empty_plans_everything_without_a_single_lookup(make_cloud, empty_project_dry_run):
    cloud = make_cloud(state={"no_credentials": True})
    result = cloud.deploy("--dry-run", "--assume-empty")
    assert result.returncode == 0, result.stderr
    assert cloud.fake.calls == []
    assert result.stdout.splitlines()[0].startswith("# DRY RUN FOR AN EMPTY PROJECT (--assume-empty)")
    plan = result.commands("DRY-RUN: ")
    looked_up = empty_project_dry_run[1].commands("DRY-RUN: ")
    assert [c[:3] for c in plan] == [c[:3] for c in looked_up]


def test_assume_empty_needs_a_dry_run(make_cloud):
    cloud = make_cloud()
    result = cloud.deploy("--assume-empty")
    assert result.returncode != 0 and "--assume-empty only goes with --dry-run" in result.stderr
    assert cloud.fake.calls == []


# --- configuration ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("MAX_LOTS_PER_ALRT=3", "unknown config key MAX_LOTS_PER_ALRT"),
        ("SECRET_BACKEND=env", "SECRET_BACKEND is set by deploy.sh"),
        ("MAX_DELIVERY_ATTEMPTS=3", "MAX_DELIVERY_ATTEMPTS must be an integer in [5, 100]"),
        ("WEBHOOK_CPU=0.5", "WEBHOOK_CONCURRENCY > 1 needs WEBHOOK_CPU >= 1"),
        ("WORKER_TIMEOUT=600", "WORKER_TIMEOUT must be an integer in [1, 540]"),
        ("ALLOWED_SYMBOLS=NIFTY|SENSEX", "ALLOWED_SYMBOLS must not contain '|'"),
        ("this is not a pair", "expected KEY=VALUE"),
    ],
)
def test_a_bad_config_is_refused_before_any_gcloud_call(make_cloud, line, message):
    cloud = make_cloud(config=CONFIG + line + "\n")
    result = cloud.deploy("--dry-run")
    assert result.returncode != 0
    assert message in result.stderr
    assert cloud.fake.calls == []


def test_the_example_config_is_valid(make_cloud):
    """The shipped example passes validation and plans a full deploy."""
    cloud = make_cloud(project="my-trading-project")
    example = cloud.root / "example.env"
    example.write_text((REPO / "deploy" / "config.example.env").read_text() + f"SOURCE_DIR={cloud.source}\n")
    result = cloud.deploy("--dry-run", config=example)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    plan = result.commands("DRY-RUN: ")
    assert len(starting(plan, "functions", "deploy")) == 4
    assert all(c[-1] == "--project=my-trading-project" for c in plan)


def test_the_fake_also_runs_as_a_one_shot_command(tmp_path):
    state, log = tmp_path / "state.json", tmp_path / "calls.jsonl"
    state.write_text(json.dumps({"project": PROJECT, "enabled_services": ["pubsub.googleapis.com"]}))
    env = {**os.environ, "FAKE_GCLOUD_STATE": str(state), "FAKE_GCLOUD_LOG": str(log)}
    def gcloud(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(FAKE), *argv, f"--project={PROJECT}"], env=env,
                              capture_output=True, text=True, timeout=30)

    missing = gcloud("pubsub", "topics", "describe", "orders", "--format=none")
    created = gcloud("pubsub", "topics", "create", "orders")
    found = gcloud("pubsub", "topics", "describe", "orders", "--format=value(name)")

    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    assert created.returncode == 0
    assert (found.returncode, found.stdout) == (0, f"projects/{PROJECT}/topics/orders\n")
    assert [json.loads(line)["argv"][:3] for line in log.read_text().splitlines()] == [
        ["pubsub", "topics", "describe"], ["pubsub", "topics", "create"], ["pubsub", "topics", "describe"]]


# --- 7. lint ------------------------------------------------------------------------------

def test_shellcheck_passes():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    done = subprocess.run([shellcheck, str(DEPLOY)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
