"""`mcd apply` on real systemd nodes: files, units, keys, actions, reboot, rollback, validation.

Each test boots a node of its own; host state is checked with testinfra over SSH.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.node.harness import Node
from tests.node.machineconfigs import (apply, file_entry, fixture_events, machine_config,
                                       node_state, put_config)

pytestmark = pytest.mark.timeout(300)

REGISTRIES_V1 = """unqualified-search-registries = ["registry.example.com"]

[[registry]]
prefix = ""
location = "quay.io/openshift"
mirror-by-digest-only = true

[[registry.mirror]]
location = "mirror.example.com/openshift"
"""
# appending a search registry and a digest-only mirror is a "safe" change: no drain
REGISTRIES_V2 = REGISTRIES_V1.replace('["registry.example.com"]',
                                      '["registry.example.com", "docker.io"]') + """
[[registry.mirror]]
location = "mirror2.example.com/openshift"
pull-from-mirror = "digest-only"
"""


def wait_for_events(node: Node, service: str, count: int, timeout: float = 10) -> list[str]:
    # the fixture records a reload from its signal handler, just after systemd's job ended
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = fixture_events(node, service)
        if len(events) >= count:
            return events
        time.sleep(0.1)
    return fixture_events(node, service)


def boot_id(host: Any) -> str:
    return str(host.file("/proc/sys/kernel/random/boot_id").content_string.strip())


def test_files_added_changed_removed_with_mode_owner_and_backup(node: Node) -> None:
    host = node.testinfra()
    host.run_expect([0], "printf 'distro motd\\n' > /etc/motd && chmod 0640 /etc/motd")
    a = machine_config("rendered-a", files=[file_entry("/etc/mct/keep.conf", "v1\n")])
    b = machine_config("rendered-b", files=[
        file_entry("/etc/mct/keep.conf", "v2\n", mode=0o600, user="core", group="core"),
        file_entry("/etc/mct/deep/dir/new.conf", "gzipped\n" * 50, compress=True),
        file_entry("/etc/motd", "managed motd\n", mode=0o644),
    ])
    policy = """apiVersion: operator.openshift.io/v1
kind: MachineConfiguration
spec:
  nodeDisruptionPolicy:
    files:
    - path: /etc/mct
      actions: [{type: None}]
    - path: /etc/motd
      actions: [{type: Restart, restart: {serviceName: kubelet.service}}]
"""
    status, summary = apply(node, a, b, policy)
    assert (status, summary["state"]) == (0, "Done"), summary
    assert summary["actions"] == ["restart kubelet.service"]
    keep = host.file("/etc/mct/keep.conf")
    assert (keep.content_string, keep.mode, keep.user, keep.group) == ("v2\n", 0o600, "core", "core")
    new = host.file("/etc/mct/deep/dir/new.conf")
    assert new.content_string == "gzipped\n" * 50 and new.mode == 0o644 and new.user == "root"
    assert host.file("/etc/mct/deep").mode == 0o755 and host.file("/etc/mct/deep/dir").mode == 0o755
    assert host.file("/etc/machine-config-daemon/orig/etc/motd.mcdorig").content_string == \
        "distro motd\n"
    assert host.file("/etc/machine-config-daemon/noorig/etc/mct/deep/dir/new.conf.mcdnoorig").exists
    assert host.run("find /etc -name '.*mcdtmp*'").stdout == ""
    assert wait_for_events(node, "kubelet", 3) == ["start", "stop", "start"]
    # C drops the motd (the distro's file comes back) and the file we created (deleted)
    c = machine_config("rendered-c", files=[file_entry("/etc/mct/keep.conf", "v2\n", mode=0o600,
                                                       user="core", group="core")])
    status, summary = apply(node, b, c, policy)
    assert (status, summary["state"]) == (0, "Done"), summary
    motd = host.file("/etc/motd")
    assert (motd.content_string, motd.mode) == ("distro motd\n", 0o640)
    assert not host.file("/etc/machine-config-daemon/orig/etc/motd.mcdorig").exists
    assert not host.file("/etc/mct/deep/dir/new.conf").exists
    assert node_state(node)["currentConfig"] == "rendered-c"


def test_registries_change_reloads_crio_without_restart_or_reboot(node: Node) -> None:
    host = node.testinfra()
    before = boot_id(host)
    a = machine_config("rendered-a", files=[file_entry("/etc/containers/registries.conf",
                                                       REGISTRIES_V1)])
    b = machine_config("rendered-b", files=[file_entry("/etc/containers/registries.conf",
                                                       REGISTRIES_V2)])
    status, summary = apply(node, a, b)
    assert (status, summary["state"]) == (0, "Done"), summary
    assert summary["actions"] == ["reload crio.service (registries)"]
    assert wait_for_events(node, "crio", 2) == ["start", "reload"]
    assert fixture_events(node, "kubelet") == ["start"]
    assert host.service("crio").is_running and boot_id(host) == before
    assert host.file("/etc/containers/registries.conf").content_string == REGISTRIES_V2


def test_pull_secret_change_restarts_nothing(node: Node) -> None:
    a = machine_config("rendered-a", files=[file_entry("/var/lib/kubelet/config.json", "{}")])
    b = machine_config("rendered-b", files=[file_entry("/var/lib/kubelet/config.json",
                                                       '{"auths": {}}', mode=0o600)])
    status, summary = apply(node, a, b)
    assert (status, summary["state"], summary["actions"]) == (0, "Done", ["none"]), summary
    time.sleep(0.5)
    assert fixture_events(node, "crio") == ["start"] and fixture_events(node, "kubelet") == ["start"]
    assert node.testinfra().file("/var/lib/kubelet/config.json").mode == 0o600


def test_units_added_enabled_masked_and_dropin(node: Node) -> None:
    host = node.testinfra()
    hello = "[Unit]\nDescription=mct hello\n[Service]\nType=oneshot\nRemainAfterExit=yes\n" \
            "ExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
    b = machine_config("rendered-b", units=[
        {"name": "mct-hello.service", "enabled": True, "contents": hello},
        {"name": "kubelet.service", "dropins": [{"name": "10-mct.conf",
                                                  "contents": "[Service]\nEnvironment=MCT=1\n"}]},
        {"name": "systemd-tmpfiles-clean.timer", "mask": True},
    ])
    policy = """spec:
  nodeDisruptionPolicy:
    units:
    - name: mct-hello.service
      actions: [{type: Restart, restart: {serviceName: mct-hello.service}}]
    - name: kubelet.service
      actions: [{type: Restart, restart: {serviceName: kubelet.service}}]
    - name: systemd-tmpfiles-clean.timer
      actions: [{type: None}]
"""
    reloads = "journalctl -b _PID=1 -o cat | grep -c '^Reloading'"
    before = int(host.run(reloads).stdout.strip() or 0)
    status, summary = apply(node, machine_config("rendered-a"), b, policy)
    assert (status, summary["state"]) == (0, "Done"), summary
    # three units written, one enabled, one masked: exactly one manager Reload
    assert int(host.run(reloads).stdout.strip()) == before + 1
    assert host.service("mct-hello").is_enabled and host.service("mct-hello").is_running
    assert host.file("/etc/systemd/system/systemd-tmpfiles-clean.timer").linked_to == "/dev/null"
    assert host.run("systemctl is-enabled systemd-tmpfiles-clean.timer").stdout.strip() == "masked"
    assert host.file("/etc/systemd/system/kubelet.service.d/10-mct.conf").mode == 0o644
    assert "MCT=1" in host.run("systemctl show -p Environment kubelet").stdout
    assert wait_for_events(node, "kubelet", 3) == ["start", "stop", "start"]
    # and back: the unit and drop-in leave the config, the mask is lifted
    status, summary = apply(node, b, machine_config("rendered-c"), policy)
    assert (status, summary["state"]) == (0, "Done"), summary
    assert not host.file("/etc/systemd/system/mct-hello.service").exists
    assert not host.file("/etc/systemd/system/kubelet.service.d/10-mct.conf").exists


def test_ssh_key_change(node: Node) -> None:
    host = node.testinfra()
    a = machine_config("rendered-a", users=[{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAA1 a"]}])
    b = machine_config("rendered-b", users=[{"name": "core", "sshAuthorizedKeys": [
        "ssh-ed25519 AAA2 b", "ssh-ed25519 AAA3 c"]}])
    status, summary = apply(node, a, b)
    assert (status, summary["state"], summary["actions"]) == (0, "Done", ["none"]), summary
    keys = host.file("/home/core/.ssh/authorized_keys.d/ignition")
    assert keys.content_string == "ssh-ed25519 AAA2 b\nssh-ed25519 AAA3 c\n"
    assert (keys.mode, keys.user, keys.group) == (0o600, "core", "core")
    assert host.file("/home/core/.ssh").mode == 0o700 and host.file("/home/core/.ssh").user == "core"


def _ssh_as_core(node: Node, key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-F", str(node.ssh_config), "-l", "core", "-i", str(key),
                           "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", node.name,
                           "id -un"], capture_output=True, text=True, timeout=60)


def test_core_logs_in_with_the_machineconfig_key_before_and_after_rotation(
        node: Node, tmp_path: Path) -> None:
    # stock sshd on Debian ignores ~/.ssh/authorized_keys.d/ignition: the keys have to work
    keys = {}
    for name in ("first", "second"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name,
                        "-f", str(tmp_path / name)], check=True, timeout=30)
        keys[name] = (tmp_path / f"{name}.pub").read_text().strip()
    empty = machine_config("rendered-empty")
    a = machine_config("rendered-a", users=[{"name": "core", "sshAuthorizedKeys": [keys["first"]]}])
    b = machine_config("rendered-b", users=[{"name": "core", "sshAuthorizedKeys": [keys["second"]]}])
    assert _ssh_as_core(node, tmp_path / "first").returncode != 0  # no key yet
    status, summary = apply(node, empty, a)
    assert (status, summary["state"]) == (0, "Done"), summary
    login = _ssh_as_core(node, tmp_path / "first")
    assert (login.returncode, login.stdout.strip()) == (0, "core"), login.stderr
    status, summary = apply(node, a, b)
    assert (status, summary["state"], summary["actions"]) == (0, "Done", ["none"]), summary
    login = _ssh_as_core(node, tmp_path / "second")
    assert (login.returncode, login.stdout.strip()) == (0, "core"), login.stderr
    refused = _ssh_as_core(node, tmp_path / "first")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused
    # root's own key (the harness's) still works: the drop-in keeps ~/.ssh/authorized_keys
    assert node.ssh("id -un").stdout.strip() == "root"
    dropin = node.testinfra().file("/etc/ssh/sshd_config.d/40-machine-config-ssh-keys.conf")
    assert dropin.mode == 0o644 and "authorized_keys.d/ignition" in dropin.content_string


def test_kubelet_conf_change_reboots_and_validates(node: Node) -> None:
    a = machine_config("rendered-a", files=[file_entry("/etc/kubernetes/kubelet.conf", "a: 1\n")])
    b = machine_config("rendered-b", files=[file_entry("/etc/kubernetes/kubelet.conf", "a: 2\n")])
    before = boot_id(node.testinfra())
    status, summary = apply(node, a, b)
    assert status == 0 and summary.get("rebooting") is True, summary
    node.wait_for_reboot()
    assert node.exit_statuses == [133] and node.boots == 2
    host = node.testinfra()
    assert boot_id(host) != before
    assert host.file("/etc/kubernetes/kubelet.conf").content_string == "a: 2\n"
    # machine-config-daemon.service validated the disk at boot
    assert host.service("machine-config-daemon").is_running  # oneshot, RemainAfterExit
    state = node_state(node)
    assert (state["state"], state["reason"], state["currentConfig"]) == ("Done", "", "rendered-b")


def test_failed_step_rolls_everything_back(node: Node) -> None:
    host = node.testinfra()
    # a regular file where the key directory must be makes the passwd step (the last) fail
    host.run_expect([0], "install -d -o core -g core -m 0700 /home/core/.ssh && "
                         "touch /home/core/.ssh/authorized_keys.d && "
                         "printf 'old\\n' > /etc/mct-existing.conf")
    unit = "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
    a = machine_config("rendered-a", files=[file_entry("/etc/mct-existing.conf", "old\n")])
    b = machine_config(
        "rendered-b",
        files=[file_entry("/etc/mct-existing.conf", "new\n"),
               *[file_entry(f"/etc/mct/many/{i:02}.conf", f"{i}\n") for i in range(20)]],
        units=[{"name": "mct-rollback.service", "enabled": True, "contents": unit}],
        users=[{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAA9 z"]}])
    status, summary = apply(node, a, b)
    assert (status, summary.get("state")) == (1, "Degraded"), summary
    assert "rolled back to rendered-a" in str(summary["reason"])
    assert "/home/core/.ssh/authorized_keys.d/ignition" in str(summary["reason"])
    assert host.file("/etc/mct-existing.conf").content_string == "old\n"
    assert not host.file("/etc/mct").exists
    assert not host.file("/etc/systemd/system/mct-rollback.service").exists
    assert not host.file("/etc/systemd/system/multi-user.target.wants/mct-rollback.service").exists
    assert not host.file("/etc/machine-config-daemon/currentconfig").exists
    assert not host.file("/etc/machine-config-daemon/noorig/etc/mct").exists
    assert host.run("find /etc /home/core -name '.*mcdtmp*'").stdout == ""
    assert node_state(node)["state"] == "Degraded"


def test_hand_edit_is_named_by_validate(node: Node) -> None:
    host = node.testinfra()
    b = machine_config("rendered-b", files=[file_entry("/etc/mct/managed.conf", "managed\n")])
    policy = "files:\n- path: /etc/mct\n  actions: [{type: None}]\n"
    status, summary = apply(node, machine_config("rendered-a"), b, policy)
    assert (status, summary["state"]) == (0, "Done"), summary
    path = put_config(node, b)
    assert host.run(f"mcd validate --config {path}").rc == 0
    host.run_expect([0], "echo edited >> /etc/mct/managed.conf")
    result = host.run(f"mcd validate --config {path}")
    assert result.rc == 1
    assert result.stdout.strip() == ('unexpected on-disk state validating against rendered-b: '
                                     'content mismatch for file "/etc/mct/managed.conf"')
    host.run_expect([0], "printf 'managed\\n' > /etc/mct/managed.conf && "
                         "chmod 0600 /etc/mct/managed.conf")
    result = host.run(f"mcd validate --config {path}")
    assert result.rc == 1 and 'mode mismatch for file: "/etc/mct/managed.conf"; expected: ' \
        '-rw-r--r--/420/0644; received: -rw-------/384/0600' in result.stdout


def test_os_change_is_unreconcilable_on_debian(node: Node) -> None:
    b = machine_config("rendered-b", kernelArguments=["nosmt"])
    status, summary = apply(node, machine_config("rendered-a"), b)
    assert (status, summary["state"]) == (3, "Unreconcilable"), summary
    # an nspawn node has no update-grub: kernel arguments have no GRUB way there either
    assert "changes to kernelArguments need rpm-ostree or GRUB, and this node has neither " \
        "(/run/ostree-booted is absent; no update-grub or grub-mkconfig in /usr/sbin or /sbin)" \
        in str(summary["reason"]), summary


def test_failed_reload_is_degraded_with_mco_text(node: Node) -> None:
    host = node.testinfra()
    # a running service whose reload fails: systemd's job result must reach the daemon over D-Bus
    node.put("/etc/systemd/system/mct-badreload.service",
             "[Service]\nExecStart=/bin/sleep infinity\nExecReload=/bin/false\n")
    host.run_expect([0], "systemctl daemon-reload && systemctl start mct-badreload")
    policy = ("files:\n- path: /etc/mct\n  actions: [{type: Reload, reload: "
              "{serviceName: mct-badreload.service}}]\n")
    b = machine_config("rendered-b", files=[file_entry("/etc/mct/x.conf", "x\n")])
    status, summary = apply(node, machine_config("rendered-a"), b, policy)
    assert (status, summary["state"]) == (1, "Degraded"), summary
    assert str(summary["reason"]).startswith(
        "could not apply update: reloading mct-badreload.service configuration failed. Error: ")
    # past the point of no return nothing is rolled back: the node claims B and says why it failed
    assert host.file("/etc/mct/x.conf").exists
    assert node_state(node)["currentConfig"] == "rendered-b"


# `mcd ARGS` that SIGKILLs itself right after its POINT-th rename (each atomic write ends in one)
CRASH_APPLY = """import itertools, os, signal, sys
from mcd.cli import main
renames, rename = itertools.count(1), os.rename
def counted(*args, **kwargs):
    rename(*args, **kwargs)
    if next(renames) >= int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = counted
sys.exit(main(sys.argv[2:]))
"""


def test_sigkill_mid_update_leaves_whole_files_and_next_run_converges(node: Node) -> None:
    host = node.testinfra()
    policy = "files:\n- path: /etc/mct\n  actions: [{type: None}]\n"
    a = machine_config("rendered-a", files=[file_entry(f"/etc/mct/{i:03}.conf", f"old {i}\n")
                                            for i in range(100)])
    b = machine_config("rendered-b", files=[file_entry(f"/etc/mct/{i:03}.conf", f"new {i}\n")
                                            for i in range(100)])
    status, summary = apply(node, machine_config("rendered-empty"), a, policy)
    assert (status, summary["state"]) == (0, "Done"), summary
    paths = put_config(node, a), put_config(node, b)
    node.put("/root/configs/policy.yaml", policy)
    node.put("/root/crash-apply.py", CRASH_APPLY)
    # the unit tests kill at every write point; here a few through the real CLI and D-Bus
    for point in (2, 37, 101):
        # through a shell: ssh itself fails (255) when the remote command dies by a signal
        result = host.run(f"/opt/machine-config/venv/bin/python /root/crash-apply.py {point} "
                          f"apply --current {paths[0]} "
                          f"--desired {paths[1]} --policy /root/configs/policy.yaml "
                          "2>/dev/null; echo rc=$?")
        assert result.stdout.strip().endswith("rc=137"), (point, result.stdout)
        contents = host.run("cat /etc/mct/*.conf").stdout.splitlines()
        assert len(contents) == 100
        assert all(line in (f"old {i}", f"new {i}") for i, line in enumerate(contents)), point
        current = host.run("python3 -c 'import json; print(json.load(open("
                           "\"/etc/machine-config-daemon/currentconfig\"))[\"metadata\"][\"name\"])'")
        start = paths[1] if current.stdout.strip() == "rendered-b" else paths[0]
        result = host.run(f"mcd apply --current {start} --desired {paths[1]} "
                          "--policy /root/configs/policy.yaml")
        assert result.rc == 0, result.stderr
        assert host.run(f"mcd validate --config {paths[1]}").rc == 0
        assert host.run(f"mcd apply --current {paths[1]} --desired {paths[0]} "
                        "--policy /root/configs/policy.yaml").rc == 0
