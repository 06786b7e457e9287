"""Start and stop the Firestore and Pub/Sub emulators (tests and the local stack).

Each emulator runs as its own process group on a free port, so stopping it
takes its Java child along. Missing tools are installed by ``ensure_tools.sh``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_tools() -> None:
    """Install gcloud, the emulator components and Java with apt-get if any is missing."""
    subprocess.run(["bash", str(HERE / "ensure_tools.sh")], check=True)
    if shutil.which("gcloud") is None:
        raise RuntimeError("gcloud is still missing after ensure_tools.sh")


@dataclass
class Emulator:
    """One running emulator process."""

    name: str
    host: str
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        """Stop the emulator and its children."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _start(name: str, args: list[str], port: int, log_dir: Path, timeout: float) -> tuple[subprocess.Popen, Path]:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} emulator exited: see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1):
                return process, log_path
        except OSError:
            time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError(f"{name} emulator did not answer within {timeout:.0f} s: see {log_path}")


def start_firestore(log_dir: Path, port: int | None = None, timeout: float = 60) -> Emulator:
    """Start the Firestore emulator; its ``env`` holds FIRESTORE_EMULATOR_HOST."""
    port = port or free_port()
    host = f"127.0.0.1:{port}"
    process, log_path = _start("firestore", ["gcloud", "emulators", "firestore", "start", f"--host-port={host}", "--quiet"],
                               port, log_dir, timeout)
    return Emulator("firestore", host, process, log_path, {"FIRESTORE_EMULATOR_HOST": host})


def start_pubsub(log_dir: Path, project: str, port: int | None = None, timeout: float = 60) -> Emulator:
    """Start the Pub/Sub emulator; its ``env`` holds PUBSUB_EMULATOR_HOST."""
    port = port or free_port()
    host = f"127.0.0.1:{port}"
    process, log_path = _start("pubsub", ["gcloud", "beta", "emulators", "pubsub", "start", f"--host-port={host}",
                                          f"--project={project}", "--quiet"], port, log_dir, timeout)
    return Emulator("pubsub", host, process, log_path, {"PUBSUB_EMULATOR_HOST": host})
