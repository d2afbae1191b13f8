"""mcd.drift_monitor on a tmp root with real inotify: a change is announced by the inotify fd
(the poll interval and the full check set to an hour), rename-replace, chmod, unrelated entries,
a queue overflow, parent directories created later or removed, unit enablement links, the poll
fallback.
"""
from __future__ import annotations

import logging
import os
import select
import shutil
from pathlib import Path
from typing import Any

import pytest

from mcd import inotify
from mcd.drift_monitor import DriftMonitor
from tests.unit.daemon.test_mcd_daemon import lay_down
from tests.unit.daemon.test_mcd_update import FakeSystemd, mc, root  # noqa: F401 - root is a fixture

HOUR = 3600.0
A = mc("rendered-worker-a", {"/etc/motd": "hello", "/etc/containers/policy.json": "{}"})
MISMATCH = 'unexpected on-disk state validating against rendered-worker-a: '


def monitor(config: dict[str, Any], root: Path, systemd: FakeSystemd | None = None,
            ) -> DriftMonitor:
    """Nothing periodic for an hour: whatever it notices, inotify told it."""
    return DriftMonitor(config, root, systemd, poll_interval=HOUR, full_interval=HOUR, settle=0.0)


def readable(m: DriftMonitor, timeout: float = 5.0) -> bool:
    fd = m.fileno()
    assert fd is not None
    return bool(select.select([fd], [], [], timeout)[0])


def test_a_changed_file_is_noticed_through_inotify_without_a_poll(root: Path) -> None:
    lay_down(root, A)
    m = monitor(A, root)
    try:
        assert m.due_in() > HOUR - 60, "nothing is due before the hourly full check"
        assert not readable(m, 0.0) and m.check() is None
        (root / "etc/motd").write_text("hand edit")
        assert readable(m)
        assert m.check() == MISMATCH + 'content mismatch for file "/etc/motd"'
        (root / "etc/motd").write_text("hello")
        assert readable(m)
        assert m.check() is None
    finally:
        m.stop()


def test_a_rename_replace_and_a_chmod_are_noticed(root: Path) -> None:
    lay_down(root, A)
    m = monitor(A, root)
    try:
        temp = root / "etc/containers/.policy.json.tmp"
        temp.write_text('{"edited": true}')
        assert readable(m) and m.check() is None  # the temp file is no managed path
        os.replace(temp, root / "etc/containers/policy.json")
        assert readable(m)
        assert m.check() == MISMATCH + 'content mismatch for file "/etc/containers/policy.json"'
        (root / "etc/containers/policy.json").write_text("{}")
        assert readable(m) and m.check() is None
        (root / "etc/motd").chmod(0o600)
        assert readable(m)
        assert "mode mismatch" in (m.check() or "")
    finally:
        m.stop()


def test_unrelated_entries_wake_but_validate_nothing(root: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    lay_down(root, A)
    m = monitor(A, root)
    try:
        with caplog.at_level(logging.INFO):
            (root / "etc/hostname").write_text("node-1")
            assert readable(m)
            assert m.check() is None
        assert "on-disk state matches" not in caplog.text
        assert m.changed_at is None
    finally:
        m.stop()


def test_an_overflow_triggers_a_full_check(root: Path) -> None:
    lay_down(root, A)
    m = monitor(A, root)
    try:
        limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
        if limit > 200_000:
            pytest.skip(f"max_queued_events is {limit}: too many events to overflow it here")
        noise = [root / "etc/noise-a", root / "etc/noise-b"]
        for path in noise:
            path.write_text("")
        for i in range(limit + 10):  # alternate names: the kernel merges identical events
            os.utime(noise[i % 2])
        # the queue is full: this change's events are dropped, only the overflow tells
        (root / "etc/motd").write_text("changed while the queue was full")
        assert readable(m)
        assert m.check() == MISMATCH + 'content mismatch for file "/etc/motd"'
    finally:
        m.stop()


def test_a_missing_parent_directory_created_later_is_watched(root: Path) -> None:
    config = mc("rendered-worker-a", {"/etc/new/sub/file.conf": "x"})
    m = monitor(config, root)
    assert m.watches is not None
    try:
        assert set(m.watches.watched.values()) == {root / "etc"}  # the nearest existing one
        (root / "etc/new/sub").mkdir(parents=True)
        assert readable(m)
        assert "could not stat" in (m.check() or "")
        (root / "etc/new/sub/file.conf").write_text("x")
        # the directories appeared after the watch began: the monitor watches them now
        for _ in range(3):
            if m.check() is None:
                break
            assert readable(m)
        assert m.check() is None
        assert root / "etc/new/sub" in m.watches.watched.values()
        (root / "etc/new/sub/file.conf").write_text("y")
        assert readable(m)
        assert m.check() == MISMATCH + 'content mismatch for file "/etc/new/sub/file.conf"'
        (root / "etc/new/sub/file.conf").write_text("x")
        assert readable(m) and m.check() is None
        # the directory goes away: back to watching its parent, and back again when it returns
        shutil.rmtree(root / "etc/new")
        assert readable(m)
        assert "could not stat" in (m.check() or "")
        assert set(m.watches.watched.values()) == {root / "etc"}
        (root / "etc/new/sub").mkdir(parents=True)
        (root / "etc/new/sub/file.conf").write_text("x")
        assert readable(m) and m.check() is None
        assert root / "etc/new/sub" in m.watches.watched.values()
    finally:
        m.stop()


def test_unit_enablement_links_are_watched(root: Path) -> None:
    unit = {"name": "iri-registry.service", "enabled": True, "contents": "[Service]\n"}
    config = mc("rendered-worker-a", units=[unit])
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    (units / "iri-registry.service").write_text("[Service]\n")
    systemd = FakeSystemd()
    systemd.states["iri-registry.service"] = "enabled"
    m = monitor(config, root, systemd)
    try:
        # `systemctl enable` makes the .wants directory after the monitor started
        wants = units / "multi-user.target.wants"
        wants.mkdir()
        (wants / "iri-registry.service").symlink_to("/etc/systemd/system/iri-registry.service")
        assert readable(m) and m.check() is None
        assert m.watches is not None and wants in m.watches.watched.values()
        # `systemctl disable`: the link goes
        systemd.states["iri-registry.service"] = "disabled"
        (wants / "iri-registry.service").unlink()
        assert readable(m)
        assert m.check() == MISMATCH + "unit iri-registry.service is disabled, expected enabled"
    finally:
        m.stop()


def test_without_inotify_it_polls(root: Path) -> None:
    lay_down(root, A)
    m = DriftMonitor(A, root, None, poll_interval=0.01, full_interval=HOUR, use_inotify=False)
    assert m.fileno() is None and m.due_in() <= 0.01
    (root / "etc/motd").write_text("hand edit")
    for _ in range(100):
        if m.check() is not None:
            break
        select.select([], [], [], m.due_in())
    assert m.check() == MISMATCH + 'content mismatch for file "/etc/motd"'


def test_events_of_one_read_are_parsed_with_their_names() -> None:
    with inotify.Inotify() as watcher:
        fd = watcher.fileno()
        assert fd >= 0
        assert watcher.read() == []
    assert watcher.fd is None
    raw = (inotify._HEADER.pack(3, inotify.IN_CREATE, 0, 16) + b"motd".ljust(16, b"\0")
           + inotify._HEADER.pack(-1, inotify.IN_Q_OVERFLOW, 0, 0))
    assert inotify.parse_events(raw) == [inotify.Event(3, inotify.IN_CREATE, 0, "motd"),
                                         inotify.Event(-1, inotify.IN_Q_OVERFLOW, 0, "")]
