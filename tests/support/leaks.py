"""What a test left running: threads, child processes and pending asyncio tasks that exist after
it and did not before (tests/conftest.py checks this around every test).

Processes count as the test's when they descend from this pytest process (by parent pid) or
carry this session's MCT_LEAK_SESSION environment variable, which every child inherits unless
given an environment of its own: a program started with `setsid ... &` by a script that has
exited has lost its parent but keeps the variable. Processes are told apart by pid and start
time, so a reused pid is a new process.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field

SESSION_VAR = "MCT_LEAK_SESSION"


def _setup_session() -> str:
    token = os.environ.get(SESSION_VAR)
    if not token or os.environ.get("MCT_LEAK_SESSION_PID") != str(os.getpid()):
        # a pytest run inside a test's pytest (tests/hosts from tests/vagrant) gets its own
        token = uuid.uuid4().hex
        os.environ[SESSION_VAR] = token
        os.environ["MCT_LEAK_SESSION_PID"] = str(os.getpid())
    return token


SESSION = _setup_session()

# Who started each thread: a thread started by a thread that ran before the test (other than the
# main thread, which runs the test itself) is that thread's, e.g. the worker pool a module-scoped
# server's loop starts on its first request. Thread.start is wrapped once for the whole session.
_CREATOR = "_mct_leaks_creator"
_thread_start = threading.Thread.start


def _start_recording_creator(self: threading.Thread) -> None:
    setattr(self, _CREATOR, threading.current_thread())
    _thread_start(self)


if threading.Thread.start is _thread_start:
    threading.Thread.start = _start_recording_creator  # type: ignore[method-assign]


def _started_by_the_test(thread: threading.Thread, before: set[threading.Thread]) -> bool:
    creator = getattr(thread, _CREATOR, None)
    seen = set()
    while creator is not None and creator not in seen:
        if creator in before:
            return creator is threading.main_thread()
        seen.add(creator)
        creator = getattr(creator, _CREATOR, None)
    return True


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int  # clock ticks after boot: with the pid, one process for ever
    ppid: int
    state: str
    command: str

    def describe(self) -> str:
        zombie = " (exited, never waited for)" if self.state == "Z" else ""
        return f"process {self.pid}{zombie}: {self.command}"


def _read(path: str, size: int = 4096) -> bytes | None:
    # os.open/os.read: Path.read_* costs ten times as much, and this runs twice per test
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks: list[bytes] = []
        while True:
            chunk = os.read(fd, size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_proc(pid: int, command: bool = False) -> Proc | None:
    raw = _read(f"/proc/{pid}/stat")
    if not raw:
        return None
    stat = raw.decode(errors="replace")
    # comm may hold spaces and parentheses: the fields follow the last ')'
    head, _, rest = stat.rpartition(")")
    fields = rest.split()
    name = "[" + head.partition("(")[2] + "]"
    if command:
        cmdline = _read(f"/proc/{pid}/cmdline") or b""
        name = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()[:300] or name
    return Proc(pid, int(fields[19]), int(fields[1]), fields[0], name)


def _has_session_var(pid: int) -> bool:
    env = _read(f"/proc/{pid}/environ", 65536) or b""
    return f"{SESSION_VAR}={SESSION}".encode() in env.split(b"\0")


# (pid, start time) of processes a longer-lived fixture started while a test ran
_FIXTURE_OWNED: set[tuple[int, int]] = set()


def owned_by_fixture(pid: int) -> None:
    """Say that a process started while a test ran belongs to a session- or module-scoped
    fixture (e.g. a node booted again after a reboot by a supervisor thread), like everything
    that fixture started before: neither it nor its descendants count as that test's leak."""
    proc = _read_proc(pid)
    if proc is not None:
        _FIXTURE_OWNED.add((proc.pid, proc.start))


def processes() -> dict[tuple[int, int], Proc]:
    """This session's processes other than pytest itself (and those owned by a fixture), keyed
    by (pid, start time)."""
    me = os.getpid()
    table: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            proc = _read_proc(int(entry))
            if proc is not None:
                table[proc.pid] = proc
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    ours: set[int] = set()
    todo = list(children.get(me, []))
    # a daemon whose parent exited was reparented (to init, or a subreaper outside this tree)
    todo += [pid for pid, proc in table.items()
             if (proc.ppid == 1 or proc.ppid not in table) and _has_session_var(pid)]
    roots = {pid for pid, start in _FIXTURE_OWNED if pid in table and table[pid].start == start}
    _FIXTURE_OWNED.intersection_update((pid, table[pid].start) for pid in roots)
    owned: set[int] = set()
    while roots:
        pid = roots.pop()
        if pid not in owned:
            owned.add(pid)
            roots.update(children.get(pid, []))
    while todo:
        pid = todo.pop()
        if pid in ours or pid not in table or pid in owned:
            continue
        ours.add(pid)
        todo.extend(children.get(pid, []))
    return {(table[pid].pid, table[pid].start): table[pid] for pid in ours}


# An ssh connection-sharing master (ControlPersist, as testinfra's ssh backend uses): it belongs
# to the session-wide connection cache, whichever test opened it, and ends by itself when idle.
SSH_MUX = re.compile(r"ssh: \S+ \[mux\]")


def _with_command(proc: Proc) -> Proc:
    again = _read_proc(proc.pid, command=True)
    return again if again is not None and again.start == proc.start else proc


def pending_tasks() -> set[asyncio.Task[object]]:
    # every Task registers itself here (asyncio.all_tasks() only sees one loop's)
    registry = getattr(asyncio.tasks, "_all_tasks", None)
    if registry is None:
        return set()
    while True:
        try:
            return {task for task in list(registry) if not task.done()}
        except RuntimeError:  # the set changed size while copied: another thread made a task
            continue


@dataclass
class Snapshot:
    threads: set[threading.Thread]
    procs: dict[tuple[int, int], Proc]
    tasks: set[asyncio.Task[object]]

    @classmethod
    def take(cls) -> Snapshot:
        return cls(set(threading.enumerate()), processes(), pending_tasks())


@dataclass
class Leaks:
    threads: list[threading.Thread] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    tasks: list[asyncio.Task[object]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.threads or self.procs or self.tasks)

    def describe(self) -> str:
        lines = [f"thread {t.name!r} ({'daemon' if t.daemon else 'non-daemon'}, "
                 f"target {_target_name(t)})" for t in self.threads]
        lines += [p.describe() for p in self.procs]
        lines += [f"asyncio task {t.get_name()!r}: {_coro_name(t)}" for t in self.tasks]
        return "\n".join("  " + line for line in lines)

    def kill_processes(self) -> None:
        """SIGKILL the leaked processes (they are checked again by pid and start time) and reap
        those that are this process's children."""
        for proc in self.procs:
            again = _read_proc(proc.pid)
            if again is not None and again.start == proc.start and again.state != "Z":
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
        deadline = time.monotonic() + 2
        for proc in self.procs:
            while time.monotonic() < deadline:
                try:
                    pid, _ = os.waitpid(proc.pid, os.WNOHANG)
                except ChildProcessError:
                    break  # not our child (its own parent reaps it) or reaped already
                if pid:
                    break
                time.sleep(0.02)


def _target_name(thread: threading.Thread) -> str:
    target = getattr(thread, "_target", None)
    if target is None:
        return type(thread).__qualname__ + ".run"
    return getattr(target, "__qualname__", repr(target))


def _coro_name(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", repr(coro))


def find_leaks(before: Snapshot) -> Leaks:
    now = Snapshot.take()
    return Leaks(
        threads=sorted((t for t in now.threads - before.threads
                        if t.is_alive() and _started_by_the_test(t, before.threads)),
                       key=lambda t: t.name),
        procs=[p for p in (_with_command(p) for key, p in sorted(now.procs.items())
                           if key not in before.procs) if not SSH_MUX.match(p.command)],
        tasks=sorted(now.tasks - before.tasks, key=lambda t: t.get_name()))


def leaks_after(before: Snapshot, grace: float, poll: float = 0.05) -> Leaks:
    """The leaks that remain after up to `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        leaks = find_leaks(before)
        if not leaks or time.monotonic() >= deadline:
            return leaks
        time.sleep(poll)
