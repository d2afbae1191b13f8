"""The local store under concurrent writers: several processes and threads, and kill -9.

No update may be lost, the database must stay intact, and every write a writer saw acknowledged
must be there after the writer is killed mid-stream.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from machineconfig.rendered_config import RenderedConfig
from machineconfig.store.local import LocalStore

CTX = multiprocessing.get_context("fork")
WORKERS = 4
PATCHES = 200


@pytest.fixture()
def dirs(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "pool.yaml").write_text(
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfigPool\n"
        "metadata: {name: worker}\nspec: {}\n")
    return str(tmp_path / "in"), str(tmp_path / "state")


def _patcher(inputs: str, state: str, worker: int, start: Any) -> None:
    store = LocalStore(inputs, state)
    start.wait(30)
    for i in range(PATCHES):
        store.patch_node_annotations("n1", {f"w{worker}-{i}": str(i), f"last-{worker}": str(i)})
        if i % 50 == 0:
            store.record_event("Node", "n1", "Patch", f"{worker} {i}")
            store.update_status("MachineConfigPool", "worker", {"by": worker, "i": i})


def _integrity(state: str) -> None:
    conn = sqlite3.connect(os.path.join(state, "state.db"))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def test_processes_lose_no_update(dirs: tuple[str, str]) -> None:
    store = LocalStore(*dirs)
    store.register_node("n1", {})
    rev = store.revision()
    start = CTX.Event()
    procs = [CTX.Process(target=_patcher, args=(*dirs, w, start)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    node = store.get_node("n1")
    for w in range(WORKERS):
        for i in range(PATCHES):
            assert node.annotations[f"w{w}-{i}"] == str(i)
        assert node.annotations[f"last-{w}"] == str(PATCHES - 1)
    assert len(node.annotations) == WORKERS * (PATCHES + 1)
    # Every write bumped the revision exactly once.
    assert store.revision() == rev + WORKERS * (PATCHES + PATCHES // 50)
    assert node.resource_version == max(n.resource_version for n in store.list_nodes())
    events = store.list_events(kind="Node")
    assert len(events) == WORKERS * PATCHES // 50
    assert len({e.seq for e in events}) == len(events)
    _integrity(dirs[1])


def test_threads_lose_no_update(dirs: tuple[str, str]) -> None:
    store = LocalStore(*dirs)
    store.register_node("n1", {})
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            for i in range(50):
                store.patch_node_annotations("n1", {f"t{t}-{i}": "x"})
                store.set_node_labels("n1", {f"t{t}": str(i)})
                if i % 10 == 0:
                    store.put_rendered(RenderedConfig({"kind": "MachineConfig",
                                                       "metadata": {"name": f"rendered-{t}"},
                                                       "i": i}))
        except BaseException as e:  # reported below: a thread's exception is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    node = store.get_node("n1")
    assert len(node.annotations) == 400
    assert node.labels == {f"t{t}": "49" for t in range(8)}
    assert store.list_rendered() == [f"rendered-{t}" for t in range(8)]
    _integrity(dirs[1])


def _acking_writer(inputs: str, state: str, out: Connection) -> None:
    store = LocalStore(inputs, state)
    store.register_node("n1", {})
    i = 0
    while True:  # until killed
        store.patch_node_annotations("n1", {f"k{i}": str(i)})
        store.record_event("Node", "n1", "Ack", str(i))
        store.put_rendered(RenderedConfig({"kind": "MachineConfig",
                                           "metadata": {"name": f"rendered-{i % 7}"},
                                           "spec": {"i": i, "pad": "x" * 20000}}))
        out.send(i)  # only after all three writes returned
        i += 1


def test_kill_9_loses_no_acknowledged_write(dirs: tuple[str, str]) -> None:
    LocalStore(*dirs)  # create the database before the race
    receive, send = CTX.Pipe(duplex=False)
    proc = CTX.Process(target=_acking_writer, args=(*dirs, send))
    proc.start()
    send.close()
    acked: list[int] = []
    deadline = time.monotonic() + 60
    while len(acked) < 150 and time.monotonic() < deadline:
        if receive.poll(1):
            acked.append(receive.recv())
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    while receive.poll(0.5):  # acks sent just before the kill
        try:
            acked.append(receive.recv())
        except EOFError:
            break
    assert len(acked) >= 150
    store = LocalStore(*dirs)
    node = store.get_node("n1")
    for i in acked:
        assert node.annotations[f"k{i}"] == str(i)
    event_messages = {e.message for e in store.list_events(kind="Node", name="n1")}
    assert {str(i) for i in acked} <= event_messages
    last = acked[-1]
    for i in range(max(0, last - 6), last + 1):
        # The newest acknowledged version of each rendered file (or a later one) is there.
        got = store.get_rendered(f"rendered-{i % 7}")
        assert got.object["spec"]["i"] >= i
    _integrity(dirs[1])


def _rendered_flipper(state: str, stop: Any) -> None:
    store = LocalStore(os.path.join(os.path.dirname(state), "in"), state)
    n = 0
    while not stop.is_set():
        store.put_rendered(RenderedConfig({"kind": "MachineConfig",
                                           "metadata": {"name": "rendered-x"},
                                           "spec": {"n": n, "pad": str(n % 2) * 500_000}}))
        n += 1


def test_rendered_file_readers_never_see_a_partial_file(dirs: tuple[str, str]) -> None:
    store = LocalStore(*dirs)
    store.put_rendered(RenderedConfig({"kind": "MachineConfig", "metadata": {"name": "rendered-x"},
                                       "spec": {"n": -1, "pad": ""}}))
    path = Path(dirs[1]) / "rendered" / "rendered-x.json"
    stop = CTX.Event()
    proc = CTX.Process(target=_rendered_flipper, args=(dirs[1], stop))
    proc.start()
    seen: set[int] = set()
    deadline = time.monotonic() + 20
    while len(seen) < 20 and time.monotonic() < deadline:
        mc = store.get_rendered("rendered-x")  # raises on a torn file
        raw = json.loads(path.read_bytes())
        for obj in (mc.object, raw):
            n = obj["spec"]["n"]
            assert obj["spec"]["pad"] == ("" if n < 0 else str(n % 2) * 500_000)
            seen.add(n)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)  # mid-write, most likely
    proc.join(30)
    assert len(seen) > 2
    spec = store.get_rendered("rendered-x").object["spec"]
    assert spec["pad"] == str(spec["n"] % 2) * 500_000
    assert store.list_rendered() == ["rendered-x"]  # a killed writer's temp file is not listed


def _opener(inputs: str, state: str, start: Any, out: Any) -> None:
    start.wait(30)
    try:
        store = LocalStore(inputs, state)
        store.register_node(f"n{os.getpid()}", {})
        out.put("ok")
    except BaseException as e:  # reported to the parent
        out.put(repr(e))


def test_processes_create_a_fresh_state_dir_together(dirs: tuple[str, str]) -> None:
    start, out = CTX.Event(), CTX.Queue()
    procs = [CTX.Process(target=_opener, args=(*dirs, start, out)) for _ in range(8)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == ["ok"] * 8
    assert len(LocalStore(*dirs).list_nodes()) == 8
    _integrity(dirs[1])
