"""mcc.controller over the real local store: render, RenderDegraded, rollout within
maxUnavailable as a fake daemon reports Done, revert, status and the run loop's clean stop."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from machineconfig.constants import DESIRED_CONFIG_ANNOTATION as DES
from machineconfig.store import Store
from mcc.controller import Controller
from machineconfig.status import find_condition
from tests.support.clusterkit import daemon_step, join, machine_config, make_store, write


def pool(store: Store) -> dict[str, object]:
    return store.get_object("MachineConfigPool", "worker")


def target(store: Store) -> str:
    return str(pool(store)["spec"]["configuration"]["name"])  # type: ignore[index]


def condition(store: Store, kind: str) -> dict[str, str]:
    found = find_condition(pool(store)["status"], kind)  # type: ignore[arg-type]
    assert found is not None
    return found


def desired(store: Store) -> dict[str, str]:
    return {n.name: n.annotations.get(DES, "") for n in store.list_nodes()}


def settle(store: Store, controller: Controller, rounds: int = 20) -> int:
    """Alternate controller passes and daemon steps until nothing moves; the most nodes ever
    between targeted and Done at once."""
    worst = 0
    for _ in range(rounds):
        store.revision()
        report = controller.run_pass()
        in_flight = sum(1 for n in store.list_nodes()
                        if n.annotations.get(DES) != n.annotations.get(
                            "machineconfiguration.openshift.io/currentConfig"))
        worst = max(worst, in_flight)
        if not daemon_step(store) and not report.targeted:
            break
    return worst


def test_render_rollout_break_and_revert(tmp_path: Path) -> None:
    store, inputs = make_store(tmp_path)
    controller = Controller(store)
    store.revision()
    controller.run_pass()
    first = target(store)
    assert first.startswith("rendered-worker-")
    assert first in store.list_rendered()
    assert condition(store, "RenderDegraded")["status"] == "False"
    events = [e.reason for e in store.list_events("MachineConfigPool", "worker")]
    assert "RenderedConfigGenerated" in events

    for name in ("n1", "n2", "n3"):
        join(store, name, first)
    settle(store, controller)
    assert condition(store, "Updated")["status"] == "True"

    # A change rolls out one node at a time (maxUnavailable: 1).
    write(inputs / "50-worker.yaml", machine_config("50-worker", "/etc/registries", "x\n"))
    assert settle(store, controller) == 1
    second = target(store)
    assert second != first
    assert set(desired(store).values()) == {second}
    assert condition(store, "Updated")["message"] == \
        f"All nodes are updated with MachineConfig {second}"
    assert pool(store)["status"]["configuration"]["name"] == second  # type: ignore[index]
    assert first not in store.list_rendered()  # garbage-collected: nothing refers to it

    # A broken MachineConfig: RenderDegraded, the last good config stays, no node touched.
    write(inputs / "50-worker.yaml",
          machine_config("50-worker", "/etc/registries", "y\n", kernel_type="bogus"))
    before = desired(store)
    settle(store, controller)
    cond = condition(store, "RenderDegraded")
    assert cond["status"] == "True"
    assert cond["message"] == ("Failed to render configuration for pool worker: "
                               "kernelType=bogus is invalid")
    assert condition(store, "Degraded")["status"] == "True"
    assert target(store) == second
    assert desired(store) == before

    # Revert: the pool renders again and is healthy.
    write(inputs / "50-worker.yaml", machine_config("50-worker", "/etc/registries", "x\n"))
    settle(store, controller)
    assert condition(store, "RenderDegraded")["status"] == "False"
    assert condition(store, "Degraded")["status"] == "False"
    assert target(store) == second
    assert condition(store, "Updated")["status"] == "True"


def test_pass_is_quiet_when_nothing_changed(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    controller = Controller(store)
    join(store, "n1", "")
    controller.run_pass()
    daemon_step(store)
    controller.run_pass()
    rev = store.revision()
    report = controller.run_pass()
    assert not report.rendered and not report.targeted and not report.statuses_written
    assert store.revision() == rev


def test_run_stops_promptly(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    controller = Controller(store)
    stop = threading.Event()
    thread = threading.Thread(target=controller.run, args=(stop, 30.0))
    thread.start()
    deadline = time.monotonic() + 10
    while not store.list_rendered() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.list_rendered()
    started = time.monotonic()
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 3


def test_mcc_start_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    store, inputs = make_store(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcc.cli", "start", "--store", f"local:{inputs}",
         "--state", str(tmp_path / "state"), "--interval", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not store.list_rendered() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.list_rendered()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "pool worker: rendered rendered-worker-" in err
    assert "controller stopped" in err


def test_mcc_start_once(tmp_path: Path) -> None:
    store, inputs = make_store(tmp_path)
    write(inputs / "50-worker.yaml",
          machine_config("50-worker", "/etc/x", "y\n", kernel_type="bogus"))
    proc = subprocess.run(
        [sys.executable, "-m", "mcc.cli", "start", "--store", f"local:{inputs}",
         "--state", str(tmp_path / "state"), "--once"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert ("mcc start: Failed to render configuration for pool worker: "
            "kernelType=bogus is invalid") in proc.stderr
    assert store.list_rendered() == []
