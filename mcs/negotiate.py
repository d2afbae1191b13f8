"""Accept header -> the Ignition spec version a request is served (MCO's negotiation rules).

Parsing follows MCO's `detectSpecVersionFromAcceptHeader`; only the table of served versions differs.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from machineconfig.errors import MachineConfigError
from machineconfig.ignition.version import SemVer as GoSemVer
from machineconfig.ignition.version import VersionParseError
from machineconfig.ignition.version import parse_semver as go_semver

log = logging.getLogger(__name__)

IGNITION_SUBTYPE = "vnd.coreos.ignition+json"
DEFAULT_VERSION = "2.2.0"

# What we serve: MCO's list plus 3.6 (we can translate up) and with a working 3.0 (MCO lists 3.0 but
# has no down-conversion path to it, so it answers 500).
SERVED_MINORS: tuple[tuple[int, int], ...] = (
    (2, 2), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4), (3, 5), (3, 6))
# MCO's own list, kept so tests can show where and why our answers differ.
MCO_MINORS: tuple[tuple[int, int], ...] = (
    (2, 2), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4), (3, 5))

_DIGITS = re.compile(r"^[0-9]+$")
# Go's strconv.ParseFloat (decimal and special forms; no '_' without a base prefix).
_GO_FLOAT = re.compile(
    r"^[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|inf|infinity|nan)$", re.IGNORECASE)


class UnsupportedVersion(MachineConfigError, ValueError):
    """The Accept header asks for an Ignition version we cannot serve (HTTP 400)."""


@dataclass(frozen=True)
class SemVer(GoSemVer):
    """A go-semver version with go-semver's ordering (a pre-release sorts first); parse_semver drops metadata."""

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        if (self.major, self.minor, self.patch) != (other.major, other.minor, other.patch):
            return (self.major, self.minor, self.patch) < (other.major, other.minor, other.patch)
        return _pre_release_less(self.pre_release, other.pre_release)


def _pre_release_less(a: str, b: str) -> bool:
    if a == b:
        return False
    if not a or not b:
        return bool(a)  # a version with a pre-release sorts before the release itself
    for x, y in zip(a.split("."), b.split(".")):
        if x == y:
            continue
        if _DIGITS.match(x) and _DIGITS.match(y):
            return int(x) < int(y)
        if _DIGITS.match(x) or _DIGITS.match(y):
            return bool(_DIGITS.match(x))
        return x < y
    return len(a.split(".")) < len(b.split("."))


def parse_semver(text: str) -> SemVer | None:
    """go-semver's `NewVersion` (the Ignition library's parser), build metadata dropped; None when invalid."""
    try:
        v = go_semver(text)
    except VersionParseError:
        return None
    return SemVer(v.major, v.minor, v.patch, v.pre_release)


@dataclass(frozen=True)
class AcceptEntry:
    """One media range of an Accept header with the two parameters MCO reads."""

    mime_type: str
    mime_subtype: str
    version: SemVer | None
    q: float


def parse_accept(header: str) -> list[AcceptEntry]:
    """Split an Accept header like MCO: bad entries dropped, stable-sorted by q descending."""
    entries: list[AcceptEntry] = []
    for value in header.split(","):
        parts = [p.strip() for p in value.strip().split(";")]
        if "/" not in parts[0]:
            continue
        mime_type, mime_subtype = parts[0].split("/", 1)
        version: SemVer | None = None
        q: float | None = None
        for ext in parts[1:]:
            if "=" not in ext:
                continue
            key, val = ext.split("=", 1)
            if key == "version" and version is None:
                version = parse_semver(val)  # an invalid one leaves room for a later valid one
            elif key == "q" and q is None and _GO_FLOAT.match(val):
                q = float(val)
        entries.append(AcceptEntry(mime_type, mime_subtype, version, 1.0 if q is None else q))
    entries.sort(key=lambda e: -e.q)
    return entries


def negotiate(header: str | None, served: tuple[tuple[int, int], ...] = SERVED_MINORS) -> str:
    """The spec version (`X.Y.0`) to serve for an Accept header; UnsupportedVersion means 400.

    Only the first Ignition entry with a valid version counts; 2.x at or above 2.2 means 2.2; a 3.x
    minor newer than any we serve gets the newest 3.x we serve.
    """
    for entry in parse_accept(header or ""):
        if entry.mime_subtype != IGNITION_SUBTYPE or entry.version is None:
            continue
        v = entry.version
        if v.major == 2 and not v < SemVer(2, 2, 0):
            return DEFAULT_VERSION
        if (v.major, v.minor) in served:
            return f"{v.major}.{v.minor}.0"
        newest = max((m for m in served if m[0] == 3), default=None)
        if v.major == 3 and newest is not None and v.minor > newest[1]:
            return f"3.{newest[1]}.0"
        raise UnsupportedVersion(f"unsupported Ignition version in Accept header: {v.major}.{v.minor}.{v.patch}")
    return DEFAULT_VERSION


def version_less(a: str, b: str) -> bool:
    """Compare two served versions such as `3.2.0` and `3.3.0`."""
    va, vb = parse_semver(a), parse_semver(b)
    if va is None or vb is None:
        raise ValueError(f"not a version: {a!r} or {b!r}")
    return va < vb
