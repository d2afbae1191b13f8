"""mcc.windows: parsing a pool's maintenance window, open/closed, next opening, DST."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from machineconfig.errors import InputError
from mcc.windows import WINDOW_ANNOTATION, describe, parse, schedule_of, state_at

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


WEEKEND_NIGHTS = """
timeZone: Europe/Berlin
windows:
  - days: [Sat, Sunday]
    start: "22:30"
    lengthMinutes: 120
"""


def test_a_window_crossing_midnight_in_its_time_zone() -> None:
    s = parse(WEEKEND_NIGHTS)
    # Saturday 2026-12-12, 22:30 CET = 21:30 UTC; open until Sunday 00:30 CET
    assert s.open_until(at("2026-12-12T21:29:59+00:00")) is None
    assert s.open_until(at("2026-12-12T21:30:00+00:00")) == at("2026-12-12T23:30:00+00:00")
    assert s.open_until(at("2026-12-12T23:59:00+01:00")) == at("2026-12-13T00:30:00+01:00")
    assert s.open_until(at("2026-12-13T00:30:00+01:00")) is None  # the end is exclusive
    # a Monday: the next opening is Saturday's
    assert s.next_opening(at("2026-12-07T10:00:00+00:00")) == at("2026-12-12T22:30:00+01:00")
    # inside Saturday's window the next opening is Sunday's
    assert s.next_opening(at("2026-12-12T22:45:00+01:00")) == at("2026-12-13T22:30:00+01:00")


def test_dst_gap_and_repeated_hour() -> None:
    # Europe/Berlin: 2026-03-29 clocks jump 02:00 -> 03:00; 2026-10-25 they go 03:00 -> 02:00
    s = parse('timeZone: Europe/Berlin\nwindows: [{days: [Sun], start: "02:30", '
              'lengthMinutes: 60}]')
    # the nonexistent 02:30 is read at the old offset (+01:00): opens 03:30 CEST = 01:30 UTC
    assert s.next_opening(at("2026-03-28T12:00:00+00:00")) == at("2026-03-29T01:30:00+00:00")
    assert s.open_until(at("2026-03-29T01:30:00+00:00")) == at("2026-03-29T02:30:00+00:00")
    # 02:30 happens twice: the first (CEST, +02:00) opens it, for 60 real minutes
    assert s.next_opening(at("2026-10-24T12:00:00+00:00")) == at("2026-10-25T00:30:00+00:00")
    assert s.open_until(at("2026-10-25T01:00:00+00:00")) == at("2026-10-25T01:30:00+00:00")
    assert s.open_until(at("2026-10-25T01:30:00+00:00")) is None  # 02:30 CET: no second run


def test_state_and_its_description() -> None:
    s = parse(WEEKEND_NIGHTS + "rebootlessOutsideWindow: true\n")
    closed = state_at(s, at("2026-12-07T10:00:00+00:00"))
    assert not closed.is_open and closed.allows(disruptive=False)
    assert not closed.allows(disruptive=True)
    assert describe(closed, ["n2", "n1"]) == (
        "maintenance window closed; next opens 2026-12-12T21:30:00Z (updates without drain or "
        "reboot apply meanwhile); waiting: n1, n2")
    opened = state_at(s, at("2026-12-12T21:45:00+00:00"))
    assert opened.allows(disruptive=True)
    assert describe(opened, []) == "maintenance window open until 2026-12-12T23:30:00Z"
    strict = state_at(parse(WEEKEND_NIGHTS), at("2026-12-07T10:00:00+00:00"))
    assert not strict.allows(disruptive=False)  # default: nothing starts outside a window


def test_utc_by_default_and_a_week_long_window() -> None:
    s = parse('windows: [{days: [mon], start: "0:00", lengthMinutes: 10080}]')
    assert s.open_until(at("2026-12-13T23:59:00+00:00")) == at("2026-12-14T00:00:00+00:00")
    assert s.next_opening(at("2026-12-13T23:59:00+00:00")) == at("2026-12-14T00:00:00+00:00")


@pytest.mark.parametrize(("text", "where", "why"), [
    ("windows: []", ".windows", "must be a list of 1 to 100 windows"),
    ("timeZone: Mars/Olympus\nwindows: [{days: [Sat], start: '1:00', lengthMinutes: 5}]",
     ".timeZone", "'Mars/Olympus' is not an IANA time zone"),
    ("timeZone: ../../etc/passwd\nwindows: [{days: [Sat], start: '1:00', lengthMinutes: 5}]",
     ".timeZone", "is not an IANA time zone"),
    ("windows: [{days: [Caturday], start: '1:00', lengthMinutes: 5}]", ".windows[0].days[0]",
     "'Caturday' is not a day"),
    ("windows: [{days: [Sat], start: '24:00', lengthMinutes: 5}]", ".windows[0].start",
     "'24:00' is not a time HH:MM"),
    ("windows: [{days: [Sat], start: 90, lengthMinutes: 5}]", ".windows[0].start",
     "90 is not a time HH:MM"),
    ("windows: [{days: [Sat], start: '1:00', lengthMinutes: 0}]", ".windows[0].lengthMinutes",
     "must be whole minutes from 1 to 10080"),
    ("windows: [{days: [Sat], start: '1:00', lengthMinutes: 5, length: 3}]", ".windows[0]",
     "unknown key(s) length"),
    ("windows: [{days: [Sat], start: '1:00', lengthMinutes: 5}]\nrebootlessOutsideWindow: yes!",
     ".rebootlessOutsideWindow", "must be true or false"),
    ("- just a list", "", "must be one YAML mapping"),
    ("windows: [", "", "not YAML"),
])
def test_bad_schedules_name_the_field(text: str, where: str, why: str) -> None:
    with pytest.raises(InputError) as caught:
        parse(text)
    message = str(caught.value)
    assert message.startswith(f"metadata.annotations[{WINDOW_ANNOTATION}]{where}: "), message
    assert why in message and "\n" not in message


def test_schedule_of_a_pool() -> None:
    assert schedule_of({"metadata": {"name": "worker"}}) is None
    pool = {"metadata": {"annotations": {WINDOW_ANNOTATION: WEEKEND_NIGHTS}}}
    schedule = schedule_of(pool)
    assert schedule is not None and len(schedule.windows) == 1
    assert schedule.windows[0].length == timedelta(minutes=120)
