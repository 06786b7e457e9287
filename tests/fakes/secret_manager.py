"""A small local fake of the Secret Manager REST API (v1), for the real client's REST transport.

Serves what ``SecretManagerServiceClient(transport="rest")`` sends (paths and JSON
shapes as in ``secretmanager_v1/.../transports/rest_base.py``):

* ``GET  /v1/projects/P/secrets/S/versions/V:access``  (``V`` a number or ``latest``,
  the most recently created version, as the API documents)
* ``POST /v1/projects/P/secrets/S:addVersion``          body ``{"payload": {"data": b64}}``
* ``GET  /v1/projects/P/secrets/S/versions``            ``filter=state:ENABLED`` supported
* ``POST /v1/projects/P/secrets/S/versions/N:disable`` and ``:enable``

Errors use Google's JSON error shape, so the client raises ``NotFound`` (404),
``FailedPrecondition`` (400) and so on. Secrets exist only once created with
:meth:`FakeSecretManager.create_secret`. Usage::

    with FakeSecretManager() as fake:
        fake.create_secret("p", "FYERS_ACCESS_TOKEN", "tok-1")
        client = SecretManagerServiceClient(transport="rest", ..., client_options={"api_endpoint": fake.endpoint})
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

_STATES = {"ENABLED": 1, "DISABLED": 2, "DESTROYED": 3}
_STATUS = {400: "FAILED_PRECONDITION", 404: "NOT_FOUND", 405: "UNIMPLEMENTED"}

_SECRET = r"/v1/(?P<secret>projects/[^/]+/secrets/[^/:]+)"
_ROUTES = [
    ("GET", re.compile(_SECRET + r"/versions/(?P<version>[^/:]+):access"), "access"),
    ("POST", re.compile(_SECRET + r":addVersion"), "add_version"),
    ("GET", re.compile(_SECRET + r"/versions"), "list_versions"),
    ("POST", re.compile(_SECRET + r"/versions/(?P<version>\d+):(?P<action>disable|enable)"), "change_state"),
]


@dataclass
class Version:
    number: int
    data: bytes
    state: str = "ENABLED"
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"))


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FakeSecretManager:
    """The fake's state (secrets and their versions) and its HTTP server on 127.0.0.1."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: dict[str, list[Version]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path), in arrival order
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- test-facing API -----------------------------------------------------------

    def create_secret(self, project: str, secret: str, *values: str) -> None:
        """Create a secret, with one enabled version per value (oldest first)."""
        with self._lock:
            versions = self._secrets.setdefault(f"projects/{project}/secrets/{secret}", [])
            for value in values:
                versions.append(Version(len(versions) + 1, value.encode("utf-8")))

    def versions(self, project: str, secret: str) -> list[tuple[int, str, str]]:
        """``(number, state, value)`` of each version, oldest first."""
        with self._lock:
            return [
                (v.number, v.state, v.data.decode("utf-8"))
                for v in self._secrets[f"projects/{project}/secrets/{secret}"]
            ]

    def set_state(self, project: str, secret: str, number: int, state: str) -> None:
        with self._lock:
            self._secrets[f"projects/{project}/secrets/{secret}"][number - 1].state = state

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeSecretManager:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeSecretManager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the API ---------------------------------------------------------------------

    def _versions(self, secret: str) -> list[Version]:
        try:
            return self._secrets[secret]
        except KeyError:
            raise _ApiError(404, f"Secret [{secret}] not found.") from None

    def _version(self, secret: str, version: str) -> Version:
        versions = self._versions(secret)
        if version == "latest":
            if not versions:
                raise _ApiError(404, f"Secret [{secret}] has no versions.")
            return versions[-1]
        number = int(version) if version.isdigit() else 0
        if not 1 <= number <= len(versions):
            raise _ApiError(404, f"Secret Version [{secret}/versions/{version}] not found.")
        return versions[number - 1]

    def _resource(self, secret: str, v: Version, numeric: bool) -> dict:
        return {
            "name": f"{secret}/versions/{v.number}",
            "createTime": v.created,
            "state": _STATES[v.state] if numeric else v.state,
        }

    def access(self, secret: str, version: str, *, query: dict, body: dict, numeric: bool) -> dict:
        found = self._version(secret, version)
        if found.state != "ENABLED":
            raise _ApiError(400, f"{secret}/versions/{found.number} is in {found.state} state.")
        return {
            "name": f"{secret}/versions/{found.number}",
            "payload": {"data": base64.b64encode(found.data).decode("ascii")},
        }

    def add_version(self, secret: str, *, query: dict, body: dict, numeric: bool) -> dict:
        versions = self._versions(secret)
        data = base64.b64decode(body.get("payload", {}).get("data", ""))
        versions.append(Version(len(versions) + 1, data))
        return self._resource(secret, versions[-1], numeric)

    def list_versions(self, secret: str, *, query: dict, body: dict, numeric: bool) -> dict:
        versions = self._versions(secret)
        wanted = query.get("filter", [""])[0]
        if wanted:
            match = re.fullmatch(r"state:(ENABLED|DISABLED|DESTROYED)", wanted)
            if match is None:
                raise _ApiError(400, f"The fake supports only state:X filters, not {wanted!r}.")
            versions = [v for v in versions if v.state == match.group(1)]
        # Newest first, as the API lists them.
        listed = [self._resource(secret, v, numeric) for v in reversed(versions)]
        return {"versions": listed, "totalSize": len(listed)}

    def change_state(
        self, secret: str, version: str, action: str, *, query: dict, body: dict, numeric: bool
    ) -> dict:
        found = self._version(secret, version)
        if found.state == "DESTROYED":
            raise _ApiError(400, f"{secret}/versions/{found.number} is destroyed.")
        found.state = "DISABLED" if action == "disable" else "ENABLED"
        return self._resource(secret, found, numeric)

    def _dispatch(self, method: str, raw_path: str, raw_body: bytes) -> tuple[int, dict]:
        url = urlsplit(raw_path)
        query = parse_qs(url.query)
        # The REST transport asks for numeric enums with `$alt=json;enum-encoding=int`.
        numeric = "enum-encoding=int" in query.get("$alt", [""])[0]
        body = json.loads(raw_body) if raw_body else {}
        for route_method, pattern, handler in _ROUTES:
            match = pattern.fullmatch(url.path)
            if match is None or route_method != method:
                continue
            with self._lock:
                self.requests.append((method, url.path))
                try:
                    return 200, getattr(self, handler)(**match.groupdict(), query=query, body=body, numeric=numeric)
                except _ApiError as exc:
                    return exc.status, _error(exc.status, exc.message)
        return 404, _error(404, f"No route for {method} {url.path}.")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                status, payload = fake._dispatch(method, self.path, self.rfile.read(length))
                data = json.dumps(payload).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._serve("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._serve("POST")

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def _error(status: int, message: str) -> dict:
    return {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}}
