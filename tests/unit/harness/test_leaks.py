"""tests/support/leaks.py, the check tests/conftest.py runs after every test: it names the threads,
processes and asyncio tasks a test left behind, and nothing else."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.leaks import Snapshot, find_leaks, leaks_after


def test_a_thread_left_running_is_named() -> None:
    before = Snapshot.take()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="forgotten-watch", daemon=True)
    thread.start()
    try:
        leaks = find_leaks(before)
        assert [t.name for t in leaks.threads] == ["forgotten-watch"]
        assert "thread 'forgotten-watch' (daemon, target Event.wait)" in leaks.describe()
    finally:
        stop.set()
        thread.join()
    assert not leaks_after(before, grace=2)


def test_threads_a_longer_lived_thread_starts_are_its_own() -> None:
    stop = threading.Event()
    started = threading.Event()
    pool: list[threading.Thread] = []

    def server() -> None:  # a module-scoped fixture's thread: starts workers when asked
        started.wait()
        worker = threading.Thread(target=stop.wait, name="server-worker")
        worker.start()
        pool.append(worker)
        stop.wait()

    fixture_thread = threading.Thread(target=server, name="fixture-server")
    fixture_thread.start()
    before = Snapshot.take()  # the test starts here
    started.set()
    mine = threading.Thread(target=stop.wait, name="test-thread")
    mine.start()
    try:
        deadline = time.monotonic() + 5
        while not pool and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool and pool[0].is_alive()
        assert [t.name for t in find_leaks(before).threads] == ["test-thread"]
    finally:
        stop.set()
        for thread in (mine, fixture_thread, *pool):
            thread.join()


def test_a_thread_that_ends_within_the_grace_period_is_no_leak() -> None:
    before = Snapshot.take()
    threading.Thread(target=time.sleep, args=(0.3,), name="finishing").start()
    assert not leaks_after(before, grace=2)


def test_a_child_process_and_a_detached_grandchild_are_named(tmp_path: Path) -> None:
    before = Snapshot.take()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    # a script that starts a daemon with setsid and exits: the daemon's parent is gone, but it
    # inherited the session's variable
    pid_file = tmp_path / "daemon.pid"
    subprocess.run(["sh", "-c", f"setsid sleep 61 </dev/null >/dev/null 2>&1 & echo $! > {pid_file}"],
                   check=True)
    daemon = int(pid_file.read_text())
    try:
        leaks = find_leaks(before)
        pids = {p.pid for p in leaks.procs}
        assert {child.pid, daemon} <= pids, leaks.describe()
        assert f"process {daemon}: " in leaks.describe()
    finally:
        leaks.kill_processes()
        child.wait()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{daemon}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # its parent (init) reaps it
    assert not leaks_after(before, grace=2)


def test_a_child_never_waited_for_is_named_until_it_is() -> None:
    before = Snapshot.take()
    proc = subprocess.Popen(["sleep", "0.2"])
    leaks = leaks_after(before, grace=1)
    assert f"process {proc.pid} (exited, never waited for)" in leaks.describe()
    waiter = threading.Thread(target=lambda: (time.sleep(0.3), proc.wait()))
    waiter.start()
    assert not leaks_after(before, grace=2)  # the waiter thread ends too


def test_a_pending_asyncio_task_is_named() -> None:
    before = Snapshot.take()
    loop = asyncio.new_event_loop()

    async def forgotten() -> None:
        await asyncio.sleep(3600)

    task = loop.create_task(forgotten(), name="kube-watch-n1")
    try:
        leaks = find_leaks(before)
        assert [t.get_name() for t in leaks.tasks] == ["kube-watch-n1"]
        assert "asyncio task 'kube-watch-n1': " in leaks.describe()
        assert "forgotten" in leaks.describe()
    finally:
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()
    assert not find_leaks(before)


def test_an_ssh_connection_master_is_the_connection_cache_s() -> None:
    # testinfra's ssh backend leaves `ssh: CONTROLPATH [mux]` (ControlPersist) behind on purpose
    before = Snapshot.take()
    master = subprocess.Popen(["bash", "-c", 'exec -a "ssh: /tmp/cp-worker-1 [mux]" sleep 30'])
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if Path(f"/proc/{master.pid}/cmdline").read_text().startswith("ssh: "):  # exec done
                break
            time.sleep(0.02)
        assert not find_leaks(before)
    finally:
        master.kill()
        master.wait()
