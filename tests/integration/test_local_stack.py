"""The acceptance test of the "run" command (``deploy/local/run.sh`` → ``python -m deploy.local.stack``).

The whole stack runs as the operator runs it: emulators, the Fyers simulator and
the four functions as processes. ``--check`` sends the example alert and must see
it PLACED; afterwards no process the stack started may still run. Every process
the stack starts inherits its environment, so a marker variable set here finds
them all, Java grandchildren included, by scanning ``/proc/*/environ``. Nor may
any token stay in the run's folder, whichever login stored it.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from common.session import ACCESS_TOKEN_SECRET
from common.settings import Settings
from tests.integration.conftest import ROOT

pytestmark = [pytest.mark.emulators, pytest.mark.timeout(240)]

RUN_TIMEOUT = 120
RUNS = ROOT / ".local" / "runs"
MARKER = "TVF_LOCAL_STACK_TEST"
_SETTINGS = {field.alias for field in Settings.model_fields.values() if field.alias}


def stack_env(marker: str) -> dict[str, str]:
    """This environment minus the router's settings and emulator hosts (as on a fresh shell), plus the marker."""
    env = {k: v for k, v in os.environ.items() if k not in _SETTINGS and not k.endswith("_EMULATOR_HOST")}
    env[MARKER] = marker
    return env


def processes_with(marker: str) -> list[str]:
    """Live processes whose environment holds ``MARKER=marker``: ``"pid cmdline"`` each."""
    wanted = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name} {command}")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def no_process_left(marker: str, grace: float = 5.0) -> list[str]:
    """What is still running after ``grace`` seconds (killed processes take a moment to vanish)."""
    deadline = time.monotonic() + grace
    left = processes_with(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = processes_with(marker)
    return left


def kill_leftovers(marker: str) -> None:
    for line in processes_with(marker):
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except OSError:
            pass


def stop(process: subprocess.Popen, marker: str) -> None:
    """Ask the stack to stop (it stops its children), and make sure of it if it does not."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    kill_leftovers(marker)


def tokens_left(project: str) -> list[str]:
    """The files in the run's token folder (``SECRET_OVERLAY_DIR``)."""
    folder = RUNS / project / "secrets"
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def banner_value(lines: list[str], pattern: str) -> str:
    """The first group of ``pattern`` in the first line of the console output that has it."""
    return next(match.group(1) for line in lines if (match := re.search(pattern, line)))


def test_run_check_places_the_example_alert_and_stops_every_process_it_started():
    marker = uuid.uuid4().hex
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "deploy.local.stack", "--check", "--ignore-market-hours"],
                               cwd=ROOT, env=stack_env(marker), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        stop(process, marker)
        pytest.fail(f"the stack did not finish within {RUN_TIMEOUT} s")
    finally:
        left = no_process_left(marker)
        kill_leftovers(marker)
    print(f"stack --check: {time.monotonic() - started:.1f} s\n{output}")

    assert process.returncode == 0, output
    assert re.search(r"^\S+\s+tv\w+\s+local-check\s+NSE:NIFTY\w+CE\s+BUY\s+\d+\s+PLACED\s", output, re.M), output
    assert "✓ logged in to the simulator through the auth function" in output
    assert "✓ stopped 7 process groups" in output  # 2 emulators, the simulator, 4 functions
    assert left == [], f"still running after the stack stopped: {left}"
    # The generated webhook secret is shown once, in the export line, and nowhere else.
    secret = re.search(r"export WEBHOOK_SECRET=(\S+)", output).group(1)
    assert output.count(secret) == 1
    assert tokens_left(re.search(r"project (local-\w+)", output).group(1)) == []


def test_sigterm_stops_a_running_stack_and_every_process_it_started_and_removes_a_re_login_token():
    marker = uuid.uuid4().hex
    process = subprocess.Popen([sys.executable, "-m", "deploy.local.stack"], cwd=ROOT, env=stack_env(marker),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not any("Ctrl-C stops everything" in line for line in seen):
            assert process.poll() is None, "".join(seen)
            assert time.monotonic() < deadline, "no banner within the time limit:\n" + "".join(seen)
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                pass
        assert any("market hours  enforced" in line for line in seen), "".join(seen)
        assert processes_with(marker), "the stack's processes are not found by their marker"
        # The operator logs in again by hand, through the auth function: a new token.
        project = banner_value(seen, r"project (local-\w+)")
        token = RUNS / project / "secrets" / ACCESS_TOKEN_SECRET
        first = token.read_text()
        answer = requests.post(banner_value(seen, r"login: (http://[^)]+)"),
                               data={"key": banner_value(seen, r"operator key: (\S+)")}, timeout=30)
        assert "<title>Logged in</title>" in answer.text, answer.text[:300]
        assert token.read_text() != first

        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=30)
    finally:
        stop(process, marker)
        left = no_process_left(marker)
    time.sleep(0.2)
    while not lines.empty():
        seen.append(lines.get())

    assert status == 0, "".join(seen)
    assert any("✓ stopped 7 process groups" in line for line in seen), "".join(seen)
    assert left == [], f"still running after SIGTERM: {left}"
    assert tokens_left(project) == []
