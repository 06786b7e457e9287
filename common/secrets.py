"""The secret store: where the router's secrets live, behind one small interface.

Secrets (named in ``common/secret_table.py``) are read by name. Backends:

* :class:`SecretManagerStore`: Google Secret Manager, in the cloud.
* :class:`EnvSecretStore`: environment variables plus a file overlay, for local runs.
* :class:`InMemorySecretStore`: a dict, for tests.
* :class:`CachedSecretStore`: a short-lived cache in front of any of them.

No message, log line or exception raised here ever holds a secret's value.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from common import secret_table
from common.errors import ConfigError, SecretNotFound

if TYPE_CHECKING:
    from common.settings import Settings

log = logging.getLogger(__name__)

SECRET_NAMES = secret_table.NAMES  # names, and who may read which: common/secret_table.py

# Where local runs keep secrets written by `put` (the login flow's fresh token), so that
# the other local functions, in other processes, read it too.

# Secret Manager's secret ids: letters, digits, '-' and '_'. Enforced for every backend
# so that a name can never become a path outside the overlay directory.
_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"Invalid secret name {name!r}.")
    return name


class SecretStore(Protocol):
    """Reads and writes secrets by name."""

    def get(self, name: str) -> str:
        """The secret's current value; raises :class:`SecretNotFound` if it has none."""
        ...

    def get_optional(self, name: str) -> str | None:
        """The secret's current value, or ``None`` if it has none."""
        ...

    def put(self, name: str, value: str) -> None:
        """Make ``value`` the secret's current value."""
        ...


class _GetOptional:
    """``get_optional`` in terms of ``get``, shared by the backends."""

    def get(self, name: str) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def get_optional(self, name: str) -> str | None:
        try:
            return self.get(name)
        except SecretNotFound:
            return None


class InMemorySecretStore(_GetOptional):
    """Secrets in a dict. For tests; thread-safe."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values = dict(values or {})
        self._lock = threading.Lock()

    def get(self, name: str) -> str:
        with self._lock:
            value = self._values.get(_check_name(name))
        if value is None:
            raise SecretNotFound(f"Secret {name} is not set.", secret=name)
        return value

    def put(self, name: str, value: str) -> None:
        with self._lock:
            self._values[_check_name(name)] = value


class EnvSecretStore(_GetOptional):
    """Secrets from environment variables of the same name, overlaid by files.

    ``put`` writes ``overlay_dir/NAME`` (mode 0600, atomically) and ``get`` prefers that
    file to the environment, so a token stored by the local login flow is seen by the
    other local functions, which run in other processes. An empty variable counts as unset.
    """

    def __init__(self, environ: Mapping[str, str], overlay_dir: Path | None = None) -> None:
        self._environ = environ
        self._overlay_dir = Path(overlay_dir) if overlay_dir is not None else None

    def get(self, name: str) -> str:
        _check_name(name)
        if self._overlay_dir is not None:
            try:
                return (self._overlay_dir / name).read_text(encoding="utf-8")
            except FileNotFoundError:
                pass
        value = self._environ.get(name, "")
        if value == "":
            raise SecretNotFound(f"Secret {name} is not set.", secret=name)
        return value

    def put(self, name: str, value: str) -> None:
        _check_name(name)
        if self._overlay_dir is None:
            raise ConfigError(f"Cannot store secret {name}: no overlay directory is configured.")
        self._overlay_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp creates the file 0600; the rename makes readers see old or new, never half.
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self._overlay_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(value)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._overlay_dir / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class SecretManagerStore(_GetOptional):
    """Secrets in Google Secret Manager (``projects/P/secrets/NAME``).

    The client is created on first use, under a lock, and the Google library is imported
    only then. Every call carries ``timeout`` (seconds, the whole call including retries).
    Reads retry briefly on "unavailable"/"exhausted"; writes are never retried, since
    a second ``addVersion`` would create a second version.
    """

    def __init__(self, project: str, client: Any = None, *, timeout: float) -> None:
        if not project:
            raise ConfigError("Secret Manager needs a project.")
        self._project = project
        self._client = client
        self._timeout = timeout
        self._lock = threading.Lock()
        self._read_retry: Any = None

    def _get_client(self) -> Any:
        if self._read_retry is None:
            with self._lock:
                if self._read_retry is None:
                    self._read_retry = self._first_use()
        return self._client

    def _first_use(self) -> Any:
        """Import the library, create the client if none was given; return the read retry."""
        # The client's DEBUG records carry request payloads, i.e. the value that `put`
        # sends: keep that logger above DEBUG unless someone configured it on purpose.
        client_log = logging.getLogger("google.cloud.secretmanager_v1")
        if client_log.level == logging.NOTSET:
            client_log.setLevel(logging.INFO)
        from google.api_core import exceptions, retry

        if self._client is None:
            from google.cloud import secretmanager

            self._client = secretmanager.SecretManagerServiceClient()
        return retry.Retry(
            predicate=retry.if_exception_type(exceptions.ServiceUnavailable, exceptions.ResourceExhausted),
            initial=0.1,
            maximum=1.0,
            timeout=self._timeout,
        )

    def _secret_path(self, name: str) -> str:
        return f"projects/{self._project}/secrets/{_check_name(name)}"

    def get(self, name: str) -> str:
        from google.api_core import exceptions

        client = self._get_client()
        try:
            response = client.access_secret_version(
                name=f"{self._secret_path(name)}/versions/latest",
                timeout=self._timeout,
                retry=self._read_retry,
            )
        except exceptions.NotFound:
            raise SecretNotFound(f"Secret {name} has no version.", secret=name) from None
        except exceptions.BadRequest:
            # The newest version is disabled or destroyed: there is no usable value.
            # (FAILED_PRECONDITION; over REST only its HTTP status, 400, reaches us, and
            # the request carries nothing else that could be bad: the name is checked.)
            raise SecretNotFound(
                f"Secret {name}'s latest version is not enabled.", secret=name
            ) from None
        return response.payload.data.decode("utf-8")

    def put(self, name: str, value: str) -> None:
        """Add a version holding ``value``, then disable the older enabled versions.

        Raises :class:`SecretNotFound` if the secret itself does not exist (it is created
        at deploy time, with its IAM). If disabling an old version fails, the new value
        is already current: that is logged as a warning, not raised (only cost is at stake).
        """
        from google.api_core import exceptions

        client = self._get_client()
        parent = self._secret_path(name)
        try:
            added = client.add_secret_version(
                parent=parent,
                payload={"data": value.encode("utf-8")},
                timeout=self._timeout,
                retry=None,
            )
        except exceptions.NotFound:
            raise SecretNotFound(f"Secret {name} does not exist.", secret=name) from None
        self._disable_older(client, parent, keep=added.name)

    def _disable_older(self, client: Any, parent: str, keep: str) -> None:
        """Disable the enabled versions older than ``keep``.

        Only older ones: a concurrent ``put`` may have added a newer version, which must
        stay enabled, since ``latest`` is simply the newest version, enabled or not.
        """
        from google.cloud.secretmanager import SecretVersion

        kept = _version_number(keep)
        try:
            versions = client.list_secret_versions(
                request={"parent": parent, "filter": "state:ENABLED"},
                timeout=self._timeout,
                retry=None,
            )
            stale = [
                v.name
                for v in versions
                if v.state == SecretVersion.State.ENABLED and _version_number(v.name) < kept
            ]
        except Exception as exc:  # noqa: BLE001 - the new version is in place; see put()
            log.warning("Could not list old versions of %s to disable them: %s", parent, type(exc).__name__)
            return
        for version in stale:
            try:
                client.disable_secret_version(name=version, timeout=self._timeout, retry=None)
            except Exception as exc:  # noqa: BLE001 - same
                log.warning("Could not disable old secret version %s: %s", version, type(exc).__name__)


def _version_number(version_name: str) -> int:
    """``projects/P/secrets/S/versions/7`` -> 7 (version ids are increasing integers)."""
    return int(version_name.rsplit("/", 1)[1])


class CachedSecretStore(_GetOptional):
    """Caches another store's values for ``ttl_seconds`` (0 disables the cache).

    Thread-safe. :meth:`invalidate` drops a name, e.g. after the broker says the cached
    access token is dead; a read that was already under way when ``invalidate`` ran does
    not put its (possibly stale) value back into the cache.
    """

    def __init__(
        self,
        inner: SecretStore,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, float]] = {}  # name -> (value, fetched at)
        self._generation: dict[str, int] = {}

    def get(self, name: str) -> str:
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and self._clock() - entry[1] < self._ttl:
                return entry[0]
            generation = self._generation.get(name, 0)
        fetched_at = self._clock()
        value = self._inner.get(name)  # outside the lock: it may be a network call
        with self._lock:
            if self._ttl > 0 and self._generation.get(name, 0) == generation:
                self._entries[name] = (value, fetched_at)
        return value

    def put(self, name: str, value: str) -> None:
        self._inner.put(name, value)
        self.invalidate(name)

    def invalidate(self, name: str) -> None:
        """Forget ``name``: the next ``get`` reads the inner store."""
        with self._lock:
            self._entries.pop(name, None)
            self._generation[name] = self._generation.get(name, 0) + 1


def make_secret_store(
    settings: Settings,
    environ: Mapping[str, str],
    *,
    overlay_dir: Path | None = None,
    timeout: float = 5.0,
) -> SecretStore:
    """The store that ``settings.secret_backend`` names (uncached; wrap it if needed)."""
    if settings.secret_backend == "secretmanager":
        return SecretManagerStore(settings.secrets_project, timeout=timeout)
    return EnvSecretStore(environ, overlay_dir or Path(settings.secret_overlay_dir))
