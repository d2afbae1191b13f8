"""Validation reports in ignition-validate's wording (coreos/vcontext report and path formats).

An entry prints as `error at $.storage.files.0.path, line 1 col 61: path not absolute`; JSON decode
errors have no path (`error at line L col C: ...`), and entries made without raw text have no position.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

ERROR, WARNING, INFO = "error", "warning", "info"

PathElem = str | int


def path_string(path: tuple[PathElem, ...]) -> str:
    """`$.a.0.b`: vcontext's rendering, list indices as bare numbers."""
    return "$" + "".join(f".{p}" for p in path)


@dataclass(frozen=True)
class ReportEntry:
    """One finding. `line`/`col` are None when there was no raw text to correlate with."""

    kind: str
    path: tuple[PathElem, ...]
    line: int | None
    col: int | None
    message: str

    @property
    def is_fatal(self) -> bool:
        return self.kind == ERROR

    def __str__(self) -> str:
        where = []
        if self.path:
            where.append(path_string(self.path))
        if self.line is not None:
            where.append(f"line {self.line} col {self.col}")
        at = " at " + ", ".join(where) if where else ""
        return f"{self.kind}{at}: {self.message}"


@dataclass
class Report:
    """An ordered list of entries; fatal when any entry is an error."""

    entries: list[ReportEntry] = field(default_factory=list)

    @property
    def is_fatal(self) -> bool:
        return any(e.is_fatal for e in self.entries)

    def __iter__(self) -> Iterator[ReportEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def lines(self) -> list[str]:
        return [str(e) for e in self.entries]

    def __str__(self) -> str:
        return "".join(line + "\n" for line in self.lines())
