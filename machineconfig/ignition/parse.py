"""`parse(raw)`: upstream config.Parse for spec 3.x - empty check, version stub, go-semver version
match, typed decode at the config's own version, validation - returning the canonical config.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from machineconfig.errors import MachineConfigError
from machineconfig.ignition import schema
from machineconfig.ignition.bind import Binder, JSONTypeError, bind_version_stub
from machineconfig.ignition.decode import JNode, JSONSyntaxError, line_col, parse_json, parse_json_fast
from machineconfig.ignition.report import ERROR, Report, ReportEntry
from machineconfig.ignition.findings import Finding
from machineconfig.ignition.validate import correlate, typed_findings
from machineconfig.ignition.version import (ERR_EMPTY, ERR_INVALID, ERR_INVALID_VERSION, ERR_UNKNOWN_VERSION,
                                            VersionParseError, match_spec)

__all__ = ["IgnitionParseError", "ParseResult", "parse"]


class IgnitionParseError(MachineConfigError):
    """The config was rejected; `reason` is upstream's error text and `report` holds any entries."""

    def __init__(self, reason: str, report: Report | None = None) -> None:
        self.reason = reason
        self.report = report if report is not None else Report()
        super().__init__(reason)

    def __str__(self) -> str:
        lines = self.report.lines()
        return self.reason + "".join("\n" + line for line in lines)


@dataclass
class ParseResult:
    """A parsed config: `version` is the matched spec, `config` the canonical dict at that version
    (its `ignition.version` spelled like `version`), `typed` the same tree with every field present."""

    version: str
    config: dict[str, Any]
    report: Report
    typed: dict[str, Any]


def _decode_error(raw: bytes, message: str, offset: int) -> IgnitionParseError:
    line, col = line_col(raw, offset)
    return IgnitionParseError(ERR_INVALID, Report([ReportEntry(ERROR, (), line, col, message)]))


class _PositionedLater(Report):
    """A report whose entries are placed in the raw text on first use: the findings came from the
    position-less fast tree, and only callers that read the entries pay for the exact parse."""

    def __init__(self, findings: list[Finding], data: bytes) -> None:  # no dataclass init: lazy
        self._findings = findings
        self._data = data
        self._entries: list[ReportEntry] | None = None

    @property
    def entries(self) -> list[ReportEntry]:  # type: ignore[override]
        if self._entries is None:
            self._entries = correlate(self._findings, parse_json(self._data), self._data).entries
        return self._entries

    @property
    def is_fatal(self) -> bool:
        return any(f.kind == ERROR for f in self._findings)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Report) and self.entries == other.entries

    __hash__ = None  # type: ignore[assignment]


def parse(raw: bytes | str, *, fast_root: JNode | None = None) -> ParseResult:
    """Parse and validate a spec 3.x config; raise IgnitionParseError when upstream would refuse it.

    `fast_root` is `decode.parse_json_fast(raw)` when the caller has it already (same result)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if not data:
        raise IgnitionParseError(ERR_EMPTY)
    # Most configs are valid: try the C JSON scanner's position-less tree first. Positions only
    # matter for errors and report entries: any error means parsing again exactly, and warnings
    # are placed in the text when the report is read.
    if fast_root is None:
        fast_root = parse_json_fast(data)
    if fast_root is not None:
        try:
            return _parse_tree(data, fast_root, exact=False)
        except JSONTypeError:
            pass  # its offset is unknown without positions: bind the exact tree
    try:
        root: JNode = parse_json(data)
    except JSONSyntaxError as e:
        raise _decode_error(data, e.message, e.offset) from None
    return _parse_tree(data, root, exact=True)


def _parse_tree(data: bytes, root: JNode, *, exact: bool) -> ParseResult:
    try:
        version_text = bind_version_stub(root)
    except JSONTypeError as e:
        if not exact:
            raise
        raise _decode_error(data, e.message, e.offset) from None
    try:
        version = match_spec(version_text)
    except VersionParseError:
        raise IgnitionParseError(ERR_INVALID_VERSION) from None
    except LookupError:
        raise IgnitionParseError(ERR_UNKNOWN_VERSION) from None
    minor = schema.minor_of(version)
    try:
        typed = Binder(minor).bind_root(root)
    except JSONTypeError as e:
        if not exact:
            raise
        raise _decode_error(data, e.message, e.offset) from None
    findings = typed_findings(typed, minor, root)
    report: Report
    if not findings:
        report = Report([])
    elif exact or any(f.kind == ERROR for f in findings):
        report = correlate(findings, root if exact else parse_json(data), data)
    else:
        report = _PositionedLater(findings, data)
    if report.is_fatal:
        raise IgnitionParseError(ERR_INVALID, report)
    # Spell the version the way the matched spec does ("03.6.0" and "3.6.0-" select 3.6.0).
    typed["ignition"]["version"] = version
    return ParseResult(version, schema.to_canonical(typed, schema.ROOT, minor), report, typed)
