"""The drain of a host without Kubernetes (policy: machineconfig.localdrain): before an update
that drains, run the beforeDrain hooks, stop the policy's units that are running (remembered in
state.json first, so a crash or the reboot forgets nothing), run the afterDrain hooks; once the
node is back, start exactly those units again and run the afterReturn hooks.

A hook that fails or times out, or a unit that does not stop, blocks the drain with a one-line
reason (LocalDrainBlocked); the update then never reaches its writes or its reboot.
"""
from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from machineconfig import constants as C
from machineconfig import localdrain
from machineconfig.errors import InputError, MachineConfigError
from machineconfig.localdrain import AFTER_DRAIN, AFTER_RETURN, BEFORE_DRAIN, DrainPolicy, Hook
from mcd import state as node_state

log = logging.getLogger(__name__)

STATE_KEY = "localDrain"  # in state.json: {"config", "stopped": [units], "afterReturn": [hooks]}
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KILL_GRACE = 5.0  # after SIGTERM to a timed-out hook's process group, before SIGKILL
EXIT_GRACE = 1.0  # a hook that exited while a child keeps its output open
OUTPUT_TAIL = 16 * 1024  # bytes of a hook's output kept (its end)
LOGGED_OUTPUT = 4096
# Never stopped, whatever a pattern matches: what the daemon and the node need to come back.
PROTECTED_UNITS = (f"{C.DAEMON_NAME}*", "dbus*", "systemd-*", "init.scope", "-.mount",
                   "-.slice", "system.slice", "user*.slice", "ssh.service", "sshd.service",
                   "basic.target", "default.target", "multi-user.target", "sysinit.target",
                   "local-fs.target", "network*.target", "sockets.target", "timers.target",
                   "paths.target", "getty*", "emergency.*", "rescue.*", "*reboot*", "*shutdown*")
STOPPED_STATES = ("inactive", "failed")
RUNNING_STATES = ("active", "activating", "reloading")


class UnitControl(Protocol):
    """What a local drain needs from systemd (mcd.systemd.Systemd has it; tests fake it)."""

    def active_units(self, patterns: Sequence[str]) -> list[str]: ...
    def stop_unit(self, name: str) -> str: ...
    def start_unit(self, name: str) -> str: ...


class LocalDrainBlocked(MachineConfigError):
    """The drain cannot go on; `str()` is the one-line reason the node reports."""

    temporary = True  # a hook or unit may let it through later: retried


class LocalReturnError(MachineConfigError):
    """A stopped unit did not start again or an afterReturn hook failed; `str()` says which."""


@dataclass(frozen=True)
class HookResult:
    status: int | None  # the exit status; negative: killed by that signal; None: timed out
    output: bytes
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == 0

    def describe(self, hook: Hook) -> str:
        if self.status is None:
            what = f"timed out after {hook.timeout}s"
        elif self.status < 0:
            try:
                what = f"was killed by {signal.Signals(-self.status).name}"
            except ValueError:
                what = f"was killed by signal {-self.status}"
        else:
            what = f"exited with status {self.status}"
        lines = [line.strip() for line in self.output.decode(errors="replace").splitlines()
                 if line.strip()]
        last = f"; last output: {lines[-1][:200]!r}" if lines and not self.ok else ""
        return f"hook {hook.name!r} ({hook.phase}) {what}{last}"


HookRunner = Callable[[Hook, Path, Mapping[str, str]], HookResult]


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def run_hook(hook: Hook, root: Path, env: Mapping[str, str]) -> HookResult:
    """Run `hook` with exactly `env`, stdin from /dev/null, output (stdout and stderr) captured,
    in its own session, inside `root` (chroot(1) unless root is /). On timeout its whole
    process group gets SIGTERM, then SIGKILL after KILL_GRACE."""
    argv = list(hook.command)
    if root.resolve() != Path("/"):
        chroot = shutil.which("chroot", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/chroot"
        argv = [chroot, str(root), *argv]  # chroot(2), then chdir("/") inside the root
    started = time.monotonic()
    deadline = started + hook.timeout
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=dict(env), cwd="/",
                                start_new_session=True, close_fds=True)
    except OSError as err:
        return HookResult(127, f"cannot run {argv[0]}: {err.strerror}".encode(), 0.0)
    assert proc.stdout is not None
    tail = bytearray()
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    exited_at: float | None = None
    timed_out = False
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        open_pipe = True
        while True:
            now = time.monotonic()
            if proc.poll() is not None:
                exited_at = exited_at or now
                if not open_pipe or now - exited_at >= EXIT_GRACE:
                    break
            elif now >= deadline:
                timed_out = True
                break
            wait = deadline - now if exited_at is None else EXIT_GRACE - (now - exited_at)
            if not open_pipe:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(max(min(wait, 0.5), 0.0))
                continue
            for _ in selector.select(max(min(wait, 0.5), 0.0)):
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(fd)
                    open_pipe = False
                    break
                tail += chunk
                del tail[:-OUTPUT_TAIL]
    if timed_out:
        _kill_group(proc, signal.SIGTERM)
        try:
            proc.wait(KILL_GRACE)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            proc.wait()
    proc.stdout.close()
    return HookResult(None if timed_out else proc.returncode, bytes(tail),
                      time.monotonic() - started)


def protected(unit: str) -> bool:
    return any(fnmatch.fnmatchcase(unit, pattern) for pattern in PROTECTED_UNITS)


class LocalDrain:
    """One node's local drain; the record of what it stopped lives in the state file."""

    def __init__(self, root: Path, units: UnitControl | None, node: str,
                 run: HookRunner = run_hook,
                 event: Callable[[str, str, str], None] | None = None) -> None:
        self.root, self.units, self.node, self.run = root, units, node, run
        self.event = event or (lambda reason, message, type: None)

    # ---- the record ----------------------------------------------------------------------
    def record(self) -> dict[str, Any] | None:
        found = node_state.read_state(self.root).get(STATE_KEY)
        return dict(found) if isinstance(found, dict) else None

    def _keep(self, record: dict[str, Any] | None) -> None:
        node_state.write_fields(self.root, **{STATE_KEY: record})

    # ---- hooks ---------------------------------------------------------------------------
    def _env(self, hook: Hook, config: str) -> dict[str, str]:
        return {"PATH": HOOK_PATH, "LANG": "C.UTF-8", "MCD_NODE": self.node,
                "MCD_HOOK_NAME": hook.name, "MCD_HOOK_PHASE": hook.phase, "MCD_CONFIG": config}

    def _hooks(self, hooks: Sequence[Hook], config: str) -> str | None:
        """Run hooks in order; the first failure's one-line description, None when all pass."""
        for hook in hooks:
            log.info("hook %s (%s): %s, timeout %ss", hook.name, hook.phase,
                     " ".join(hook.command), hook.timeout)
            result = self.run(hook, self.root, self._env(hook, config))
            output = result.output.decode(errors="replace")
            if len(output) > LOGGED_OUTPUT:
                output = "[...] " + output[-LOGGED_OUTPUT:]
            log.info("hook %s (%s) %s in %.1fs%s", hook.name, hook.phase,
                     "succeeded" if result.ok else "failed", result.seconds,
                     f"; output:\n{output.rstrip()}" if output.strip() else "")
            if not result.ok:
                return result.describe(hook)
        return None

    def _blocked(self, why: str) -> LocalDrainBlocked:
        message = f"local drain of node {self.node} blocked: {why}"
        log.error("%s", message)
        self.event("DrainBlocked", message, "Warning")
        return LocalDrainBlocked(message)

    # ---- drain and return ------------------------------------------------------------------
    def drain(self, policy: DrainPolicy, desired: str) -> None:
        """Raises LocalDrainBlocked; then units may stay stopped (as pods stay evicted) and the
        next attempt runs the hooks again and keeps what the record already holds."""
        if policy.invalid:
            raise self._blocked(f"the pool's local drain policy is invalid: {policy.invalid}")
        if policy.empty:
            return
        if policy.stop_units and self.units is None:
            raise self._blocked("no systemd manager to stop units with")
        failed = self._hooks(policy.hooks_in(BEFORE_DRAIN), desired)
        if failed:
            raise self._blocked(failed)
        record = self.record() or {"stopped": []}
        stopped = [str(u) for u in record.get("stopped") or []]
        running: list[str] = []
        if policy.stop_units and self.units is not None:
            try:
                found = self.units.active_units(list(policy.stop_units))
            except Exception as err:  # noqa: BLE001 - any systemd failure blocks the same way
                raise self._blocked(f"listing the running units of {', '.join(policy.stop_units)}"
                                    f" failed: {err}") from err
            for unit in found:
                if protected(unit):
                    log.warning("unit %s matches stopUnits but is never stopped", unit)
                else:
                    running.append(unit)
        stopped += [u for u in running if u not in stopped]
        # recorded before anything stops: a crash from here on still starts them again
        self._keep({"config": desired, "stopped": stopped,
                    "afterReturn": [h.to_dict() for h in policy.hooks_in(AFTER_RETURN)]})
        for unit in running:
            assert self.units is not None
            try:
                state = self.units.stop_unit(unit)
            except Exception as err:  # noqa: BLE001
                raise self._blocked(f"stopping {unit} failed: {err}") from err
            if state not in STOPPED_STATES:
                raise self._blocked(f"{unit} is {state} after its stop job")
            log.info("local drain: stopped %s", unit)
        failed = self._hooks(policy.hooks_in(AFTER_DRAIN), desired)
        if failed:
            raise self._blocked(failed)
        log.info("local drain of node %s done: %d unit(s) stopped (%s)", self.node, len(running),
                 ", ".join(running) or "none running")

    def back(self, current: str) -> None:
        """Once the node is back in `current`: start what the drain stopped (in reverse order),
        then the afterReturn hooks; the record is cleared when all succeeded. Raises
        LocalReturnError (a retry starts only what is still left)."""
        record = self.record()
        if record is None:
            return
        stopped = [str(u) for u in record.get("stopped") or []]
        try:
            hooks = localdrain.hooks_from_records(record.get("afterReturn"))
        except InputError as err:
            log.error("afterReturn hooks in the state file ignored: %s", err)
            hooks = []
        problems = []
        for unit in reversed(list(stopped)):
            # every unit is tried: one that does not start keeps no other one down
            failed = f"starting {unit} after the local drain failed: "
            if self.units is None:
                problems.append(failed + "no systemd manager")
                continue
            try:
                state = self.units.start_unit(unit)
            except Exception as err:  # noqa: BLE001
                problems.append(failed + str(err))
                continue
            if state not in RUNNING_STATES:
                problems.append(failed + f"unit is {state}")
                continue
            log.info("local drain: started %s again", unit)
            stopped.remove(unit)
            self._keep({**record, "stopped": stopped})
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise LocalReturnError(problems[0] + more)
        hook_failed = self._hooks(hooks, current)
        if hook_failed:
            raise LocalReturnError(f"after the local drain of node {self.node}: {hook_failed}")
        self._keep(None)
        log.info("node %s is back from its local drain", self.node)
