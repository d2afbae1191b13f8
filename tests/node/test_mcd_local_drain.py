"""A drain on a host without Kubernetes, on real systemd nodes: `mcd apply --local-drain` stops
the running workload units before the reboot and `mcd resume` (machine-config-daemon.service at
boot) starts them again; a failing or timed-out hook blocks the update with its name and the
node never reboots.
"""
from __future__ import annotations

import json
import time

import pytest

from tests.node.harness import Node
from tests.node.machineconfigs import file_entry, machine_config, node_state, put_config

pytestmark = pytest.mark.timeout(300)

WORKLOAD_UNIT = """[Unit]
Description=TEST FIXTURE: a workload a local drain stops ({name})

[Service]
ExecStart=/bin/sleep infinity
"""
# kubelet.conf changes reboot (and drain) the node under MCO's default disruption policy
A = machine_config("rendered-a", files=[file_entry("/etc/kubernetes/kubelet.conf", "a: 1\n")])
B = machine_config("rendered-b", files=[file_entry("/etc/kubernetes/kubelet.conf", "a: 2\n")])
# each hook appends what it sees to /var/lib/hooks.log: its phase and the workload's state
RECORD = ("echo \"$MCD_HOOK_PHASE $MCD_HOOK_NAME $MCD_CONFIG "
          "$(systemctl is-active workload-web.service)\" >> /var/lib/hooks.log")


def setup_workloads(node: Node) -> None:
    """workload-web runs, workload-idle does not; neither is enabled (nothing but the daemon
    starts them at boot)."""
    for name in ("workload-web", "workload-idle"):
        node.put(f"/etc/systemd/system/{name}.service", WORKLOAD_UNIT.format(name=name))
    node.ssh("systemctl daemon-reload && systemctl start workload-web.service")


def mcd_apply(node: Node, policy: str, timeout: float = 120) -> tuple[int, dict[str, object]]:
    node.put("/root/configs/local-drain.yaml", policy)
    cmd = (f"mcd apply --current {put_config(node, A)} --desired {put_config(node, B)} "
           "--local-drain /root/configs/local-drain.yaml")
    proc = node.ssh(cmd, check=False, timeout=timeout)
    try:
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        summary = {"stdout": proc.stdout, "stderr": proc.stderr}
    return proc.returncode, summary


def boot_id(node: Node) -> str:
    return node.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()


def is_active(node: Node, unit: str) -> str:
    return node.ssh(f"systemctl is-active {unit}", check=False).stdout.strip()


def test_running_workload_is_stopped_before_the_reboot_and_started_after(node: Node) -> None:
    setup_workloads(node)
    policy = f"""
stopUnits: ["workload-*.service"]
hooks:
  - {{name: before, command: [/bin/sh, -c, '{RECORD}'], phase: beforeDrain}}
  - {{name: drained, command: [/bin/sh, -c, '{RECORD}'], phase: afterDrain}}
  - {{name: back, command: [/bin/sh, -c, '{RECORD}'], phase: afterReturn}}
"""
    before = boot_id(node)
    status, summary = mcd_apply(node, policy)
    assert status == 0 and summary.get("rebooting") is True, summary
    node.wait_for_reboot()
    assert node.exit_statuses == [133] and boot_id(node) != before
    # started again by machine-config-daemon.service (mcd resume): it was running before
    assert is_active(node, "workload-web.service") == "active"
    # not running before the drain: left alone
    assert is_active(node, "workload-idle.service") == "inactive"
    state = node_state(node)
    assert (state["state"], state["reason"], state["currentConfig"]) == ("Done", "", "rendered-b")
    assert "localDrain" not in state
    # the hooks saw the workload running, then stopped before the reboot, then running again
    log = (node.root / "var/lib/hooks.log").read_text().splitlines()
    assert log == ["beforeDrain before rendered-b active", "afterDrain drained rendered-b inactive",
                   "afterReturn back rendered-b active"], log
    journal = node.ssh("journalctl -b -1 -u workload-web.service --no-pager -o cat").stdout
    assert "Stopping" in journal or "Stopped" in journal, journal


def test_failing_hook_blocks_the_update_with_its_name_and_no_reboot(node: Node) -> None:
    setup_workloads(node)
    policy = """
stopUnits: [workload-web.service]
hooks:
  - name: quiesce-db
    command: [/bin/sh, -c, "echo 3 writers still connected >&2; exit 3"]
"""
    before = boot_id(node)
    status, summary = mcd_apply(node, policy)
    reason = ("local drain of node {} blocked: hook 'quiesce-db' (beforeDrain) exited with "
              "status 3; last output: '3 writers still connected'").format(node.name)
    assert status == 1 and summary == {"state": "Degraded", "reason": reason, "rebooting": False,
                                       "actions": []}, summary
    state = node_state(node)
    assert (state["state"], state["reason"]) == ("Degraded", reason)
    time.sleep(2)  # a reboot would have ended nspawn by now
    assert node.proc is not None and node.proc.poll() is None and boot_id(node) == before
    # nothing of B was written and the workload was never stopped
    assert (node.root / "etc/kubernetes/kubelet.conf").exists() is False
    assert is_active(node, "workload-web.service") == "active"


def test_hook_timeout_blocks_after_the_units_stopped_and_kills_the_hook(node: Node) -> None:
    setup_workloads(node)
    policy = """
stopUnits: [workload-web.service]
hooks:
  - name: slow-flush
    command: [/bin/sh, -c, "exec /bin/sleep 600"]
    timeoutSeconds: 2
    phase: afterDrain
"""
    before = boot_id(node)
    started = time.monotonic()
    status, summary = mcd_apply(node, policy)
    elapsed = time.monotonic() - started
    reason = (f"local drain of node {node.name} blocked: hook 'slow-flush' (afterDrain) timed "
              "out after 2s")
    assert status == 1 and summary["reason"] == reason, summary
    assert elapsed < 30, elapsed
    assert boot_id(node) == before and node.proc is not None and node.proc.poll() is None
    # as evicted pods stay evicted while a drain is blocked: stopped, and remembered
    assert is_active(node, "workload-web.service") == "inactive"
    record = node_state(node)["localDrain"]
    assert isinstance(record, dict) and record["stopped"] == ["workload-web.service"]
    assert node.ssh("pgrep -x sleep -a", check=False).stdout.count("600") == 0
    # the admin fixes the hook: the drain goes through, the node reboots and comes back whole
    status, summary = mcd_apply(node, policy.replace("exec /bin/sleep 600", "exit 0"))
    assert status == 0 and summary.get("rebooting") is True, summary
    node.wait_for_reboot()
    assert is_active(node, "workload-web.service") == "active"
    assert node_state(node)["state"] == "Done"
