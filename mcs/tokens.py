"""Store-mode credentials in the state directory: one bootstrap token per pool (`<SDIR>/tokens`,
`pool token` lines, kept in clear because the server hands it out in the Ignition it serves) and
node tokens issued at registration (`<SDIR>/node-tokens.json`, SHA-256 digests only, each with its
expiry; renewed by the node before it expires), and the status page's admin token
(`<SDIR>/admin-token`). The files are 0600, replaced atomically under a
lock, re-read when they change; no token is ever logged.
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from machineconfig.atomicfile import Signature, stat_signature, write_atomic
from mcs.auth import TokenFileError, bearer_token, parse_tokens
from mcs.serve import POOL_NAME

log = logging.getLogger(__name__)

POOL_TOKENS_FILE = "tokens"
NODE_TOKENS_FILE = "node-tokens.json"
ADMIN_TOKEN_FILE = "admin-token"
DEFAULT_NODE_TOKEN_TTL = 24 * 3600.0
DEFAULT_NODE_TOKEN_GRACE = 300.0


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


class _Reloading:
    """A file re-read (at most every `check_interval` seconds) when its stat signature changes."""

    def __init__(self, path: Path, check_interval: float) -> None:
        self.path = path
        self.check_interval = check_interval
        self._signature: Signature | None = None
        self._checked = -1e9
        # Raised whenever the file is parsed anew (see mcs.auth.SteadyAuthorizer).
        self.version = 0

    @property
    def next_check(self) -> float:
        """The time.monotonic() from which a read looks at the file again (unless forced)."""
        return self._checked + self.check_interval

    def _maybe_reload(self, force: bool = False) -> None:
        """Re-read when the file changed; `force` skips the interval (not the change check)."""
        now = time.monotonic()
        if not force and now < self._checked + self.check_interval:  # the same sum as next_check
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
        self.version += 1  # after the tokens changed (see mcs.fastpath.FastPath.stamp)

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
            write_atomic(self.path, ("\n".join(lines) + "\n").encode())
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


@dataclass(frozen=True)
class IssuedToken:
    """A node token as handed out: the secret (never logged) and its lifetime."""

    token: str
    expires_in: float  # seconds from issuing

    def __repr__(self) -> str:
        return f"IssuedToken(expires_in={self.expires_in:.0f})"


@dataclass(frozen=True)
class _NodeEntry:
    digest: str
    expires: float  # epoch seconds
    previous: str | None = None  # the token this one replaced, valid until previous_expires
    previous_expires: float = 0.0

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"digest": self.digest, "expires": self.expires}
        if self.previous is not None:
            out.update(previous=self.previous, previousExpires=self.previous_expires)
        return out


def _entry(value: object, default_expires: float) -> _NodeEntry:
    if isinstance(value, str):  # the first format: name -> digest, no expiry recorded
        return _NodeEntry(value, default_expires)
    if not isinstance(value, dict) or not isinstance(value.get("digest"), str):
        raise ValueError("not a node token entry")
    previous = value.get("previous")
    return _NodeEntry(value["digest"], float(value.get("expires", default_expires)),
                      previous if isinstance(previous, str) else None,
                      float(value.get("previousExpires", 0.0)))


class NodeTokens(_Reloading):
    """Node tokens: one live token per node name, stored as a digest with its expiry. Renewing
    (`rotate`) keeps the replaced token valid for `grace` seconds, so a node that renewed but did
    not yet store the new token is not locked out; `revoke` (the admin's `mcs node revoke`) ends
    every token of a node at once."""

    def __init__(self, state_dir: Path, check_interval: float = 1.0,
                 ttl: float = DEFAULT_NODE_TOKEN_TTL, grace: float = DEFAULT_NODE_TOKEN_GRACE,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(state_dir / NODE_TOKENS_FILE, check_interval)
        self.ttl = ttl
        self.grace = grace
        self.clock = clock
        self._entries: dict[str, _NodeEntry] = {}
        self._by_digest: dict[str, str] = {}  # current or previous digest -> node name
        self._maybe_reload(force=True)

    def _parse(self, text: str) -> None:
        data = json.loads(text) if text.strip() else {}
        if not isinstance(data, dict):
            raise ValueError("not an object")
        nodes = data.get("nodes", {}) if data.get("version") == 2 else data
        if not isinstance(nodes, dict):
            raise ValueError("not an object of nodes")
        # Digests from the first format carry no expiry: they get a full lifetime from now.
        default_expires = self.clock() + self.ttl
        self._entries = {str(k): _entry(v, default_expires) for k, v in nodes.items()}
        by_digest: dict[str, str] = {}
        for name, entry in self._entries.items():
            by_digest[entry.digest] = name
            if entry.previous is not None:
                by_digest.setdefault(entry.previous, name)
        self._by_digest = by_digest

    def _write(self, change: Callable[[dict[str, _NodeEntry]], None]) -> None:
        with _locked(self.path):
            self._maybe_reload(force=True)
            if self._signature != stat_signature(self.path):
                # Unreadable: rewriting it from what we hold would drop every other node's token.
                raise TokenFileError(f"{self.path} is unreadable; not rewritten")
            entries = dict(self._entries)
            change(entries)
            data = {"version": 2, "nodes": {k: v.to_json() for k, v in sorted(entries.items())}}
            write_atomic(self.path, json.dumps(data, indent=1).encode())
            self._maybe_reload(force=True)

    def issue(self, name: str) -> IssuedToken:
        """A fresh token for node `name`; every earlier token of that node stops working."""
        token = new_token()
        expires = self.clock() + self.ttl

        def change(entries: dict[str, _NodeEntry]) -> None:
            entries[name] = _NodeEntry(digest(token), expires)

        self._write(change)
        log.debug("issued a node token for %s", name)
        return IssuedToken(token, self.ttl)

    def rotate(self, authorization: str | None) -> tuple[str, IssuedToken] | None:
        """A new token for the node whose valid token the header carries (None when it carries
        none); the presented token stays valid for `grace` seconds (never past its own expiry)."""
        presented = bearer_token(authorization)
        name = self.node_for(authorization)
        if presented is None or name is None:
            return None
        token = new_token()
        now = self.clock()
        old = digest(presented)
        result: list[str] = []

        def change(entries: dict[str, _NodeEntry]) -> None:
            entry = entries.get(name)
            if entry is None or old not in (entry.digest, entry.previous):
                return  # revoked or rotated by someone else meanwhile
            old_expires = entry.expires if old == entry.digest else entry.previous_expires
            entries[name] = _NodeEntry(digest(token), now + self.ttl, old,
                                       min(now + self.grace, old_expires))
            result.append(name)

        self._write(change)
        if not result:
            return None
        log.info("node %s renewed its token", name)
        return name, IssuedToken(token, self.ttl)

    def revoke(self, name: str) -> bool:
        """Forget every token of node `name`; False when it had none."""
        found: list[bool] = []

        def change(entries: dict[str, _NodeEntry]) -> None:
            found.append(entries.pop(name, None) is not None)

        self._write(change)
        return found[0]

    def has_token(self, name: str) -> bool:
        """Whether node `name` holds a token that was issued and not revoked (expired or not)."""
        self._maybe_reload()
        return name in self._entries

    def owns(self, name: str, token: str) -> bool:
        """Whether `token` is node `name`'s own, as proof for registering it again: its latest
        token or the one it replaced, expired or not (the node was off for a while, or died
        between renewing and storing the new token). Proof only: no API call takes an expired
        token."""
        self._maybe_reload()
        entry = self._entries.get(name)
        if entry is None:
            return False
        presented = digest(token)
        return hmac.compare_digest(presented, entry.digest) or (
            entry.previous is not None and hmac.compare_digest(presented, entry.previous))

    def node_for(self, authorization: str | None) -> str | None:
        """The node whose valid (unexpired) token the `Authorization` header carries, if any."""
        self._maybe_reload()
        token = bearer_token(authorization)
        if token is None:
            return None
        presented = digest(token)
        name = self._by_digest.get(presented)
        entry = self._entries.get(name) if name is not None else None
        if entry is None:
            return None
        now = self.clock()
        if presented == entry.digest:
            return name if now < entry.expires else None
        return name if presented == entry.previous and now < entry.previous_expires else None

    def names(self) -> list[str]:
        self._maybe_reload(force=True)
        return sorted(self._entries)


class AdminToken(_Reloading):
    """The admin token of the read-only status page (`<SDIR>/admin-token`, one line, 0600): no
    node and no pool token opens it. Whoever may read the state directory is an admin already
    (as for `mcs fleetlock release`), so the token is kept there in clear for them to read
    (`mcs admin-token`); replace the file (or delete it and restart) to rotate it."""

    def __init__(self, state_dir: Path, check_interval: float = 1.0) -> None:
        super().__init__(state_dir / ADMIN_TOKEN_FILE, check_interval)
        self._digest: str | None = None
        self._maybe_reload(force=True)

    def _parse(self, text: str) -> None:
        token = text.strip()
        if not token:
            self._digest = None
            return
        if len(token) < 32 or any(c.isspace() or not c.isprintable() for c in token):
            raise ValueError("an admin token is one line of at least 32 printable characters")
        self._digest = digest(token)

    def ensure(self) -> str:
        """The token, created (256 random bits) when there is none yet."""
        with _locked(self.path):
            self._maybe_reload(force=True)
            if self._digest is None:
                write_atomic(self.path, (new_token() + "\n").encode())
                log.info("created the status page's admin token in %s", self.path)
            self._maybe_reload(force=True)
            return self.path.read_text(encoding="utf-8").strip()

    def allows(self, authorization: str | None) -> bool:
        self._maybe_reload()
        token = bearer_token(authorization)
        if token is None or self._digest is None:
            return False
        return hmac.compare_digest(digest(token), self._digest)


__all__ = ["AdminToken", "IssuedToken", "NodeTokens", "PoolTokens", "TokenFileError", "new_token"]
