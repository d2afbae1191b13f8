"""Spec version strings: coreos/go-semver parsing quirks and the table of supported spec versions.

A config's version must equal a spec's version exactly as go-semver parses it (pre-release and build
metadata included), so `03.6.0` and `3.6.0-` are 3.6.0 while `3.6.0+x` is unsupported.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from machineconfig.errors import MachineConfigError
from machineconfig.ignition.schema import VERSIONS

ERR_EMPTY = "not a config (empty)"
ERR_INVALID_VERSION = "invalid config version (couldn't parse)"
ERR_UNKNOWN_VERSION = "unsupported config version"
ERR_INVALID = "config is not valid"

_IDENTIFIER = re.compile(r"[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*")
_INT64_MAX = (1 << 63) - 1


class VersionParseError(MachineConfigError, ValueError):
    """go-semver rejected the string."""


@dataclass(frozen=True)
class SemVer:
    major: int
    minor: int
    patch: int
    pre_release: str = ""
    metadata: str = ""


def _go_parse_int(text: str) -> int:
    # strconv.ParseInt(s, 10, 64): optional sign, ASCII digits only, int64 range.
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise VersionParseError(f"invalid syntax: {text!r}")
    value = int(text)
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise VersionParseError(f"value out of range: {text!r}")
    return value


def parse_semver(text: str) -> SemVer:
    """go-semver's Version.Set: split off `+metadata`, then `-prerelease`, then three dotted ints."""
    rest, _, metadata = text.partition("+") if "+" in text else (text, "", "")
    rest, _, pre = rest.partition("-") if "-" in rest else (rest, "", "")
    parts = rest.split(".", 2)
    if len(parts) != 3:
        raise VersionParseError(f"{rest} is not in dotted-tri format")
    for ident in (pre, metadata):
        if ident and not _IDENTIFIER.fullmatch(ident):
            raise VersionParseError(f"{ident} is not a valid semver identifier")
    major, minor, patch = (_go_parse_int(p) for p in parts)
    return SemVer(major, minor, patch, pre, metadata)


# Each spec's MaxVersion as go-semver values, newest first (the order upstream tries them).
SPEC_VERSIONS: dict[SemVer, str] = {parse_semver(v): v for _, v in sorted(VERSIONS.items(), reverse=True)}


def match_spec(text: str) -> str:
    """The spec version string a config's `ignition.version` selects.

    Raises VersionParseError (`invalid config version (couldn't parse)`) or LookupError
    (`unsupported config version`).
    """
    parsed = parse_semver(text)
    try:
        return SPEC_VERSIONS[parsed]
    except KeyError:
        raise LookupError(ERR_UNKNOWN_VERSION) from None
