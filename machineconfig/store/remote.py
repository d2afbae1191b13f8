"""`RemoteNodeAPI`: the daemon's `NodeAPI` over the server's node API (JSON over HTTPS, bearer
node token renewed at half-life). Standard library only, since the daemon is synchronous; one
connection per call, every call bounded by a timeout; HTTP errors become the store's exception
types. Retrying is the caller's.
"""
from __future__ import annotations

import http.client
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from machineconfig import constants
from machineconfig.rendered_config import RenderedConfig
from machineconfig.store.base import (
    ConflictError,
    ForbiddenError,
    NodeRecord,
    NotFoundError,
    StoreError,
    UnavailableError,
    rendered_config,
)

log = logging.getLogger(__name__)

# Extra time the client waits beyond a long poll's own timeout before calling the server dead.
_WATCH_SLACK = 15.0


def _error_for(status: int, text: str) -> StoreError:
    message = f"node API: HTTP {status}: {text}" if text else f"node API: HTTP {status}"
    if status in (401, 403):
        return ForbiddenError(message)
    if status == 404:
        return NotFoundError(message)
    if status == 409:
        return ConflictError(message)
    if status == 429 or status >= 500:
        return UnavailableError(message)
    return StoreError(message)


def _token_of(answer: Any, what: str) -> tuple[str, float]:
    """The token and its lifetime (seconds) from a register or renew answer."""
    if not isinstance(answer, dict) or not isinstance(answer.get("token"), str) \
            or not isinstance(answer.get("node"), dict):
        raise StoreError(f"node API: {what}: malformed answer")
    expires_in = answer.get("expiresIn")
    if not isinstance(expires_in, (int, float)) or isinstance(expires_in, bool) or expires_in <= 0:
        expires_in = 3600.0  # an older server: renew within the hour
    return answer["token"], float(expires_in)


class RemoteNodeAPI:
    """`NodeAPI` against `base_url` (e.g. https://mcs.example:22623) with a node token."""

    def __init__(self, base_url: str, token: str, ca_file: str | None = None,
                 timeout: float = 30.0, expires_in: float | None = None,
                 on_token: Callable[[str], None] | None = None) -> None:
        """`on_token` keeps a renewed token (on disk, 0600); without it the token is never
        renewed. A token of unknown lifetime (`expires_in` None) is renewed at the first call."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StoreError(f"node API: not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._token = token
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/") + constants.NODE_API_PREFIX
        self._context: ssl.SSLContext | None = None
        self._on_token = on_token
        self._renew_lock = threading.Lock()
        self._renew_at: float | None = None
        if on_token is not None:
            self._renew_at = time.monotonic() + self._renew_after(expires_in) if expires_in is not None \
                else 0.0
        if self._https:
            # Without a CA file the system trust store decides (a server with a public certificate).
            self._context = ssl.create_default_context(cafile=ca_file)

    def __repr__(self) -> str:  # never shows the token
        return f"RemoteNodeAPI({self.base_url!r})"

    # -- transport -------------------------------------------------------------------------------

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=self._context)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    @staticmethod
    def _renew_after(expires_in: float) -> float:
        # At half-life: a node that misses one renewal (server down) still has time for more.
        return max(expires_in, 0.0) / 2

    def _maybe_renew(self) -> None:
        if self._renew_at is None or time.monotonic() < self._renew_at:
            return
        with self._renew_lock:
            if time.monotonic() < self._renew_at:
                return
            try:
                self.renew()
            except ForbiddenError:
                # Not a valid token (any more): the call itself fails the same way, and the
                # caller registers again.
                self._renew_at = time.monotonic() + 60.0
            except StoreError as e:
                # The token may still be valid for a while: try again in a minute.
                log.warning("node token not renewed, retrying in 60 s: %s", e)
                self._renew_at = time.monotonic() + 60.0

    def renew(self) -> None:
        """Trade the node token for a new one (the old one stays valid for a short grace period)
        and hand it to `on_token`."""
        answer = self._request("POST", "/token", {})
        token, expires_in = _token_of(answer, "renew")
        if self._on_token is not None:
            self._on_token(token)
        self._token = token
        self._renew_at = time.monotonic() + self._renew_after(expires_in)
        log.info("node token renewed; valid for %d s", int(expires_in))

    def _call(self, method: str, path: str, body: Any = None, token: str | None = None,
              timeout: float | None = None) -> Any:
        """One request (renewing the node token first when it is due)."""
        if token is None:
            self._maybe_renew()
        return self._request(method, path, body, token, timeout)

    def _request(self, method: str, path: str, body: Any = None, token: str | None = None,
                 timeout: float | None = None) -> Any:
        """One request; returns the decoded JSON body or raises a StoreError subclass."""
        headers = {"Authorization": f"Bearer {token or self._token}", "Accept": "application/json",
                   "User-Agent": constants.DAEMON_NAME}
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = self._connection(self.timeout if timeout is None else timeout)
        try:
            conn.request(method, self._prefix + path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            # OSError covers timeouts, refused connections and TLS failures; a certificate that
            # does not verify needs a person, the rest may pass.
            kind = StoreError if isinstance(e, ssl.SSLCertVerificationError) else UnavailableError
            raise kind(f"node API: {method} {path.split('?')[0]}: {type(e).__name__}: {e}") from e
        finally:
            conn.close()
        if resp.status != 200:
            raise _error_for(resp.status, raw.decode("utf-8", "replace").strip()[:500])
        try:
            return json.loads(raw)
        except ValueError as e:
            raise StoreError(f"node API: {method} {path.split('?')[0]}: response is not JSON") from e

    # -- registration ----------------------------------------------------------------------------

    @classmethod
    def register(cls, base_url: str, pool_token: str, name: str, labels: Mapping[str, str],
                 ca_file: str | None = None, timeout: float = 30.0, node_token: str | None = None,
                 on_token: Callable[[str], None] | None = None) -> tuple[RemoteNodeAPI, NodeRecord]:
        """Register (or re-register) node `name` with its pool's bootstrap token; returns a client
        holding the fresh node token, and the node record. A node already registered must present
        its own last token (`node_token`), else the server answers 409 (ConflictError)."""
        probe = cls(base_url, pool_token, ca_file, timeout)
        body: dict[str, Any] = {"name": name, "labels": dict(labels)}
        if node_token:
            body["token"] = node_token
        answer = probe._call("POST", "/nodes/register", body)
        token, expires_in = _token_of(answer, "register")
        if on_token is not None:
            on_token(token)
        log.info("registered node %s with %s", name, probe.base_url)
        return (cls(base_url, token, ca_file, timeout, expires_in, on_token),
                NodeRecord.from_dict(answer["node"]))

    @property
    def token(self) -> str:
        """The node token (for the caller to keep on disk, mode 0600)."""
        return self._token

    # -- NodeAPI -----------------------------------------------------------------------------------

    def get_node(self, name: str) -> NodeRecord:
        return NodeRecord.from_dict(self._call("GET", f"/nodes/{quote(name, safe='')}"))

    def patch_node_annotations(self, name: str, changes: Mapping[str, str | None]) -> NodeRecord:
        answer = self._call("PATCH", f"/nodes/{quote(name, safe='')}/annotations",
                            {"changes": dict(changes)})
        return NodeRecord.from_dict(answer)

    def get_rendered(self, name: str) -> RenderedConfig:
        answer = self._call("GET", f"/rendered/{quote(name, safe='')}")
        if not isinstance(answer, dict):
            raise StoreError(f"node API: rendered config {name} is not an object")
        return rendered_config(answer, f"node API: rendered config {name}")

    def record_event(self, kind: str, name: str, reason: str, message: str,
                     type: str = "Normal") -> None:
        self._call("POST", "/events", {"kind": kind, "name": name, "reason": reason,
                                       "message": message, "type": type})

    def get_machine_config_node(self, name: str) -> dict[str, Any]:
        answer = self._call("GET", f"/nodes/{quote(name, safe='')}/machineconfignode")
        if not isinstance(answer, dict):
            raise StoreError(f"node API: MachineConfigNode {name} is not an object")
        return answer

    def set_machine_config_node_status(self, name: str, status: Mapping[str, Any]) -> None:
        self._call("PUT", f"/nodes/{quote(name, safe='')}/machineconfignode/status",
                   {"status": dict(status)})

    def wait_for_change(self, since: int, timeout: float) -> int:
        """Long polls of at most NODE_API_MAX_WATCH_SECONDS (300 s) each until the revision passes `since` or `timeout` ends."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            remaining = max(deadline - time.monotonic(), 0.0)
            chunk = min(remaining, constants.NODE_API_MAX_WATCH_SECONDS)
            query = urlencode({"since": since, "timeout": f"{chunk:.3f}"})
            answer = self._call("GET", f"/watch?{query}", timeout=chunk + _WATCH_SLACK)
            try:
                revision = int(answer["revision"])
            except (TypeError, KeyError, ValueError) as e:
                raise StoreError("node API: watch: malformed answer") from e
            # A lower revision means the server's state was replaced: that is a change too.
            if revision != since or time.monotonic() >= deadline:
                return revision
