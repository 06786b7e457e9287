"""The router's secrets: their names, who fills them in, and which function reads, writes
or has Secret Manager put into its environment which of them. The one table that the
code's secret names, deploy/deploy.sh's grants and docs/deploy.md come from.

Standard library only, so that deploy/deploy.sh can print it without the router's
packages: ``python3 -m common.secret_table shell`` (lines for the script) or
``python3 -m common.secret_table markdown`` (the table in docs/deploy.md).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

WEBHOOK_SECRET = "WEBHOOK_SECRET"
FYERS_APP_ID = "FYERS_APP_ID"
FYERS_SECRET_KEY = "FYERS_SECRET_KEY"
FYERS_ACCESS_TOKEN = "FYERS_ACCESS_TOKEN"
FYERS_REFRESH_TOKEN = "FYERS_REFRESH_TOKEN"
FYERS_PIN = "FYERS_PIN"
OPERATOR_KEY = "OPERATOR_KEY"
TELEGRAM_BOT_TOKEN = "TELEGRAM_BOT_TOKEN"
NOTIFY_WEBHOOK_URL = "NOTIFY_WEBHOOK_URL"  # a chat webhook URL carries its token


@dataclass(frozen=True)
class Secret:
    """One secret. ``filled_by``: ``operator`` (you add the value) or ``login`` (the daily
    login writes it). ``required``: the router cannot take orders without a value."""

    name: str
    filled_by: str
    required: bool
    purpose: str


SECRETS = (
    Secret(WEBHOOK_SECRET, "operator", True, "checked against every alert (comma-separate several to rotate)"),
    Secret(FYERS_APP_ID, "operator", True, "your Fyers app's id, with its suffix (`XB12345-200`)"),
    Secret(FYERS_SECRET_KEY, "operator", True, "your Fyers app's secret key"),
    Secret(OPERATOR_KEY, "operator", True, "protects the login page"),
    Secret(TELEGRAM_BOT_TOKEN, "operator", False, "Telegram notifications (with the `TELEGRAM_CHAT_ID` setting)"),
    Secret(NOTIFY_WEBHOOK_URL, "operator", False, "a URL that every notification is also POSTed to"),
    Secret(FYERS_PIN, "operator", False, "only for a login flow that needs it"),
    Secret(FYERS_ACCESS_TOKEN, "login", False, "the day's Fyers session"),
    Secret(FYERS_REFRESH_TOKEN, "login", False, "Fyers' refresh token, when it issues one"),
)
NAMES = tuple(secret.name for secret in SECRETS)


@dataclass(frozen=True)
class Access:
    """What one function may do with secrets. ``reads``: Secret Manager access (read at
    run time through the secret store, or from the environment when mounted);
    ``writes``: add versions and disable old ones; ``mounts``: put into the function's
    environment at instance start (``--set-secrets``), which needs a value before the
    deploy, so an optional one is mounted only once it has a value."""

    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    mounts: frozenset[str] = frozenset()


# Keys are the deployed function names. The notifier (worker, scheduler, auth) reads the
# Telegram token at run time and the notify URL from its environment.
ACCESS = {
    "webhook": Access(
        reads=frozenset({WEBHOOK_SECRET}),
        mounts=frozenset({WEBHOOK_SECRET}),  # its cold start never loads Secret Manager
    ),
    "order-worker": Access(
        reads=frozenset({FYERS_APP_ID, FYERS_ACCESS_TOKEN, TELEGRAM_BOT_TOKEN, NOTIFY_WEBHOOK_URL}),
        mounts=frozenset({NOTIFY_WEBHOOK_URL}),
    ),
    "scheduler": Access(
        reads=frozenset({FYERS_APP_ID, FYERS_SECRET_KEY, FYERS_ACCESS_TOKEN, FYERS_REFRESH_TOKEN, FYERS_PIN,
                         TELEGRAM_BOT_TOKEN, NOTIFY_WEBHOOK_URL}),
        writes=frozenset({FYERS_ACCESS_TOKEN, FYERS_REFRESH_TOKEN}),  # the session job's token renewal
        mounts=frozenset({NOTIFY_WEBHOOK_URL}),
    ),
    "auth": Access(
        reads=frozenset({OPERATOR_KEY, FYERS_APP_ID, FYERS_SECRET_KEY, TELEGRAM_BOT_TOKEN, NOTIFY_WEBHOOK_URL}),
        writes=frozenset({FYERS_ACCESS_TOKEN, FYERS_REFRESH_TOKEN}),  # the daily login
        mounts=frozenset({NOTIFY_WEBHOOK_URL}),
    ),
}


def shell_lines() -> list[str]:
    """The table as lines for deploy/deploy.sh: ``secret NAME FILLED_BY REQUIRED`` and
    ``reads|writes|mounts FUNCTION NAME``, in a stable order."""
    lines = [f"secret {s.name} {s.filled_by} {'required' if s.required else 'optional'}" for s in SECRETS]
    for function, access in ACCESS.items():
        for verb, names in (("reads", access.reads), ("writes", access.writes), ("mounts", access.mounts)):
            lines += [f"{verb} {function} {name}" for name in NAMES if name in names]
    return lines


def markdown() -> str:
    """The table in docs/deploy.md: one row per secret."""

    def who(verb: str, name: str) -> str:
        return ", ".join(f"`{f}`" for f, access in ACCESS.items() if name in getattr(access, verb)) or "—"

    rows = ["| Secret | Value from | Needed | Read by | Written by | In the environment of | What for |",
            "|---|---|---|---|---|---|---|"]
    for s in SECRETS:
        source = "you" if s.filled_by == "operator" else "the daily login"
        rows.append(f"| `{s.name}` | {source} | {'yes' if s.required else 'no'} | {who('reads', s.name)} "
                    f"| {who('writes', s.name)} | {who('mounts', s.name)} | {s.purpose} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    output = {"shell": lambda: "\n".join(shell_lines()) + "\n", "markdown": markdown}
    if len(sys.argv) != 2 or sys.argv[1] not in output:
        sys.exit(f"usage: python3 -m common.secret_table {'|'.join(output)}")
    sys.stdout.write(output[sys.argv[1]]())
