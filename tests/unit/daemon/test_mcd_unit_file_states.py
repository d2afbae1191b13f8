"""Unit file states asked many at a time: `Systemd.unit_file_states` (one ListUnitFilesByPatterns
call, GetUnitFileState for what it does not answer) against a scripted manager, and an update
of 20 units that asks the manager a handful of times, not once per unit and call site."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dbus
import dbus.exceptions
import pytest

from machineconfig.disruption import NONE, NodeDisruptionPolicy
from mcd.systemd import Systemd, SystemdError
from mcd.update import apply_update
from tests.unit.daemon.test_mcd_update import FakeSystemd, installable_units, mc, root  # noqa: F401 (fixture)


class ScriptedManager:
    """The Manager methods `unit_file_states` calls, answering from a table of unit files."""

    def __init__(self, files: dict[str, str], list_error: str | None = None) -> None:
        self.files = files  # unit file path -> the state the manager computes for it
        self.list_error = list_error
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def ListUnitFilesByPatterns(self, states: Sequence[str], patterns: Sequence[str],
                                timeout: float) -> list[tuple[str, str]]:
        self.calls.append(("ListUnitFilesByPatterns", tuple(patterns)))
        if self.list_error:
            raise dbus.exceptions.DBusException("no", name=self.list_error)
        return [(path, state) for path, state in self.files.items()
                if path.rsplit("/", 1)[-1] in patterns]

    def GetUnitFileState(self, name: str, timeout: float) -> str:
        self.calls.append(("GetUnitFileState", (name,)))
        for path, state in self.files.items():
            if path.rsplit("/", 1)[-1] == name:
                if state == "bad":
                    raise dbus.exceptions.DBusException(
                        "Bad message", name="org.freedesktop.DBus.Error.InvalidArgs")
                return state
        if name.startswith("getty@"):
            return "enabled"  # an instance of a listed template: only this call knows it
        raise dbus.exceptions.DBusException("No such file or directory",
                                            name="org.freedesktop.DBus.Error.FileNotFound")


def systemd_with(manager: ScriptedManager) -> Systemd:
    systemd = Systemd.__new__(Systemd)  # no bus: the manager is scripted
    systemd._dbus = dbus
    systemd.timeout = 1.0
    systemd.manager = manager
    return systemd


FILES = {"/etc/systemd/system/a.service": "enabled", "/usr/lib/systemd/system/b.service": "disabled",
         "/etc/systemd/system/c.timer": "masked", "/usr/lib/systemd/system/getty@.service": "enabled",
         "/etc/systemd/system/broken.service": "bad"}


def test_one_list_call_answers_the_units_it_finds() -> None:
    manager = ScriptedManager(FILES)
    states = systemd_with(manager).unit_file_states(["a.service", "b.service", "c.timer"])
    assert states == {"a.service": "enabled", "b.service": "disabled", "c.timer": "masked"}
    assert manager.calls == [("ListUnitFilesByPatterns", ("a.service", "b.service", "c.timer"))]


def test_what_the_list_does_not_answer_is_asked_one_by_one() -> None:
    manager = ScriptedManager(FILES)
    names = ["a.service", "missing.service", "getty@tty1.service", "foo\\x2dbar.service",
             "broken.service"]
    systemd = systemd_with(manager)
    with pytest.raises(SystemdError, match="broken.service"):
        # "bad" in the list is GetUnitFileState's error, as asking that unit alone would give
        systemd.unit_file_states(names)
    names.remove("broken.service")
    manager.calls.clear()
    states = systemd.unit_file_states(names)
    assert states == {"a.service": "enabled", "missing.service": "not-found",
                      "getty@tty1.service": "enabled", "foo\\x2dbar.service": "not-found"}
    # a name with a backslash reads as a pattern: never sent as one
    assert manager.calls[0] == ("ListUnitFilesByPatterns",
                                ("a.service", "getty@tty1.service", "missing.service"))
    assert sorted(manager.calls[1:]) == [("GetUnitFileState", (n,)) for n in (
        "foo\\x2dbar.service", "getty@tty1.service", "missing.service")]


def test_a_manager_without_the_list_call_is_asked_per_unit() -> None:
    manager = ScriptedManager(FILES, list_error="org.freedesktop.DBus.Error.UnknownMethod")
    assert systemd_with(manager).unit_file_states(["a.service", "b.service"]) == {
        "a.service": "enabled", "b.service": "disabled"}
    manager.list_error = "org.freedesktop.DBus.Error.AccessDenied"
    with pytest.raises(SystemdError, match="ListUnitFilesByPatterns"):
        systemd_with(manager).unit_file_states(["a.service"])


class BatchingSystemd(FakeSystemd):
    """The in-memory manager with the batched call, counting both kinds of question."""

    def __init__(self) -> None:
        super().__init__()
        self.single: list[str] = []
        self.batches: list[list[str]] = []

    def unit_file_state(self, name: str) -> str:
        self.single.append(name)
        return super().unit_file_state(name)

    def unit_file_states(self, names: Sequence[str]) -> dict[str, str]:
        self.batches.append(list(names))
        return {name: FakeSystemd.unit_file_state(self, name) for name in names}


def test_an_update_of_twenty_units_asks_their_states_in_a_few_calls(root: Path) -> None:
    names = [f"u{i:02d}.service" for i in range(20)]

    def units(tag: str) -> list[dict[str, Any]]:
        return installable_units(names, tag, lambda i: i % 4 == 0 if i % 4 < 2 else None)
    policy = NodeDisruptionPolicy(units={name: (NONE,) for name in names})
    systemd = BatchingSystemd()
    assert apply_update(mc("empty"), mc("a", units=units("a")), systemd, root=root,
                        policy=policy).state == "Done"
    systemd.single.clear()
    systemd.batches.clear()
    assert apply_update(mc("a", units=units("a")), mc("b", units=units("b")), systemd, root=root,
                        policy=policy).state == "Done"
    # before the writes, before enabling, before disabling, and the validation
    assert systemd.single == []
    assert len(systemd.batches) <= 4
    assert systemd.states["u00.service"] == "enabled"
    assert systemd.states["u01.service"] == "disabled"
