"""Optional bearer tokens for /config/<pool>: a file of `pool token` lines, re-read when it changes.

A token may cover several pools (one line per pool). Tokens are kept only as SHA-256 digests and
never logged.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

from machineconfig.atomicfile import Signature, stat_signature
from machineconfig.errors import MachineConfigError
from mcs.serve import POOL_NAME

log = logging.getLogger(__name__)


class TokenFileError(MachineConfigError, ValueError):
    """The token file is unreadable or malformed; the message names the line, never a token."""


def parse_tokens(text: str, source: str = "token file") -> dict[str, list[bytes]]:
    """`pool token` per line; blank lines and `#` comments ignored. Returns pool -> token digests."""
    tokens: dict[str, list[bytes]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise TokenFileError(f"{source} line {number}: expected `pool token`")
        pool, token = fields
        if not POOL_NAME.match(pool):
            raise TokenFileError(f"{source} line {number}: invalid pool name")
        tokens.setdefault(pool, []).append(hashlib.sha256(token.encode()).digest())
    return tokens


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of an `Authorization: Bearer <token>` header (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


class TokenAuth:
    """Checks a request's bearer token against the pools it covers; reloads the file on change."""

    def __init__(self, path: Path, check_interval: float = 1.0) -> None:
        self.path = path
        self.check_interval = check_interval
        self._signature: Signature | None = None
        self._checked = 0.0
        self._tokens: dict[str, list[bytes]] = {}
        # Raised whenever the tokens change; with next_check it tells the fast path's memo
        # (mcs.fastpath) that allows() would still answer as it did.
        self.version = 0
        self._load(strict=True)

    def _load(self, strict: bool) -> None:
        try:
            signature = stat_signature(self.path)
            if signature == self._signature:
                return
            tokens = parse_tokens(self.path.read_text(encoding="utf-8"), self.path.name)
        except (OSError, UnicodeDecodeError, TokenFileError) as e:
            if strict:
                raise TokenFileError(f"cannot use token file {self.path}: {e}") from e
            # Keep serving with the tokens we have rather than locking every machine out.
            log.warning("token file %s not reloaded, keeping the previous tokens: %s", self.path,
                        e if isinstance(e, TokenFileError) else type(e).__name__)
            return
        self._tokens = tokens
        self._signature = signature
        self.version += 1
        log.info("token file %s loaded: %d pool(s)", self.path, len(tokens))

    @property
    def next_check(self) -> float:
        """The time.monotonic() from which allows() looks at the file again."""
        return self._checked + self.check_interval

    def maybe_reload(self) -> None:
        now = time.monotonic()
        if now >= self._checked + self.check_interval:  # the same sum as next_check
            self._checked = now
            self._load(strict=False)

    def allows(self, pool: str, authorization: str | None) -> bool:
        """True when the header carries a token listed for `pool` (constant-time comparison)."""
        self.maybe_reload()
        token = bearer_token(authorization)
        if token is None:
            return False
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        ok = False
        for candidate in self._tokens.get(pool, ()):
            ok |= hmac.compare_digest(digest, candidate)
        return ok


class Authorizer(Protocol):
    """Decides whether a request for /config/<pool> may have it."""

    def allows(self, pool: str, authorization: str | None) -> bool: ...


@runtime_checkable
class SteadyAuthorizer(Authorizer, Protocol):
    """An authorizer whose allows() gives the same answer for the same pool and header until
    time.monotonic() reaches `next_check`, unless `version` changes meanwhile (its tokens were
    reloaded): what lets the fast path reuse an answer (mcs.fastpath) without changing when a token
    change takes effect."""

    @property
    def version(self) -> int: ...

    @property
    def next_check(self) -> float: ...


class AnyOf:
    """Allowed when any of the authorizers allows (store-mode pool tokens plus a --token-file)."""

    def __init__(self, *auths: Authorizer) -> None:
        self.auths = auths
        self._steady = [a for a in auths if isinstance(a, SteadyAuthorizer)]
        self._all_steady = len(self._steady) == len(auths)

    def allows(self, pool: str, authorization: str | None) -> bool:
        return any(a.allows(pool, authorization) for a in self.auths)

    @property
    def version(self) -> int:
        """The sum of the members' versions (each only grows, so any change changes the sum)."""
        total = 0
        for auth in self._steady:
            total += auth.version
        return total

    @property
    def next_check(self) -> float:
        """The earliest of the members'; never steady when a member is not a SteadyAuthorizer."""
        if not self._all_steady:
            return float("-inf")
        return min((a.next_check for a in self._steady), default=float("inf"))
