"""The artifact store: named blobs (symbol masters, reports) in a directory or a GCS bucket.

Names are relative, ``/``-separated paths (``masters/NSE_FO.csv``). Backends:

* :class:`LocalDirStore`: files under a root directory, written atomically; local runs.
* :class:`GcsStore`: objects in one Cloud Storage bucket; in the cloud.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from common.errors import ArtifactNotFound, ConfigError

if TYPE_CHECKING:
    from common.settings import Settings

_TMP_PREFIX = ".tmp-"


def _check_name(name: str) -> str:
    """Refuse names that are empty, absolute, or could climb out of the store."""
    parts = PurePosixPath(name).parts if isinstance(name, str) else ()
    if (
        not parts
        or name.startswith("/")
        or name.endswith("/")
        or "\\" in name
        or any(part in ("", ".", "..") or part.startswith(_TMP_PREFIX) for part in parts)
        or "/".join(parts) != name
    ):
        raise ConfigError(f"Invalid artifact name {name!r}.")
    return name


class ArtifactStore(Protocol):
    """Stores and reads named blobs."""

    def put_bytes(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` under ``name``, replacing any previous content."""
        ...

    def get_bytes(self, name: str) -> bytes:
        """The content stored under ``name``; raises :class:`ArtifactNotFound` if none."""
        ...

    def exists(self, name: str) -> bool:
        """Whether something is stored under ``name``."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """The stored names that start with ``prefix``, sorted."""
        ...


class LocalDirStore:
    """Artifacts as files under ``root``. Writes are atomic: readers see old or new content."""

    def __init__(self, root: Path | str) -> None:
        self._root = Path(root)

    def _path(self, name: str) -> Path:
        return self._root.joinpath(*_check_name(name).split("/"))

    def put_bytes(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ArtifactNotFound(f"Artifact {name} does not exist.", artifact=name) from None

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def list(self, prefix: str = "") -> list[str]:
        if not self._root.is_dir():
            return []
        names = []
        for directory, _, files in os.walk(self._root):
            relative = Path(directory).relative_to(self._root).as_posix()
            for file in files:
                if file.startswith(_TMP_PREFIX):
                    continue
                name = file if relative == "." else f"{relative}/{file}"
                if name.startswith(prefix):
                    names.append(name)
        return sorted(names)


class GcsStore:
    """Artifacts as objects in the Cloud Storage bucket ``bucket``.

    The client is created on first use, under a lock, and ``google.cloud.storage`` is
    imported only then. Each request has ``timeout`` seconds; transient failures are
    retried (writing the same bytes again is harmless) for at most ``timeout`` more.
    """

    def __init__(self, bucket: str, client: Any = None, *, timeout: float) -> None:
        if not bucket:
            raise ConfigError("The GCS artifact store needs a bucket (ARTIFACT_BUCKET).")
        self._bucket_name = bucket
        self._client = client
        self._timeout = timeout
        self._lock = threading.Lock()
        self._bucket: Any = None
        self._retry: Any = None
        self._not_found: type[Exception] = Exception

    def _get_bucket(self) -> Any:
        if self._bucket is None:
            with self._lock:
                if self._bucket is None:
                    from google.api_core.exceptions import NotFound
                    from google.cloud import storage
                    from google.cloud.storage.retry import DEFAULT_RETRY

                    if self._client is None:
                        self._client = storage.Client()
                    self._retry = DEFAULT_RETRY.with_timeout(self._timeout)
                    self._not_found = NotFound
                    self._bucket = self._client.bucket(self._bucket_name)
        return self._bucket

    def put_bytes(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        blob = self._get_bucket().blob(_check_name(name))
        blob.upload_from_string(data, content_type=content_type, timeout=self._timeout, retry=self._retry)

    def get_bytes(self, name: str) -> bytes:
        blob = self._get_bucket().blob(_check_name(name))
        try:
            return blob.download_as_bytes(timeout=self._timeout, retry=self._retry)
        except self._not_found:
            raise ArtifactNotFound(f"Artifact {name} does not exist.", artifact=name) from None

    def exists(self, name: str) -> bool:
        blob = self._get_bucket().blob(_check_name(name))
        return bool(blob.exists(timeout=self._timeout, retry=self._retry))

    def list(self, prefix: str = "") -> list[str]:
        bucket = self._get_bucket()
        blobs = bucket.list_blobs(prefix=prefix or None, timeout=self._timeout, retry=self._retry)
        return sorted(blob.name for blob in blobs)


def make_artifact_store(settings: Settings, *, timeout: float = 30.0) -> ArtifactStore:
    """The store that ``settings.artifact_backend`` names."""
    if settings.artifact_backend == "gcs":
        return GcsStore(settings.artifact_bucket, timeout=timeout)
    return LocalDirStore(settings.artifact_dir)
