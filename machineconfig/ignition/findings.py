"""Findings collected while validating, before they are placed in the raw text (see validate.py),
and the small nil/empty helpers the rule modules share.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from machineconfig.ignition.report import ERROR, WARNING, PathElem

Path = tuple[PathElem, ...]


@dataclass(frozen=True)
class Finding:
    kind: str
    path: Path
    message: str
    at_key: bool = False  # positioned at an object key rather than a value (unused keys)


@dataclass
class Sink:
    """Collects findings, in order, for one spec minor version."""

    minor: int
    findings: list[Finding] = field(default_factory=list)

    def error(self, path: Path, message: str | None) -> None:
        if message:
            self.findings.append(Finding(ERROR, path, message))

    def warn(self, path: Path, message: str | None) -> None:
        if message:
            self.findings.append(Finding(WARNING, path, message))


def nil_or_empty(value: str | None) -> bool:
    """util.NilOrEmpty: a null or empty string pointer."""
    return value is None or value == ""
