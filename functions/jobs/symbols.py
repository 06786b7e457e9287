"""The ``symbols`` job: download Fyers' symbol masters, check them, publish a new version.

Each configured master (``NSE_FO``, ``BSE_FO``, ``NSE_CM`` by default) is fetched
from ``<symbol_master_base>/<NAME>.csv``, streamed under a size cap and a deadline.
The set is published only if every file passes:

* it is UTF-8 text whose lines (nearly all) have the 21 columns of a master row;
* it has at least ``min_rows`` rows, and at least half the rows of the same file
  in the current version (a truncated download looks like a valid, short file);
* merged, it parses, and the resolver finds a contract expiring on or after
  today (IST) for NIFTY, SENSEX and every other index underlying it lists.

If the files are byte-for-byte those of the current version, nothing new is
stored ("unchanged"). On any failure the current version stays, the trader gets a
``MASTER_REFRESH_FAILED`` notification, and the report says why. A failure that a
later attempt may not repeat (download, storage) is marked ``retryable``.
"""

from __future__ import annotations

import hashlib
import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from common.errors import MasterDownloadFailed, MasterInvalid, RouterError, SymbolError
from common.logs import get_logger
from common.master_store import MasterPointer, MasterRepository
from common.notify import Notification, NotificationKind, Notifier, Severity
from common.records import today_ist
from common.selectors import ExpirySelector, StrikeSelector
from common.settings import Settings
from common.symbols import INDEX_QUOTES, SymbolMaster

log = get_logger("jobs.symbols")

COLUMNS = 21
MAX_BAD_LINE_RATIO = 0.01  # "nearly every row": a few odd lines are tolerated, a broken file is not
MIN_SHARE_OF_PREVIOUS = 0.5
# Underlyings that must resolve when their master is configured; other index
# underlyings are checked whenever the master lists them.
REQUIRED_UNDERLYINGS = {"NSE_FO": ("NIFTY",), "BSE_FO": ("SENSEX",)}
_CHUNK = 1 << 20


@dataclass
class SymbolsDeps:
    """What the symbols job needs. Timeouts: ``download_timeout`` per socket
    operation, ``download_deadline`` for a whole file."""

    settings: Settings
    masters: MasterRepository
    notifier: Notifier
    download_timeout: float = 20.0
    download_deadline: float = 120.0
    min_rows: int = 10  # per file, when there is no previous version to compare with


def run_symbols(deps: SymbolsDeps, now: datetime) -> dict[str, Any]:
    """Refresh the symbol master once; returns a JSON-able report. Never raises."""
    started = time.monotonic()
    names = list(deps.settings.symbol_masters)
    source = deps.settings.symbol_master_base
    current: MasterPointer | None = None
    try:
        current = deps.masters.pointer()
        files = {name: download(f"{source}/{name}.csv", max_bytes=deps.settings.master_max_bytes,
                                timeout=deps.download_timeout, deadline=deps.download_deadline)
                 for name in names}
        digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        if current is not None and current.sha256 == digests:
            deps.masters.mark_checked(now)
            report = {"ok": True, "status": "unchanged", "version": current.version}
        else:
            master = validate(files, current, today=today_ist(now), min_rows=deps.min_rows)
            version = deps.masters.publish(files, source=source, now=now, master=master)
            report = {"ok": True, "status": "updated", "version": version,
                      "previous_version": current.version if current else None,
                      "rows": {name: count_rows(data)[0] for name, data in files.items()},
                      "bytes": {name: len(data) for name, data in files.items()},
                      "data_date": master.data_date or None}
    except Exception as exc:  # any failure: keep the current version, tell the trader
        report = _failed(deps, exc, current, now)
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


def _failed(deps: SymbolsDeps, exc: Exception, current: MasterPointer | None, now: datetime) -> dict[str, Any]:
    if isinstance(exc, RouterError):
        error, reason = exc.code, exc.message
    else:  # storage or Firestore: only the class name, its text may hold internals
        error, reason = "MASTER_STORE_FAILED", f"Cloud Storage or Firestore failed ({type(exc).__name__})."
    retryable = not isinstance(exc, MasterInvalid)
    kept = current.version if current else None
    log.error("symbol master refresh failed", extra={"fields": {"error": error, "reason": reason, "kept": kept}})
    result = deps.notifier.send(Notification(
        kind=NotificationKind.MASTER_REFRESH_FAILED, severity=Severity.ERROR,
        title="Symbol master refresh failed", text=reason, at=now,
        fields={"kept_version": kept or "none (orders cannot be resolved)"}))
    return {"ok": False, "status": "failed", "error": error, "reason": reason, "kept_version": kept,
            "retryable": retryable, "notified": result.pubsub.status == "sent"}


# --- download -------------------------------------------------------------------


def download(url: str, *, max_bytes: int, timeout: float, deadline: float) -> bytes:
    """The body at ``url`` (http, https or file), streamed; at most ``max_bytes``.

    Raises :class:`MasterDownloadFailed` for connection failures, HTTP errors,
    timeouts and short reads, :class:`MasterInvalid` if the file is too large.
    """
    name = urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1] or url
    if urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise MasterDownloadFailed(f"{name}: the master URL must be http(s) or file.")
    request = urllib.request.Request(url, headers={"User-Agent": "tv-fyers-router/symbols"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise MasterInvalid(f"{name} is {int(declared):,} bytes, above the {max_bytes:,}-byte cap.")
            chunks, total = [], 0
            while chunk := response.read(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise MasterInvalid(f"{name} exceeds the {max_bytes:,}-byte cap.")
                if time.monotonic() - started > deadline:
                    raise MasterDownloadFailed(f"{name}: the download took longer than {deadline:g} s.")
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise MasterDownloadFailed(f"{name}: HTTP {exc.code} from the master source.") from None
    except urllib.error.URLError as exc:
        reason = exc.reason if isinstance(exc.reason, BaseException) else None
        if isinstance(reason, TimeoutError):
            raise MasterDownloadFailed(f"{name}: no answer within {timeout:g} s.") from None
        raise MasterDownloadFailed(f"{name}: connection failed ({type(reason or exc).__name__}).") from None
    except TimeoutError:
        raise MasterDownloadFailed(f"{name}: the download stalled for {timeout:g} s.") from None
    except (http.client.HTTPException, OSError) as exc:
        raise MasterDownloadFailed(f"{name}: the download broke off ({type(exc).__name__}).") from None
    if declared is not None and declared.isdigit() and total != int(declared):
        raise MasterDownloadFailed(f"{name}: got {total:,} of {int(declared):,} bytes.")
    return b"".join(chunks)


# --- validation -------------------------------------------------------------------


def count_rows(data: bytes) -> tuple[int, int]:
    """(rows with the 21 master columns, other non-blank lines). Extra commas can
    only come from the free-text description, so more than 21 fields still count."""
    rows = bad = 0
    for line in data.split(b"\n"):
        if line.count(b",") >= COLUMNS - 1:
            rows += 1
        elif line.strip():
            bad += 1
    return rows, bad


def validate(files: dict[str, bytes], current: MasterPointer | None, *, today: date, min_rows: int) -> SymbolMaster:
    """Check each file and the merged index (see the module docstring); the parsed master.

    Raises :class:`MasterInvalid` naming the file and the rule it broke.
    """
    texts = []
    for name, data in files.items():
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise MasterInvalid(f"{name} is not UTF-8 text.") from None
        rows, bad = count_rows(data)
        if bad > MAX_BAD_LINE_RATIO * (rows + bad):
            raise MasterInvalid(f"{name}: {bad:,} of {rows + bad:,} lines lack the {COLUMNS} columns of a master row.")
        if rows < min_rows:
            raise MasterInvalid(f"{name} has {rows:,} row(s); at least {min_rows:,} are expected.")
        previous = current.rows.get(name) if current else None
        if previous and rows < MIN_SHARE_OF_PREVIOUS * previous:
            raise MasterInvalid(f"{name} has {rows:,} rows, less than half the {previous:,} "
                                f"of version {current.version}: truncated?")  # type: ignore[union-attr]
    master = SymbolMaster.from_csv(*texts)
    if master.stats.malformed > MAX_BAD_LINE_RATIO * (master.stats.rows + master.stats.malformed):
        raise MasterInvalid(f"{master.stats.malformed:,} rows have unreadable values "
                            f"(of {master.stats.rows + master.stats.malformed:,}).")
    for name in files:
        for underlying in REQUIRED_UNDERLYINGS.get(name, ()):
            _check_resolves(master, underlying, today)
    required = {u for name in files for u in REQUIRED_UNDERLYINGS.get(name, ())}
    for underlying in sorted(set(INDEX_QUOTES) & set(master.underlyings()) - required):
        _check_resolves(master, underlying, today)
    if any(name.endswith("_CM") for name in files) and not master.has_cash_master:
        raise MasterInvalid("The cash-market master has no equity rows.")
    return master


def _check_resolves(master: SymbolMaster, underlying: str, today: date) -> None:
    """The resolver picks a contract for ``underlying`` expiring on or after ``today``:
    the nearest option at the money (price: the middle of its ladder), else the nearest future."""
    try:
        upcoming = [d for d in master.expiries(underlying) if d >= today]
        if upcoming:
            calls = master.strikes(underlying, upcoming[0], "CE")
            option_type, strikes = ("CE", calls) if calls else ("PE", master.strikes(underlying, upcoming[0], "PE"))
            middle = strikes[len(strikes) // 2] if strikes else 1.0
            master.resolve(underlying, option_type=option_type, expiry=ExpirySelector("WEEKLY"),
                           strike=StrikeSelector("ATM"), today=today, price_of=lambda _: middle)
        else:
            master.resolve_future(underlying, 1, today)
    except SymbolError as exc:
        raise MasterInvalid(f"{underlying} cannot be resolved for {today.isoformat()}: {exc.message}") from None
