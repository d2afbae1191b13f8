"""Maintenance windows: when a pool's disruptive updates (drain, reboot) may start.

A pool opts in with the annotation WINDOW_ANNOTATION, whose value is YAML (or JSON):

    timeZone: Europe/Berlin          # IANA name; default UTC
    windows:                         # one or more; a window may cross midnight
      - days: [Sat, Sun]             # the days the window starts on (Mon..Sun, or full names)
        start: "22:30"               # local wall-clock time, 24 h
        lengthMinutes: 90            # 1 .. 10080 (a week)
    rebootlessOutsideWindow: true    # default false: outside a window nothing starts at all

The semantics are Zincati's periodic strategy: a window opens at its local start time on each of
its days and stays open for its length in elapsed time. Daylight saving time: a start time that
does not exist that day (the spring-forward gap) is read at the offset before the change, so
02:30 on a day whose clocks jump from 02:00 to 03:00 opens the window at 03:30; a start time
that happens twice (fall back) opens it at the first of the two; the length is real elapsed
time either way, so a 60-minute window always lasts 60 minutes.

Only the start of an update is gated: a node that was given its new config while a window was
open finishes, even when the window closes meanwhile.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from machineconfig.clock import rfc3339
from machineconfig.errors import InputError
from machineconfig.yamlload import load_text

WINDOW_ANNOTATION = "machine-config.io/maintenance-window"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MAX_LENGTH_MINUTES = 7 * 24 * 60
MAX_WINDOWS = 100
_START = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_KEYS = {"timeZone", "windows", "rebootlessOutsideWindow"}
_WINDOW_KEYS = {"days", "start", "lengthMinutes"}


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: time
    length: timedelta


@dataclass(frozen=True)
class Schedule:
    zone: ZoneInfo
    windows: tuple[Window, ...]
    rebootless_outside: bool = False

    def _openings(self, day: date) -> list[datetime]:
        """The UTC instants windows open on local `day` (see the module's DST rules)."""
        out = []
        for window in self.windows:
            if day.weekday() in window.days:
                # fold=0: a nonexistent local time maps past the gap, an ambiguous one to its
                # first occurrence
                local = datetime.combine(day, window.start, tzinfo=self.zone)
                out.append(local.astimezone(timezone.utc))
        return out

    def open_until(self, now: datetime) -> datetime | None:
        """When the window that is open at `now` (UTC) closes; None when none is open."""
        local_today = now.astimezone(self.zone).date()
        best: datetime | None = None
        for back in range(8):  # a window is at most a week long
            day = local_today - timedelta(days=back)
            for window in self.windows:
                if day.weekday() not in window.days:
                    continue
                opens = datetime.combine(day, window.start, tzinfo=self.zone).astimezone(
                    timezone.utc)
                closes = opens + window.length
                if opens <= now < closes and (best is None or closes > best):
                    best = closes
        return best

    def next_opening(self, now: datetime) -> datetime:
        """The first window opening strictly after `now` (UTC)."""
        local_today = now.astimezone(self.zone).date()
        for ahead in range(9):
            found = sorted(t for t in self._openings(local_today + timedelta(days=ahead))
                           if t > now)
            if found:
                return found[0]
        raise AssertionError("every schedule has a window each week")  # parse() guarantees it


def _error(message: str, path: str) -> InputError:
    return InputError(message, path=f"metadata.annotations[{WINDOW_ANNOTATION}]{path}")


def _days(value: Any, path: str) -> frozenset[int]:
    if not isinstance(value, list) or not value:
        raise _error("must be a non-empty list of days (Mon..Sun)", path)
    days = set()
    for i, item in enumerate(value):
        name = str(item).strip().lower() if isinstance(item, str) else ""
        if name in DAYS:
            days.add(DAYS.index(name))
        elif name in FULL_DAYS:
            days.add(FULL_DAYS.index(name))
        else:
            raise _error(f"{item!r} is not a day (Mon, Tue, ... or Monday, ...)", f"{path}[{i}]")
    return frozenset(days)


def parse(text: str, source: str = "") -> Schedule:
    """The schedule in an annotation's value; InputError naming the field otherwise."""
    try:
        docs = load_text(text, source or WINDOW_ANNOTATION)
    except InputError as e:
        raise _error(f"not YAML: {e.message}", "") from e
    data = docs[0].data if len(docs) == 1 else None
    if not isinstance(data, Mapping):
        raise _error("must be one YAML mapping (timeZone, windows, rebootlessOutsideWindow)", "")
    unknown = sorted(set(map(str, data)) - _KEYS)
    if unknown:
        raise _error(f"unknown key(s) {', '.join(unknown)}", "")
    zone_name = data.get("timeZone", "UTC")
    try:
        if not isinstance(zone_name, str) or not re.fullmatch(r"[A-Za-z0-9_+\-/]{1,64}",
                                                             zone_name):
            raise ValueError(zone_name)
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise _error(f"{zone_name!r} is not an IANA time zone (e.g. Europe/Berlin)",
                     ".timeZone") from e
    raw = data.get("windows")
    if not isinstance(raw, list) or not raw or len(raw) > MAX_WINDOWS:
        raise _error(f"must be a list of 1 to {MAX_WINDOWS} windows", ".windows")
    windows = []
    for i, item in enumerate(raw):
        path = f".windows[{i}]"
        if not isinstance(item, Mapping):
            raise _error("must be a mapping (days, start, lengthMinutes)", path)
        unknown = sorted(set(map(str, item)) - _WINDOW_KEYS)
        if unknown:
            raise _error(f"unknown key(s) {', '.join(unknown)}", path)
        start = item.get("start")
        match = _START.match(start) if isinstance(start, str) else None
        if match is None:
            raise _error(f"{start!r} is not a time HH:MM (24 h, quoted)", f"{path}.start")
        length = item.get("lengthMinutes")
        if isinstance(length, bool) or not isinstance(length, int) or \
                not 1 <= length <= MAX_LENGTH_MINUTES:
            raise _error(f"must be whole minutes from 1 to {MAX_LENGTH_MINUTES}",
                         f"{path}.lengthMinutes")
        windows.append(Window(_days(item.get("days"), f"{path}.days"),
                              time(int(match.group(1)), int(match.group(2))),
                              timedelta(minutes=length)))
    rebootless = data.get("rebootlessOutsideWindow", False)
    if not isinstance(rebootless, bool):
        raise _error("must be true or false", ".rebootlessOutsideWindow")
    return Schedule(zone, tuple(windows), rebootless)


def schedule_of(pool: Mapping[str, Any]) -> Schedule | None:
    """The pool's schedule, None when it has none. Raises InputError."""
    annotations = (pool.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(WINDOW_ANNOTATION)
    if text is None:
        return None
    if not isinstance(text, str):
        raise _error("must be a string holding YAML", "")
    return parse(text)


@dataclass(frozen=True)
class WindowState:
    """Where a pool's schedule stands at one instant."""

    open_until: datetime | None  # set while a window is open
    next_opening: datetime
    rebootless_outside: bool

    @property
    def is_open(self) -> bool:
        return self.open_until is not None

    def allows(self, disruptive: bool) -> bool:
        return self.is_open or (self.rebootless_outside and not disruptive)


def state_at(schedule: Schedule, now: datetime) -> WindowState:
    return WindowState(schedule.open_until(now), schedule.next_opening(now),
                       schedule.rebootless_outside)


def describe(state: WindowState, waiting: Sequence[str]) -> str:
    """One line for the pool condition, events and `mcc plan`."""
    if state.open_until is not None:
        text = f"maintenance window open until {rfc3339(state.open_until)}"
    else:
        text = f"maintenance window closed; next opens {rfc3339(state.next_opening)}"
        if state.rebootless_outside:
            text += " (updates without drain or reboot apply meanwhile)"
    if waiting:
        text += f"; waiting: {', '.join(sorted(waiting))}"
    return text
