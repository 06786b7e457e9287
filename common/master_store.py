"""Versioned symbol masters in the artifact store, found through a Firestore pointer.

Layout of one version (``20261123T081500-1a2b3c4d``: IST time of the refresh, then
the start of a digest of the content, so two refreshes can never share names)::

    symbol-master/<version>/NSE_FO.csv     the raw files, as downloaded
    symbol-master/<version>/index.bin      SymbolMaster.to_bytes() of all of them

and ``system/symbol_master`` (:class:`MasterPointer`) names the current version.

Writers (the ``symbols`` job, tests) call :meth:`MasterRepository.publish`: every
object is written first and the pointer moved last, in a transaction that never
moves it backwards. A reader that follows the pointer always finds whole objects.

Readers (the order worker) call :meth:`MasterRepository.current`: the pointed
index is loaded on first use and the pointer re-read at most every
``check_seconds``, so a new version is picked up without a restart. A failed
check keeps serving the version already loaded.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Mapping

from pydantic import BaseModel, ConfigDict

from common.errors import MasterUnavailable
from common.logs import get_logger
from common.records import IST, SYSTEM
from common.symbols import SymbolMaster

if TYPE_CHECKING:
    from common.artifacts import ArtifactStore

log = get_logger(__name__)

POINTER_DOC = "symbol_master"
PREFIX = "symbol-master"
INDEX = "index"  # the key of the compact index in MasterPointer.objects
_MASTER_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")  # Fyers' file stems: NSE_FO, BSE_CM...


class MasterPointer(BaseModel):
    """``system/symbol_master``: which stored version is current, and what it holds."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: str
    objects: dict[str, str]  # master name -> raw CSV object, and INDEX -> the compact index
    rows: dict[str, int]  # master name -> rows with 21 columns
    sha256: dict[str, str]  # master name -> hex digest of the raw file
    refreshed_at: datetime  # when this version was published
    checked_at: datetime | None = None  # when the source last served exactly this content
    source: str  # the URL base the files came from
    previous_version: str | None = None
    data_date: str | None = None  # the newest "last update" date (column 8) in the rows

    @property
    def masters(self) -> list[str]:
        """The master names in this version (``NSE_FO``...), sorted."""
        return sorted(name for name in self.objects if name != INDEX)

    @property
    def index_object(self) -> str:
        return self.objects[INDEX]


@dataclass(frozen=True)
class _Loaded:
    version: str
    master: SymbolMaster


def version_name(now: datetime, digests: Mapping[str, str]) -> str:
    """``20261123T081500-1a2b3c4d``: sortable by time, distinct for distinct content."""
    combined = hashlib.sha256("".join(f"{k}={digests[k]};" for k in sorted(digests)).encode()).hexdigest()
    return f"{now.astimezone(IST):%Y%m%dT%H%M%S}-{combined[:8]}"


class MasterRepository:
    """Publishes symbol master versions and serves the current one. Thread-safe."""

    def __init__(
        self,
        db: Any,
        artifacts: ArtifactStore,
        *,
        check_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 10.0,
    ) -> None:
        self._db = db
        self._artifacts = artifacts
        self._check_seconds = check_seconds
        self._clock = clock
        self._timeout = timeout
        self._lock = threading.Lock()  # one loader at a time
        self._loaded: _Loaded | None = None
        self._checked_at: float | None = None

    @property
    def _ref(self) -> Any:
        return self._db.collection(SYSTEM).document(POINTER_DOC)

    # --- readers ----------------------------------------------------------------

    def pointer(self) -> MasterPointer | None:
        """The pointer as stored now (None if no version was ever published). Raises on read failure,
        after retrying transient errors for at most ``timeout`` seconds (the library's default is 300)."""
        from google.api_core.retry import Retry

        return self._read_pointer(retry=Retry(initial=0.2, maximum=1.0, timeout=self._timeout))

    def _read_pointer(self, **retry: Any) -> MasterPointer | None:
        snap = self._ref.get(timeout=self._timeout, **retry)
        return MasterPointer.model_validate(snap.to_dict()) if snap.exists else None

    @property
    def loaded_version(self) -> str | None:
        """The version :meth:`current` serves, if one is loaded."""
        loaded = self._loaded
        return loaded.version if loaded else None

    def current(self) -> SymbolMaster:
        """The current symbol master. Raises :class:`MasterUnavailable` if none was ever loadable.

        While a version is loaded, at most one thread re-checks the pointer (when
        ``check_seconds`` have passed) and the others keep serving the loaded one.
        """
        loaded = self._loaded
        if loaded is not None:
            if self._check_due() and self._lock.acquire(blocking=False):
                try:
                    if self._check_due():
                        self._refresh()
                finally:
                    self._lock.release()
            return self._loaded.master  # type: ignore[union-attr]  # never unset once set
        with self._lock:
            if self._loaded is None:
                problem = self._refresh()
                if self._loaded is None:
                    raise MasterUnavailable(f"No symbol master is loaded: {problem}")
            return self._loaded.master

    def _check_due(self) -> bool:
        return self._checked_at is None or self._clock() - self._checked_at >= self._check_seconds

    def _refresh(self) -> str:
        """Load the pointed version if it is not the loaded one. Never raises; returns what went wrong."""
        self._checked_at = self._clock()
        try:
            # One attempt: the caller is serving an order, and the next check comes soon.
            pointer = self._read_pointer(retry=None)
        except Exception as exc:  # keep serving what we have; say why once per check
            log.warning("symbol master pointer unreadable", extra={"fields": {"error": type(exc).__name__}})
            return f"the pointer could not be read ({type(exc).__name__})."
        if pointer is None:
            return "none has been published yet; run the symbols job."
        if self._loaded is not None and self._loaded.version == pointer.version:
            return ""
        try:
            master = self._load(pointer)
        except Exception as exc:
            log.error("symbol master version unloadable",
                      extra={"fields": {"version": pointer.version, "error": type(exc).__name__}})
            return f"version {pointer.version} could not be loaded ({type(exc).__name__})."
        previous = self.loaded_version
        self._loaded = _Loaded(pointer.version, master)
        log.info("symbol master loaded", extra={"fields": {
            "version": pointer.version, "previous": previous, "rows": master.stats.rows}})
        return ""

    def _load(self, pointer: MasterPointer) -> SymbolMaster:
        """The compact index; the raw files if the index is missing or unreadable."""
        try:
            return SymbolMaster.from_bytes(self._artifacts.get_bytes(pointer.index_object))
        except Exception as exc:
            log.warning("symbol index unusable; parsing the raw files",
                        extra={"fields": {"version": pointer.version, "error": type(exc).__name__}})
        return SymbolMaster.from_csv(*(self._artifacts.get_bytes(pointer.objects[name]) for name in pointer.masters))

    # --- writers ----------------------------------------------------------------

    def publish(
        self,
        raw: Mapping[str, bytes | str],
        *,
        source: str,
        now: datetime,
        master: SymbolMaster | None = None,
    ) -> str:
        """Store the raw masters and their index as a new version, then point at it.

        ``raw`` maps Fyers' file stem (``NSE_FO``) to the file's content; ``master``
        is the already-parsed merge of them, if the caller has it. Returns the new
        version. The pointer is moved last and never backwards: if a newer version
        was published meanwhile, it stays current.
        """
        if not raw:
            raise ValueError("publish needs at least one master")
        files = {name: data.encode("utf-8") if isinstance(data, str) else data for name, data in raw.items()}
        for name in files:
            if not _MASTER_NAME.match(name):
                raise ValueError(f"invalid master name {name!r}")
        if master is None:
            master = SymbolMaster.from_csv(*files.values())
        digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        version = version_name(now, digests)
        objects = {}
        for name, data in files.items():
            objects[name] = f"{PREFIX}/{version}/{name}.csv"
            self._artifacts.put_bytes(objects[name], data, "text/csv")
        objects[INDEX] = f"{PREFIX}/{version}/index.bin"
        self._artifacts.put_bytes(objects[INDEX], master.to_bytes())
        pointer = MasterPointer(
            version=version, objects=objects, rows={name: _rows(data) for name, data in files.items()},
            sha256=digests, refreshed_at=now, checked_at=now, source=source, data_date=master.data_date or None,
        )
        if not self._move_pointer(pointer):
            log.warning("a newer symbol master was published meanwhile; the pointer stays",
                        extra={"fields": {"version": version}})
        return version

    def mark_checked(self, now: datetime) -> None:
        """Note that the source still serves the current version's content (the health
        job measures the master's age from this, so an unchanged file is not stale)."""
        self._ref.update({"checked_at": now}, timeout=self._timeout)

    def _move_pointer(self, pointer: MasterPointer) -> bool:
        from google.cloud import firestore

        ref = self._ref

        @firestore.transactional
        def move(transaction: Any) -> bool:
            snap = ref.get(transaction=transaction, timeout=self._timeout)
            previous = snap.to_dict().get("version") if snap.exists else None
            if previous is not None and previous >= pointer.version:
                return False
            body = pointer.model_copy(update={"previous_version": previous}).model_dump(exclude_none=True)
            transaction.set(ref, body)
            return True

        return move(self._db.transaction())


def _rows(data: bytes) -> int:
    """Lines with at least the 21 columns of a master row (a comma in the description adds more)."""
    return sum(1 for line in data.split(b"\n") if line.count(b",") >= 20)
