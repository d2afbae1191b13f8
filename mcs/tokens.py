"""Store-mode credentials in the state directory: one bootstrap token per pool (`<SDIR>/tokens`,
`pool token` lines, kept in clear because the server hands it out in the Ignition it serves) and
node tokens issued at registration (`<SDIR>/node-tokens.json`, SHA-256 digests only). Both files
are 0600, replaced atomically under a lock, re-read when they change; no token is ever logged.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from mcs.auth import TokenFileError, bearer_token, parse_tokens
from mcs.layout import Signature, stat_signature
from mcs.serve import POOL_NAME

log = logging.getLogger(__name__)

POOL_TOKENS_FILE = "tokens"
NODE_TOKENS_FILE = "node-tokens.json"


def new_token() -> str:
    """256 random bits, URL-safe (no white space, fits an HTTP header and a pointer config)."""
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock shared with every process using this state directory (server, pointer)."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with a 0600 file: temp file in the same directory, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class _Reloading:
    """A file re-read (at most every `check_interval` seconds) when its stat signature changes."""

    def __init__(self, path: Path, check_interval: float) -> None:
        self.path = path
        self.check_interval = check_interval
        self._signature: Signature | None = None
        self._checked = -1e9

    def _maybe_reload(self, force: bool = False) -> None:
        """Re-read when the file changed; `force` skips the interval (not the change check)."""
        now = time.monotonic()
        if not force and now - self._checked < self.check_interval:
            return
        self._checked = now
        signature = stat_signature(self.path)
        if signature == self._signature:
            return
        try:
            text = self.path.read_text(encoding="utf-8") if signature is not None else ""
            self._parse(text)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            # Keep the tokens we have: locking every machine out is worse than a stale file.
            log.warning("%s not reloaded, keeping the previous tokens: %s", self.path, type(e).__name__)
            return
        self._signature = signature

    def _parse(self, text: str) -> None:
        raise NotImplementedError


class PoolTokens(_Reloading):
    """Bootstrap tokens per pool; also the /config/<pool> authorizer (`allows`)."""

    def __init__(self, state_dir: Path, check_interval: float = 1.0) -> None:
        super().__init__(state_dir / POOL_TOKENS_FILE, check_interval)
        self._tokens: dict[str, str] = {}
        self._by_digest: dict[str, str] = {}
        self._maybe_reload(force=True)

    def _parse(self, text: str) -> None:
        parse_tokens(text, self.path.name)  # validates the lines (names the line, never a token)
        tokens: dict[str, str] = {}
        for line in text.splitlines():
            fields = line.split()
            if len(fields) == 2 and not line.lstrip().startswith("#"):
                tokens.setdefault(fields[0], fields[1])  # one token per pool: the first line wins
        self._tokens = tokens
        self._by_digest = {digest(t): p for p, t in tokens.items()}
        log.info("pool tokens loaded from %s: %d pool(s)", self.path, len(tokens))

    def ensure(self, pools: Iterable[str]) -> list[str]:
        """Create a token for every listed pool that has none; returns the pools that got one."""
        wanted = [p for p in pools if POOL_NAME.match(p)]
        self._maybe_reload(force=True)
        if all(p in self._tokens for p in wanted):
            return []
        with _locked(self.path):
            # Re-read under the lock: another process may have added tokens since.
            self._maybe_reload(force=True)
            created = [p for p in dict.fromkeys(wanted) if p not in self._tokens]
            if not created:
                return []
            lines = [f"{p} {t}" for p, t in self._tokens.items()]
            lines += [f"{p} {new_token()}" for p in created]
            write_private(self.path, ("\n".join(lines) + "\n").encode())
            self._maybe_reload(force=True)
        log.info("created bootstrap tokens for pool(s) %s in %s", ", ".join(created), self.path)
        return created

    def token_for(self, pool: str) -> str | None:
        self._maybe_reload()
        return self._tokens.get(pool)

    def pool_for(self, authorization: str | None) -> str | None:
        """The pool whose bootstrap token the `Authorization` header carries, if any."""
        self._maybe_reload()
        token = bearer_token(authorization)
        return None if token is None else self._by_digest.get(digest(token))

    def allows(self, pool: str, authorization: str | None) -> bool:
        self._maybe_reload()
        token = bearer_token(authorization)
        expected = self._tokens.get(pool)
        if token is None or expected is None:
            return False
        return hmac.compare_digest(digest(token), digest(expected))


class NodeTokens(_Reloading):
    """Node tokens: one live token per node name, stored as a digest; re-issuing replaces it."""

    def __init__(self, state_dir: Path, check_interval: float = 1.0) -> None:
        super().__init__(state_dir / NODE_TOKENS_FILE, check_interval)
        self._digests: dict[str, str] = {}  # node name -> digest
        self._by_digest: dict[str, str] = {}
        self._maybe_reload(force=True)

    def _parse(self, text: str) -> None:
        data = json.loads(text) if text.strip() else {}
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError("not an object of digests")
        self._digests = {str(k): v for k, v in data.items()}
        self._by_digest = {v: k for k, v in self._digests.items()}

    def issue(self, name: str) -> str:
        """A fresh token for node `name`; any earlier token of that node stops working."""
        token = new_token()
        with _locked(self.path):
            self._maybe_reload(force=True)
            digests = dict(self._digests)
            digests[name] = digest(token)
            write_private(self.path, json.dumps(digests, sort_keys=True, indent=1).encode())
            self._maybe_reload(force=True)
        log.debug("issued a node token for %s", name)
        return token

    def node_for(self, authorization: str | None) -> str | None:
        """The node whose token the `Authorization` header carries, if any."""
        self._maybe_reload()
        token = bearer_token(authorization)
        return None if token is None else self._by_digest.get(digest(token))


__all__ = ["NodeTokens", "PoolTokens", "TokenFileError", "new_token", "write_private"]
