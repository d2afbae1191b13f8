"""The status page as a browser shows it: Debian's `chromium` headless (a missing one fails the
test in one line, never skips it), the DOM's tables parsed, screenshots kept in
$MC_ARTIFACTS_DIR (default .artifacts/ in the repository, which CI keeps)."""
from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def artifacts_dir() -> Path:
    where = Path(os.environ.get("MC_ARTIFACTS_DIR") or REPO / ".artifacts")
    where.mkdir(parents=True, exist_ok=True)
    return where


class PageDOM(HTMLParser):
    """The tables of the rendered page: pool rows' numeric fields, node rows' cells."""

    def __init__(self) -> None:
        super().__init__()
        self.pools: dict[str, dict[str, str]] = {}
        self.nodes: dict[str, list[str]] = {}
        self.drift: dict[str, list[str]] = {}
        self.slots: dict[str, list[str]] = {}  # "group/holder": the row's cells
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.body_state = ""
        self.progress: dict[str, tuple[str, str]] = {}
        self._table = ""
        self._row: str | None = None
        self._field: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "body":
            self.body_state = a.get("data-state") or ""
        elif tag == "table":
            self._table = a.get("id") or ""
        elif tag == "tr":
            self._row = a.get("data-pool") or a.get("data-node") or a.get("data-slot")
            if self._row is not None and self._table in ("nodes", "drift", "slots"):
                getattr(self, self._table)[self._row] = []
        elif tag == "td" and self._row is not None:
            self._field = a.get("data-field")
            self._cell = []
        elif tag == "progress" and self._row is not None:
            self.progress[self._row] = (a.get("value") or "", a.get("max") or "")

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag != "td" or self._cell is None or self._row is None:
            return
        text = "".join(self._cell)
        if self._table == "pools" and self._field:
            self.pools.setdefault(self._row, {})[self._field] = text
        elif self._table in ("nodes", "drift", "slots"):
            getattr(self, self._table)[self._row].append(text)
        self._cell = self._field = None


def chromium(url: str, profile: Path, screenshot: Path | None = None) -> str:
    """The DOM after the page's script ran (the virtual time budget lets its fetch finish)."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is missing: install Debian's chromium package (scripts/setup test)",
                    pytrace=False)
    profile.mkdir(parents=True, exist_ok=True)
    args = [binary, "--headless", "--disable-gpu", "--no-sandbox", "--ignore-certificate-errors",
            "--no-first-run", "--virtual-time-budget=10000", "--window-size=1400,1000",
            f"--user-data-dir={profile}", "--dump-dom", url]
    if screenshot is not None:
        args.insert(-2, f"--screenshot={screenshot}")
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "HOME": str(profile)})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
