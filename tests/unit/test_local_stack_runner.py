"""The local stack's runner without its processes: the command lines it builds, as their
programs parse them, and the token folder it empties on stop.

Generated values (the simulator's app secret, ids) may start with "-", which a parser
takes for an option unless the value is attached (``--app-secret=-x``).
"""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from functions_framework._cli import _cli as functions_framework_cli

from common.secrets import EnvSecretStore
from common.session import ACCESS_TOKEN_SECRET, REFRESH_TOKEN_SECRET
from deploy.local import fyers_simulator, stack
from deploy.local.stack import FUNCTIONS, Options, Stack, function_args, prune_runs, simulator_args

ROOT = Path(__file__).resolve().parents[2]
STARTS = 200


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    """The runner's run folders, here instead of .local/runs."""
    monkeypatch.setattr(stack, "RUNS", tmp_path / "runs")
    return tmp_path / "runs"


def new_stack() -> Stack:
    """A runner as ``run.sh`` makes one (generated secrets, free ports), nothing started."""
    return Stack(Options(), {"PATH": os.environ.get("PATH", "")}, io.StringIO())


def generated(dash: bool) -> str:
    """A value as the runner generates it; forced to start with "-" when ``dash``."""
    value = secrets.token_urlsafe(18)
    return "-" + value[1:] if dash else value


def test_the_simulator_reads_every_generated_app_secret_and_id_200_times_in_a_row(runs, monkeypatch):
    spawned: list[list[str]] = []
    monkeypatch.setattr(Stack, "_spawn", lambda self, name, args: spawned.append(args))
    monkeypatch.setattr(Stack, "_wait_listening", lambda self, child, port: None)
    masters = [Path("/tmp/-masters/NSE_FO.csv"), Path("/tmp/-masters/NSE_CM.csv")]
    dashes = 0
    for start in range(STARTS):
        local = new_stack()
        # Half the starts get a secret and an app id that begin with "-".
        local.app_id, local.app_secret = generated(start % 2 == 0), generated(start % 2 == 0)
        dashes += local.app_secret.startswith("-")

        local._start_simulator(masters)
        command = spawned[-1]
        assert command[:3] == [sys.executable, "-m", "deploy.local.fyers_simulator"]
        args = fyers_simulator.parse_args(command[3:])

        assert (args.app_id, args.app_secret) == ([local.app_id], [local.app_secret])
        assert args.master == [str(path) for path in masters]
        assert (args.port, args.auto_approve) == (local.ports["simulator"], True)
    assert dashes >= STARTS // 2


def test_the_simulator_reads_a_value_starting_with_a_dash_given_after_a_space():
    args = fyers_simulator.parse_args(["--app-id", "-APP", "--app-secret", "--auto-approve", "--auto-approve",
                                       "--master", "-NSE_FO.csv"])

    assert (args.app_id, args.app_secret, args.master) == (["-APP"], ["--auto-approve"], ["-NSE_FO.csv"])
    assert args.auto_approve


def test_the_simulator_refuses_an_app_secret_without_a_value():
    with pytest.raises(SystemExit):
        fyers_simulator.parse_args(["--app-id", "APP", "--app-secret"])


def test_a_simulator_started_with_a_secret_starting_with_a_dash_serves(tmp_path):
    master = tmp_path / "NSE_FO.csv"
    master.write_text("")
    process = subprocess.Popen(simulator_args(sys.executable, "127.0.0.1", 0, "-APP", "-" + secrets.token_urlsafe(18),
                                              [master]),
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = process.stdout.readline()
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert banner.startswith("fyers simulator on http://127.0.0.1:"), banner


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functions_framework_reads_each_function_command_line(name):
    command = function_args("functions-framework", name, ROOT / "main.py", "127.0.0.1", 47104)

    params = functions_framework_cli.make_context("functions-framework", command[1:]).params

    assert params["target"] == name and params["source"] == str(ROOT / "main.py")
    assert (params["signature_type"], params["host"], params["port"]) == (FUNCTIONS[name], "127.0.0.1", 47104)


def test_stop_removes_a_token_stored_by_a_later_login_too(runs):
    local = new_stack()
    overlay = Path(local.settings.secret_overlay_dir)
    assert overlay == local.secrets_dir and overlay.is_relative_to(runs)
    # What the auth function's /callback does on a manual re-login, in another process.
    store = EnvSecretStore({}, overlay)
    store.put(ACCESS_TOKEN_SECRET, "re-login-access-token")
    store.put(REFRESH_TOKEN_SECRET, "re-login-refresh-token")
    (overlay / f".{ACCESS_TOKEN_SECRET}.half-written").write_text("partial")

    local.stop()

    assert not overlay.exists() or list(overlay.iterdir()) == []
    assert "could not be removed" not in local.out.getvalue()


def test_stop_without_any_stored_token_says_nothing_about_tokens(runs):
    local = new_stack()

    local.stop()

    assert "token" not in local.out.getvalue()


def test_a_new_run_removes_the_tokens_left_by_a_killed_runner_and_spares_a_live_one(tmp_path):
    killed, live = tmp_path / "local-killed", tmp_path / "local-live"
    for run in (killed, live):
        EnvSecretStore({}, run / "secrets").put(ACCESS_TOKEN_SECRET, "token")
    (live / "runner.pid").write_text(str(os.getpid()))
    (killed / "logs").mkdir()

    prune_runs(tmp_path, keep=5)

    assert not (killed / "secrets").exists() and (killed / "logs").is_dir()
    assert (live / "secrets" / ACCESS_TOKEN_SECRET).read_text() == "token"
