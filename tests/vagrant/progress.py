"""Timeouts that follow measured progress, for VMs that boot 2-10x slower on a busy host.

`BootWatch` reads each VM's serial console (and Vagrant's output) as it grows, splits every boot
into stages by the lines that mark them (the kernel's banner, systemd's welcome, the join, the
shutdown, sshd), and keeps when each stage began. A wait fails only when a stage is past its
budget *and* nothing advanced (no new console or log line) for `stall` seconds, or when a stage
took `cap` times its budget whatever it printed: a slow VM gets the time it needs, a hung one is
named at once with the stage it hung in. `table()` gives every stage's duration per VM.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
# systemd's "A start job is running for UNIT (1min 2s / 5min)" (older) and
# "Job UNIT/start running (1min 2s / 5min)" (252); the unit's name may be cut short with "…"
LOGIN = re.compile(r"\S login: ?(?:$|\[ *\d)")  # kernel messages may follow on its line
START_JOB = re.compile(r"(?:A (?:start|stop) job is running for (.+?)|Job (\S+?)/(?:start|stop) "
                       r"running) \(([^/()]+) / ([^()]+)\)")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# Milestones: a console line matching the pattern starts the stage named after it. Order does
# not matter (a reboot repeats them); the same milestone twice in a row counts once.
CONSOLE_MILESTONES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("kernel", re.compile(r"Linux version \d")),
    ("systemd", re.compile(r"Welcome to .*Debian|systemd\[1\]: systemd \d+")),
    # the box's drop-in echoes this (the unit's status line is cut to the console's width)
    ("join", re.compile(r"machine-config: the join starts|Starting .*from a pointer config")),
    ("sshd", re.compile(r"Starting .*OpenBSD Secure Shell|Starting .*ssh\.service")),
    # (a login prompt alone is not: getty starts before the join on the first boot)
    ("up", re.compile(r"Started .*OpenBSD Secure Shell|Started .*ssh\.service")),
    ("reset", re.compile(r"reboot: Restarting system|reboot: Power down")),
    # (a first boot that reboots from the join never reached multi-user: any target stopping)
    ("shutdown", re.compile(r"Stopped target |Reached target .*(Shutdown|Reboot)|"
                            r"systemd-shutdown\[1\]")),
)
# What each stage is, and its budget in seconds (TCG on 2 busy cores: notes/vms.md measured a
# boot of ~2 min at ±30 %; the budgets are about 2-3x what a loaded run took).
STAGES: dict[str, tuple[str, float]] = {
    "domain": ("firmware + GRUB", 180),
    "kernel": ("kernel + initramfs", 300),
    "systemd": ("systemd up to the join or sshd", 420),
    "join": ("join: mcd firstboot fetches + applies", 420),
    "sshd": ("sshd start (host keys)", 240),
    "up": ("up (sshd running)", 0),  # no budget: the VM waits for the test
    "shutdown": ("shutdown", 240),
    "reset": ("reset to the kernel", 180),
}
# Vagrant's own steps, from its output ("==> worker-1: Starting domain.")
VAGRANT_MILESTONES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("box upload", re.compile(r"Uploading base box image")),
    ("disks + domains", re.compile(r"Creating image \(snapshot of base box volume\)|"
                                   r"Creating domain with the following settings")),
    ("domain start", re.compile(r"Starting domain")),
    ("waiting for ssh", re.compile(r"Waiting for (domain to get an IP|machine to boot)")),
)
VAGRANT_BUDGETS = {"host side (vagrant/cluster start)": 300, "box upload": 600,
                   "disks + domains": 300, "domain start": 0, "waiting for ssh": 0}
# (from "domain start" on, the VMs' own stages have the budgets)


@dataclass
class Timeline:
    """One VM's (or Vagrant's) stages: (stage key, start time), in order."""
    name: str
    stages: list[tuple[str, float]] = field(default_factory=list)

    def enter(self, key: str, at: float) -> None:
        if not self.stages or self.stages[-1][0] != key:
            self.stages.append((key, at))

    @property
    def current(self) -> tuple[str, float] | None:
        return self.stages[-1] if self.stages else None

    def durations(self, now: float) -> list[tuple[str, float]]:
        out = []
        for i, (key, start) in enumerate(self.stages):
            end = self.stages[i + 1][1] if i + 1 < len(self.stages) else now
            out.append((key, end - start))
        return out


@dataclass
class _Tail:
    """New complete lines of a growing file."""
    path: Path
    offset: int = 0
    partial: str = ""

    def read(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        if not data:
            return []
        self.offset += len(data)
        text = self.partial + data.decode(errors="replace").replace("\r", "\n")
        lines = text.split("\n")
        self.partial = lines.pop()
        # a login prompt has no newline after it
        if self.partial.rstrip().endswith("login:"):
            lines.append(self.partial)
            self.partial = ""
        return lines


class StageTimeout(AssertionError):
    pass


@dataclass
class BootWatch:
    console_dir: Path
    vms: tuple[str, ...]
    vagrant_log: Path
    other_logs: tuple[Path, ...] = ()
    stall: float = 120.0  # seconds without a new line after a stage's budget ran out
    cap: float = 3.0  # a stage fails after cap x its budget even while lines keep coming
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.start = self.clock()
        self.timelines = {vm: Timeline(vm) for vm in self.vms}
        # Vagrant's steps per VM ("==> worker-1: ..."): the VMs come up in parallel
        self.vagrant = {vm: Timeline(vm) for vm in self.vms}
        for timeline in self.vagrant.values():
            timeline.enter("host side (vagrant/cluster start)", self.start)
        self._consoles = {vm: _Tail(self.console_dir / f"{vm}.log") for vm in self.vms}
        self._vagrant_tail = _Tail(self.vagrant_log)
        self._logs = [_Tail(p) for p in self.other_logs]
        self.last_activity = self.start
        self.start_jobs: dict[str, dict[str, str]] = {vm: {} for vm in self.vms}

    def poll(self) -> None:
        now = self.clock()
        for line in self._vagrant_tail.read():
            self.last_activity = now
            who = re.match(r"==> ([\w.-]+):", line.strip())
            if who is None or who.group(1) not in self.vagrant:
                continue
            for key, pattern in VAGRANT_MILESTONES:
                if pattern.search(line):
                    self.vagrant[who.group(1)].enter(key, now)
                    if key == "domain start" and self.timelines[who.group(1)].current is None:
                        self.timelines[who.group(1)].enter("domain", now)
        for vm, tail in self._consoles.items():
            for line in tail.read():
                line = ANSI.sub("", line)
                self.last_activity = now
                timeline = self.timelines[vm]
                if timeline.current is None:
                    timeline.enter("domain", now)
                job = START_JOB.search(line)
                if job:
                    unit = (job.group(1) or job.group(2)).strip()
                    self.start_jobs[vm][unit] = f"{job.group(3)} / {job.group(4)}"
                for key, pattern in CONSOLE_MILESTONES:
                    if pattern.search(line):
                        timeline.enter(key, now)
                        break
                else:
                    # systemd often ends its status output before "Started ssh.service": a
                    # login prompt after sshd's start says the VM is up as well
                    current = timeline.current
                    if current and current[0] == "sshd" and LOGIN.search(line):
                        timeline.enter("up", now)
        for tail in self._logs:
            if tail.read():
                self.last_activity = now

    def where(self) -> str:
        now = self.clock()
        parts = []
        for vm, timeline in self.timelines.items():
            current = timeline.current
            if current is None:
                parts.append(f"{vm}: not started")
            else:
                parts.append(f"{vm}: {STAGES[current[0]][0]} for {now - current[1]:.0f}s")
        return "; ".join(parts)

    def check(self, what: str, budget: float, since: float) -> None:
        """Raise StageTimeout naming the stage when a VM's stage, Vagrant's step or the wait
        for `what` itself is past its budget with no progress for `stall` s (or past cap x)."""
        now = self.clock()
        quiet = now - self.last_activity
        candidates: list[tuple[str, float, float]] = []  # (stage description, elapsed, budget)
        for vm, timeline in self.timelines.items():
            if timeline.current is not None:
                key, start = timeline.current
                title, stage_budget = STAGES[key]
                if stage_budget:
                    candidates.append((f"{vm}: {title}", now - start, stage_budget))
        for vm, timeline in self.vagrant.items():
            if timeline.current is not None:
                key, start = timeline.current
                if VAGRANT_BUDGETS.get(key):
                    candidates.append((f"{vm}: vagrant: {key}", now - start,
                                       VAGRANT_BUDGETS[key]))
        candidates.append((what, now - since, budget))
        for stage, elapsed, stage_budget in candidates:
            if elapsed > stage_budget * self.cap:
                raise StageTimeout(
                    f"{stage}: {elapsed:.0f}s, over {self.cap:g}x its budget of "
                    f"{stage_budget:.0f}s (the console kept printing)\n{self.table()}")
            if elapsed > stage_budget and quiet > self.stall:
                raise StageTimeout(
                    f"{stage}: {elapsed:.0f}s, over its budget of {stage_budget:.0f}s, and no "
                    f"console or log line for {quiet:.0f}s\n{self.table()}")

    def wait(self, done: Callable[[], T | None], what: str, budget: float,
             describe: Callable[[], str] | None = None, interval: float = 1.0) -> T:
        """Poll `done` until it returns something truthy, failing as `check` says."""
        since = self.clock()
        while True:
            self.poll()
            value = done()
            if value:
                return value
            try:
                self.check(what, budget, since)
            except StageTimeout as err:
                extra = describe() if describe else ""
                raise StageTimeout(f"waiting for {what}: {err}\n{extra}") from None
            time.sleep(interval)

    def table(self) -> str:
        """Every stage's duration, per VM and for Vagrant's own steps."""
        now = self.clock()
        lines = []
        for vm, timeline in self.vagrant.items():
            for key, seconds in timeline.durations(now):
                lines.append(f"  {vm:<9} vagrant: {key:<38} {seconds:6.0f}s")
        for vm, timeline in self.timelines.items():
            boot = 0
            for key, seconds in timeline.durations(now):
                if key in ("domain", "reset"):
                    boot += 1  # a reset is the next boot's start
                title, budget = STAGES[key]
                over = "  (over budget)" if budget and seconds > budget else ""
                lines.append(f"  {vm:<9} boot {boot}: {title:<38} {seconds:6.0f}s{over}")
            for unit, progress in self.start_jobs[vm].items():
                lines.append(f"  {vm:<9} start job seen: {unit} ({progress})")
        return "\n".join(lines)

    def sources(self) -> Iterable[Path]:
        return [t.path for t in (*self._consoles.values(), self._vagrant_tail, *self._logs)]
