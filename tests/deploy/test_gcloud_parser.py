"""Every gcloud command deploy/deploy.sh sends, run through the installed gcloud's own
argument parser: with an empty configuration and no credentials, a command that parses
fails later, for want of an account; one that does not parse fails with "unrecognized
arguments" or "Invalid choice" (and exits 2). Nothing reaches a network.

The commands are those of a full deploy on the fake cloud, first run and re-run (every
look-up, create, grant, deploy and update), with the secrets' standard-input commands.
One command per form (same words, same flags) is enough.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.deploy.test_deploy_dryrun import NOTIFY_URL, SECRET_VALUES, make_cloud  # noqa: F401 - fixture

GCLOUD = shutil.which("gcloud", path=os.environ.get("PATH", "") + os.pathsep + "/usr/bin")
PARSE_ERRORS = re.compile(r"unrecognized arguments|Invalid choice|argument .*: expected|must be specified|"
                          r"is not a valid|Bad value|Invalid value")


def form(argv: list[str]) -> tuple:
    return tuple(a for a in argv if not a.startswith("--")), tuple(sorted(a.split("=", 1)[0] for a in argv
                                                                         if a.startswith("--")))


@pytest.fixture(scope="module")
def sent_commands(tmp_path_factory):
    from tests.deploy.test_deploy_dryrun import FakeCloud

    cloud = FakeCloud(tmp_path_factory.mktemp("parse"))
    try:
        values = {**SECRET_VALUES, "NOTIFY_WEBHOOK_URL": NOTIFY_URL}
        first = cloud.deploy("--secrets-file", str(cloud.secrets_file(values)))
        assert first.returncode == 0, first.stderr
        calls = [list(c) for c in cloud.fake.calls]
        cloud.state["resources"]["compute networks subnets"]["tvf-egress-subnet"]["privateIpGoogleAccess"] = False
        second = cloud.deploy()
        assert second.returncode == 0, second.stderr
        calls += [list(c) for c in cloud.fake.calls]
        # The commands printed for the operator, and the one for a drifted NAT.
        calls += [["services", "enable", "secretmanager.googleapis.com", "--project=tvf-test-project"],
                  ["compute", "routers", "nats", "update", "tvf-nat", "--router=tvf-router", "--region=asia-south1",
                   "--nat-external-ip-pool=tvf-egress-ip", "--nat-custom-subnet-ip-ranges=a,b",
                   "--project=tvf-test-project"]]
    finally:
        cloud.close()
    forms = {}
    for call in calls:
        forms.setdefault(form(call), call)
    return list(forms.values())


# Runs in gcloud's own Python: loads gcloud once, then runs each JSON argv line from
# stdin and prints its exit code and what it wrote to stderr. One process for all the
# commands: a gcloud process per command costs a second or more each.
DRIVER = r"""
import io, json, os, sys, tempfile
sdk = sys.argv[1]
sys.path[:0] = [os.path.join(sdk, "lib"), os.path.join(sdk, "lib", "third_party")]
from googlecloudsdk import gcloud_main
cli = gcloud_main.CreateCLI([])
for line in sys.stdin.read().splitlines():
    argv = json.loads(line)
    saved, capture = os.dup(2), tempfile.TemporaryFile()
    os.dup2(capture.fileno(), 2)
    try:
        cli.Execute(argv)
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException as error:
        code, _ = 1, sys.stderr.write(f"{type(error).__name__}: {error}\\n")
    sys.stderr.flush()
    os.dup2(saved, 2)
    capture.seek(0)
    print(json.dumps({"argv": argv, "code": code, "stderr": capture.read().decode(errors="replace")}), flush=True)
"""


def run_through_gcloud(commands: list[list[str]], config_dir: str) -> list[dict]:
    """Each command's exit code and stderr from the installed gcloud, without credentials."""
    env = {**os.environ, "CLOUDSDK_CONFIG": config_dir, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
           "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false", "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
           "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true"}
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    info = subprocess.run([GCLOUD, "info", "--format=value(installation.sdk_root,basic.python_location)"],
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    sdk_root, python = info.stdout.strip().split("\t")
    done = subprocess.run([python, "-c", DRIVER, sdk_root], env=env, capture_output=True, text=True, timeout=600,
                          input="".join(json.dumps(c) + "\n" for c in commands))
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(commands), done.stderr[-2000:]
    return results


def parse_errors(results: list[dict]) -> list[str]:
    return [f"gcloud {' '.join(r['argv'])}\n{r['stderr'].strip()}" for r in results
            if r["code"] == 2 or PARSE_ERRORS.search(r["stderr"])]


def test_every_command_deploy_sh_sends_parses_in_the_installed_gcloud(sent_commands, tmp_path):
    if GCLOUD is None:
        pytest.skip("gcloud is not installed (deploy/local/setup.sh installs it): the parser check did not run")
    assert len(sent_commands) > 40
    results = run_through_gcloud(sent_commands, str(tmp_path))
    assert parse_errors(results) == []
    # They parsed, then stopped for want of credentials: nothing was sent anywhere.
    assert all(r["code"] == 1 and "active account" in r["stderr"] for r in results), results


def test_the_check_catches_a_bad_flag_and_a_bad_choice(tmp_path):
    if GCLOUD is None:
        pytest.skip("gcloud is not installed (deploy/local/setup.sh installs it): the parser check did not run")
    results = run_through_gcloud([
        ["pubsub", "topics", "create", "orders", "--no-such-flag=1", "--project=p-123456"],
        ["functions", "deploy", "x", "--ingress-settings=internal", "--project=p-123456"],
        ["pubsub", "topics", "create", "orders", "--project=p-123456"],
    ], str(tmp_path))
    assert [bool(parse_errors([r])) for r in results] == [True, True, False]
    assert "unrecognized arguments" in results[0]["stderr"] and "Invalid choice" in results[1]["stderr"]
