"""After a reboot into a new config, the daemon waits for a kubelet that answered before the
reboot: Done when it answers again, Degraded naming healthz and the unit state when it does not.

The kubelet is a TEST FIXTURE serving only /healthz on the port the config's kubelet.conf names
(the nodes share the host's network namespace: each test picks a free port); `mcd resume` at
boot finds it through that kubelet.conf.
"""
from __future__ import annotations

import time
import urllib.request

import pytest

from tests.node.harness import Node, free_port
from tests.node.machineconfigs import apply, file_entry, machine_config, node_state

pytestmark = pytest.mark.timeout(900)

WAIT = 20  # mcd resume --kubelet-wait: seconds a kubelet may take to come back
HEALTHZ_UNIT = """[Unit]
Description=TEST FIXTURE standing in for the kubelet (serves only its healthz)

[Service]
ExecStart=/usr/local/libexec/test-kubelet-healthz
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"""
# a kubelet that never comes back: it exits at once, and systemd waits to restart it longer
# than the daemon waits, so the reason always sees it in auto-restart after a failure
BROKEN_UNIT = HEALTHZ_UNIT.replace("/usr/local/libexec/test-kubelet-healthz", "/bin/false") \
    .replace("RestartSec=2", "RestartSec=1h")


def kubelet_config(name: str, port: int, unit: str, marker: str) -> dict[str, object]:
    conf = f"kind: KubeletConfiguration\nhealthzBindAddress: 127.0.0.1\nhealthzPort: {port}\n"
    return machine_config(name, files=[file_entry("/etc/kubernetes/kubelet.conf", conf),
                                       file_entry("/etc/mct/marker", marker)],
                          units=[{"name": "kubelet.service", "enabled": True, "contents": unit}])


def healthz_answers(port: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                if answer.status == 200 and answer.read() == b"ok":
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def node_in_a_with_a_healthy_kubelet(node: Node, port: int) -> dict[str, object]:
    """From nothing to config A (its kubelet serves healthz) through one reboot."""
    node.put("/etc/default/machine-config-daemon", f"MCD_ARGS=--kubelet-wait {WAIT}\n")
    a = kubelet_config("rendered-a", port, HEALTHZ_UNIT, "a\n")
    status, summary = apply(node, machine_config("rendered-0"), a)
    assert (status, summary["rebooting"]) == (0, True), summary
    node.wait_for_reboot()
    # the kubelet before this reboot (the node's event recorder) never answered: no wait
    assert node_state(node)["state"] == "Done", node_state(node)
    assert node_state(node)["kubeletHealthyBefore"] is False
    assert healthz_answers(port), f"the healthz fixture on {port} never answered"
    return a


def test_reboot_done_once_the_kubelet_answers_again(node: Node) -> None:
    port = free_port()
    a = node_in_a_with_a_healthy_kubelet(node, port)
    b = kubelet_config("rendered-b", port, HEALTHZ_UNIT, "b\n")  # a file change: reboot
    status, summary = apply(node, a, b)
    assert (status, summary["rebooting"]) == (0, True), summary
    node.wait_for_reboot()
    state = node_state(node)
    assert (state["state"], state["reason"], state["currentConfig"]) == \
        ("Done", "", "rendered-b"), state
    assert state["kubeletHealthyBefore"] is True
    journal = node.ssh("journalctl -b -u machine-config-daemon.service -o cat").stdout
    assert "kubelet healthy" in journal and "after the reboot into rendered-b" in journal, journal


def test_reboot_degraded_when_the_kubelet_does_not_come_back(node: Node) -> None:
    port = free_port()
    a = node_in_a_with_a_healthy_kubelet(node, port)
    b = kubelet_config("rendered-b", port, BROKEN_UNIT, "b\n")  # a unit change: reboot
    status, summary = apply(node, a, b)
    assert (status, summary["rebooting"]) == (0, True), summary
    started = time.monotonic()
    node.wait_for_reboot()
    state = node_state(node)
    reason = str(state["reason"])
    assert state["state"] == "Degraded" and state["currentConfig"] == "rendered-b", state
    assert reason.startswith(
        f"kubelet did not become healthy within {WAIT}s after the reboot into rendered-b: "
        f"http://127.0.0.1:{port}/healthz connection refused; kubelet.service "), reason
    # what systemd says of it, from one snapshot of the unit's properties
    assert reason.endswith("kubelet.service activating (auto-restart), result exit-code"), reason
    assert "\n" not in reason
    print(f"Degraded reason: {reason}")
    assert time.monotonic() - started >= WAIT
    # the boot-time unit reports the failure as a failed unit
    assert node.ssh("systemctl is-failed machine-config-daemon.service",
                    check=False).stdout.strip() == "failed"
