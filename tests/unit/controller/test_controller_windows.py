"""A pool's maintenance window in the controller (the real local store, a fake clock): disruptive
updates start only inside the window, rebootless ones outside it when the pool says so; the pool
condition says when the window opens and who waits; `mcc plan` says the same."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import yaml

from machineconfig.constants import DESIRED_CONFIG_ANNOTATION as DES
from machineconfig.store import Store
from mcc.controller import Controller
from mcc.plan import format_text, plan_pool
from machineconfig.status import find_condition
from mcc.windows import WINDOW_ANNOTATION
from tests.support.clusterkit import POOL, daemon_step, join, machine_config, make_store, write

# Saturdays 22:00-23:00 in Berlin (21:00-22:00 UTC in December)
SCHEDULE = """timeZone: Europe/Berlin
windows:
  - days: [Sat]
    start: "22:00"
    lengthMinutes: 60
"""
MONDAY = "2026-12-07T10:00:00Z"
SATURDAY_IN_WINDOW = "2026-12-12T21:10:00Z"


class Clock:
    def __init__(self, now: str) -> None:
        self.value = now

    def __call__(self) -> str:
        return self.value


def pool_with_window(rebootless: bool) -> str:
    pool = yaml.safe_load(POOL)
    text = SCHEDULE + (f"rebootlessOutsideWindow: {str(rebootless).lower()}\n")
    pool.setdefault("metadata", {}).setdefault("annotations", {})[WINDOW_ANNOTATION] = text
    return yaml.safe_dump(pool)


def desired(store: Store) -> dict[str, str]:
    return {n.name: n.annotations.get(DES, "") for n in store.list_nodes()}


def target(store: Store) -> str:
    return str(store.get_object("MachineConfigPool", "worker")["spec"]["configuration"]["name"])


def window_condition(store: Store) -> dict[str, str]:
    found = find_condition(store.get_object("MachineConfigPool", "worker")["status"],
                           "MaintenanceWindow")
    assert found is not None
    return found


def settle(store: Store, controller: Controller) -> None:
    for _ in range(20):
        store.revision()
        report = controller.run_pass()
        if not daemon_step(store) and not report.targeted:
            return


def setup(tmp_path: Path, rebootless: bool) -> tuple[Store, Path, Controller, Clock]:
    store, inputs = make_store(tmp_path)
    write(inputs / "pool.yaml", pool_with_window(rebootless))
    clock = Clock(MONDAY)
    controller = Controller(store, now=clock)
    settle(store, controller)
    first = target(store)
    for name in ("n1", "n2"):
        join(store, name, first)
    settle(store, controller)
    return store, inputs, controller, clock


def test_a_reboot_waits_for_the_window_then_rolls_out(tmp_path: Path) -> None:
    store, inputs, controller, clock = setup(tmp_path, rebootless=True)
    before = desired(store)
    cond = window_condition(store)
    assert (cond["status"], cond["reason"]) == ("False", "Closed")
    assert cond["message"] == "maintenance window closed; next opens 2026-12-12T21:00:00Z " \
                              "(updates without drain or reboot apply meanwhile)"

    # a new file the default policy reboots for: nobody starts on Monday
    write(inputs / "50-worker.yaml", machine_config("50-worker", "/etc/motd2", "x\n"))
    settle(store, controller)
    second = target(store)
    assert second not in before.values()
    assert desired(store) == before
    cond = window_condition(store)
    assert cond["message"].endswith("; waiting: n1, n2"), cond
    reasons = [e.reason for e in store.list_events("MachineConfigPool", "worker")]
    assert "WaitingForMaintenanceWindow" in reasons
    # the controller wakes up for the opening, not 30 s at a time
    assert controller.window_wake_in(datetime(2026, 12, 12, 20, 59, tzinfo=timezone.utc)) == 60

    # mcc plan says the same
    plan = plan_pool(store.get_object("MachineConfigPool", "worker"), second, "",
                     store.list_nodes(), store.get_rendered,
                     now=datetime(2026, 12, 7, 10, tzinfo=timezone.utc))
    text = format_text([plan])
    assert "  maintenance window closed; next opens 2026-12-12T21:00:00Z" in text
    assert "  n1: drain, reboot; waits for the maintenance window (" in text

    # Saturday night: the window is open, the rollout runs within maxUnavailable
    clock.value = SATURDAY_IN_WINDOW
    settle(store, controller)
    assert set(desired(store).values()) == {second}
    cond = window_condition(store)
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "True", "Open", "maintenance window open until 2026-12-12T22:00:00Z")


def test_a_rebootless_change_goes_through_outside_the_window(tmp_path: Path) -> None:
    store, inputs, controller, _ = setup(tmp_path, rebootless=True)
    # the pull secret: no action at all under the default policy
    write(inputs / "50-worker.yaml",
          machine_config("50-worker", "/var/lib/kubelet/config.json", "{}\n"))
    settle(store, controller)
    assert set(desired(store).values()) == {target(store)}


def test_without_rebootless_nothing_starts_outside_the_window(tmp_path: Path) -> None:
    store, inputs, controller, _ = setup(tmp_path, rebootless=False)
    before = desired(store)
    write(inputs / "50-worker.yaml",
          machine_config("50-worker", "/var/lib/kubelet/config.json", "{}\n"))
    settle(store, controller)
    assert desired(store) == before


def test_an_unreadable_window_holds_every_update_and_says_why(tmp_path: Path) -> None:
    store, inputs, controller, _ = setup(tmp_path, rebootless=True)
    before = desired(store)
    pool = yaml.safe_load(pool_with_window(True))
    pool["metadata"]["annotations"][WINDOW_ANNOTATION] = ("windows: [{days: [Caturday], start: '1:00', "
                                                     "lengthMinutes: 5}]")
    write(inputs / "pool.yaml", yaml.safe_dump(pool))
    write(inputs / "50-worker.yaml",
          machine_config("50-worker", "/var/lib/kubelet/config.json", "{}\n"))
    settle(store, controller)
    assert desired(store) == before
    cond = window_condition(store)
    assert (cond["status"], cond["reason"]) == ("False", "InvalidSchedule")
    assert "'Caturday' is not a day" in cond["message"]
