"""systemd through its Manager D-Bus API (dbus-python): unit files, reloads, restarts, reboot.

Every call carries a timeout; job-based calls wait for their job to finish and check the result.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from machineconfig.constants import DAEMON_NAME
from machineconfig.errors import MachineConfigError

log = logging.getLogger(__name__)

BUS_NAME = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
PROPS_IFACE = "org.freedesktop.DBus.Properties"
REBOOT_UNIT = f"{DAEMON_NAME}-reboot.service"
# characters that make a unit name a pattern (fnmatch) rather than itself; such names (`\` is
# legal in unit names: `foo\x2dbar.service`) are asked one by one
_PATTERN_CHARS = frozenset("*?[]\\")
DEFAULT_TIMEOUT = 30.0
JOB_TIMEOUT = 120.0


class SystemdError(MachineConfigError, RuntimeError):
    """A systemd call failed or timed out; names the call and the unit."""


class SystemdApi(Protocol):
    """What the update engine needs from systemd; tests pass an in-memory fake."""

    def daemon_reload(self) -> None: ...
    def unit_file_state(self, name: str) -> str: ...
    def enable(self, names: Sequence[str]) -> None: ...
    def disable(self, names: Sequence[str]) -> None: ...
    def preset(self, names: Sequence[str]) -> None: ...
    def mask(self, names: Sequence[str]) -> None: ...
    def unmask(self, names: Sequence[str]) -> None: ...
    def reload_unit(self, name: str) -> None: ...
    def restart_unit(self, name: str) -> None: ...
    def reboot(self, rationale: str) -> None: ...


def unit_file_states(systemd: SystemdApi, names: Sequence[str]) -> dict[str, str]:
    """The unit file state of each name: in one call where the manager offers it (`Systemd`),
    else one `unit_file_state` per name (the in-memory managers of tests and benchmarks)."""
    many = getattr(systemd, "unit_file_states", None)
    if many is not None and names:
        return dict(many(names))
    return {name: systemd.unit_file_state(name) for name in names}


class Systemd:
    """The real manager on the system bus."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, job_timeout: float = JOB_TIMEOUT) -> None:
        import dbus  # imported lazily: hosts that only plan or validate need no D-Bus

        self._dbus: Any = dbus
        self.timeout = timeout
        self.job_timeout = job_timeout
        self.bus = dbus.SystemBus()
        # introspect=False: every call names its interface and passes typed arguments, so the
        # extra Introspect round trip per object buys nothing
        self.manager = dbus.Interface(self.bus.get_object(BUS_NAME, MANAGER_PATH,
                                                          introspect=False), MANAGER_IFACE)

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self.manager, method)(*args, timeout=self.timeout)
        except self._dbus.exceptions.DBusException as err:
            raise SystemdError(f"{method}{tuple(map(str, args))}: {err.get_dbus_message()}") from err

    def daemon_reload(self) -> None:
        log.info("systemd: Reload")
        self._call("Reload")

    def unit_file_state(self, name: str) -> str:
        try:
            return str(self.manager.GetUnitFileState(name, timeout=self.timeout))
        except self._dbus.exceptions.DBusException as err:
            if err.get_dbus_name() == "org.freedesktop.systemd1.NoSuchUnit" or \
                    "No such file" in str(err.get_dbus_message()):
                return "not-found"
            raise SystemdError(f"GetUnitFileState({name}): {err.get_dbus_message()}") from err

    def unit_file_states(self, names: Sequence[str]) -> dict[str, str]:
        """GetUnitFileState of each name, most of them in one ListUnitFilesByPatterns call: the
        manager lists the unit files it finds under those names with the state it computes for
        each by the very lookup GetUnitFileState makes (one entry per name, the effective file).
        A name it does not list (no such file: an instance of a template, a missing unit) or one
        that reads as a pattern is asked with GetUnitFileState, so every answer is the same."""
        plain = sorted({name for name in names if not _PATTERN_CHARS.intersection(name)})
        states: dict[str, str] = {}
        if plain:
            dbus = self._dbus
            try:
                listed = self.manager.ListUnitFilesByPatterns(
                    dbus.Array([], signature="s"), dbus.Array(plain, signature="s"),
                    timeout=self.timeout)
            except dbus.exceptions.DBusException as err:
                if err.get_dbus_name() != "org.freedesktop.DBus.Error.UnknownMethod":
                    raise SystemdError(f"ListUnitFilesByPatterns({' '.join(plain)}): "
                                       f"{err.get_dbus_message()}") from err
                listed = []  # a manager older than systemd 230: one call per unit below
            wanted = set(plain)
            for path, state in listed:
                name = str(path).rsplit("/", 1)[-1]
                # "bad": the lookup failed, where GetUnitFileState answers with its error
                if name in wanted and str(state) != "bad":
                    states.setdefault(name, str(state))
        for name in names:
            if name not in states:
                states[name] = self.unit_file_state(name)
        return states

    def enable(self, names: Sequence[str]) -> None:
        log.info("systemd: EnableUnitFiles %s", " ".join(names))
        self._call("EnableUnitFiles", self._dbus.Array(names, signature="s"), False, True)

    def disable(self, names: Sequence[str]) -> None:
        log.info("systemd: DisableUnitFiles %s", " ".join(names))
        self._call("DisableUnitFiles", self._dbus.Array(names, signature="s"), False)

    def preset(self, names: Sequence[str]) -> None:
        log.info("systemd: PresetUnitFiles %s", " ".join(names))
        self._call("PresetUnitFiles", self._dbus.Array(names, signature="s"), False, True)

    def mask(self, names: Sequence[str]) -> None:
        log.info("systemd: MaskUnitFiles %s", " ".join(names))
        self._call("MaskUnitFiles", self._dbus.Array(names, signature="s"), False, True)

    def unmask(self, names: Sequence[str]) -> None:
        log.info("systemd: UnmaskUnitFiles %s", " ".join(names))
        self._call("UnmaskUnitFiles", self._dbus.Array(names, signature="s"), False)

    def reload_unit(self, name: str) -> None:
        log.info("systemd: ReloadUnit %s", name)
        started = self._last_exec_reload(name)
        job = self._call("ReloadUnit", name, "replace")
        self._wait_job(str(job), name)
        state, ok = self._active_state(name), self._last_exec_reload_ok(name, started)
        if state != "active" or not ok:
            raise SystemdError(f"reloading {name} failed: unit is {state}")

    def restart_unit(self, name: str) -> None:
        log.info("systemd: RestartUnit %s", name)
        job = self._call("RestartUnit", name, "replace")
        self._wait_job(str(job), name)
        state = self._active_state(name)
        if state not in ("active", "activating"):
            raise SystemdError(f"restarting {name} failed: unit is {state}")

    def active_units(self, patterns: Sequence[str]) -> list[str]:
        """Loaded units matching `patterns` (systemd's fnmatch) that run or are starting."""
        units = self._call("ListUnitsByPatterns",
                           self._dbus.Array(["active", "activating", "reloading"], signature="s"),
                           self._dbus.Array(patterns, signature="s"))
        return sorted(str(unit[0]) for unit in units)

    def stop_unit(self, name: str) -> str:
        """StopUnit and wait for its job; the unit's ActiveState after it."""
        log.info("systemd: StopUnit %s", name)
        job = self._call("StopUnit", name, "replace")
        self._wait_job(str(job), name)
        return self._active_state(name)

    def start_unit(self, name: str) -> str:
        """StartUnit and wait for its job; the unit's ActiveState after it."""
        log.info("systemd: StartUnit %s", name)
        job = self._call("StartUnit", name, "replace")
        self._wait_job(str(job), name)
        return self._active_state(name)

    def reboot(self, rationale: str) -> None:
        """Reboot through a transient unit, as MCO does, so the daemon's own exit cannot stop it."""
        dbus = self._dbus
        log.info("systemd: reboot (%s)", rationale)
        exec_start = dbus.Array([dbus.Struct(
            ("/bin/sh", dbus.Array(["/bin/sh", "-c", "systemctl reboot"], signature="s"), False),
            signature="sasb")], signature="(sasb)")
        properties = dbus.Array([
            ("Description", dbus.String(f"{DAEMON_NAME}: {rationale}", variant_level=1)),
            ("ExecStart", dbus.Array(exec_start, signature="(sasb)", variant_level=1)),
        ], signature="(sv)")
        self._call("StartTransientUnit", REBOOT_UNIT, "fail", properties,
                   dbus.Array([], signature="(sa(sv))"))

    def unit_status(self, name: str) -> str:
        """`active (running)`, `activating (auto-restart), result exit-code`: for reasons."""
        props = self._unit_props(name)
        # one GetAll per interface: the states come from one snapshot (two Gets could pair
        # the ActiveState before a restart with the SubState after it)
        unit = props.GetAll("org.freedesktop.systemd1.Unit", timeout=self.timeout)
        active, sub, load = (str(unit.get(key, "")) for key in
                             ("ActiveState", "SubState", "LoadState"))
        if load != "loaded":
            return f"{load}, {active} ({sub})"
        try:
            service = props.GetAll("org.freedesktop.systemd1.Service", timeout=self.timeout)
            result = str(service.get("Result", "success"))
        except self._dbus.exceptions.DBusException:
            result = "success"  # not a service
        return f"{active} ({sub}){'' if result == 'success' else ', result ' + result}"

    # ---- job and unit state -------------------------------------------------------------
    def _unit_props(self, name: str) -> Any:
        path = self._call("LoadUnit", name)
        return self._dbus.Interface(self.bus.get_object(BUS_NAME, path, introspect=False),
                                    PROPS_IFACE)

    def _active_state(self, name: str) -> str:
        props = self._unit_props(name)
        return str(props.Get("org.freedesktop.systemd1.Unit", "ActiveState", timeout=self.timeout))

    def _exec_reload(self, name: str) -> list[Any]:
        props = self._unit_props(name)
        try:
            return list(props.Get("org.freedesktop.systemd1.Service", "ExecReload",
                                  timeout=self.timeout))
        except self._dbus.exceptions.DBusException:
            return []  # not a service: no ExecReload to judge by

    def _last_exec_reload(self, name: str) -> int:
        runs = self._exec_reload(name)
        return int(runs[-1][3]) if runs else 0  # exec_start timestamp (usec)

    def _last_exec_reload_ok(self, name: str, started_before: int) -> bool:
        runs = self._exec_reload(name)
        if not runs:
            return True
        # (path, argv, ignore, start, start_mono, stop, stop_mono, pid, code, status)
        last = runs[-1]
        return int(last[3]) != started_before and int(last[8]) == 1 and int(last[9]) == 0

    def _wait_job(self, job_path: str, name: str) -> None:
        deadline = time.monotonic() + self.job_timeout
        delay = 0.005
        while time.monotonic() < deadline:
            try:
                job = self._dbus.Interface(self.bus.get_object(BUS_NAME, job_path,
                                                               introspect=False), PROPS_IFACE)
                job.Get("org.freedesktop.systemd1.Job", "State", timeout=self.timeout)
            except self._dbus.exceptions.DBusException:
                return  # the job object is gone: the job finished
            # most reload jobs end within milliseconds: poll fast first, then back off
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        raise SystemdError(f"job for {name} did not finish within {self.job_timeout:.0f}s")
