"""`parse(raw)`: upstream config.Parse for spec 3.x - empty check, version stub, go-semver version
match, typed decode at the config's own version, validation - returning the canonical config.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from machineconfig.errors import MachineConfigError
from machineconfig.ignition import schema
from machineconfig.ignition.bind import Binder, JSONTypeError, bind_version_stub
from machineconfig.ignition.decode import JNode, JSONSyntaxError, line_col, parse_json
from machineconfig.ignition.report import ERROR, Report, ReportEntry
from machineconfig.ignition.validate import validate_typed
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


def parse(raw: bytes | str) -> ParseResult:
    """Parse and validate a spec 3.x config; raise IgnitionParseError when upstream would refuse it."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if not data:
        raise IgnitionParseError(ERR_EMPTY)
    try:
        root: JNode = parse_json(data)
        version_text = bind_version_stub(root)
    except JSONSyntaxError as e:
        raise _decode_error(data, e.message, e.offset) from None
    except JSONTypeError as e:
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
        raise _decode_error(data, e.message, e.offset) from None
    report = validate_typed(typed, minor, root, data)
    if report.is_fatal:
        raise IgnitionParseError(ERR_INVALID, report)
    # Spell the version the way the matched spec does ("03.6.0" and "3.6.0-" select 3.6.0).
    typed["ignition"]["version"] = version
    return ParseResult(version, schema.to_canonical(typed, schema.ROOT, minor), report, typed)
