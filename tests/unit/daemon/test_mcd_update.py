"""mcd.update on a tmp root with an in-memory systemd: the transaction, its states and rollback,
and crash consistency (SIGKILL at every write point of a 100-file update, then converge).
"""
from __future__ import annotations

import base64
import gzip
import itertools
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from mcd import state as node_state
from machineconfig.disruption import DEFAULT_POLICY, NONE, NodeDisruptionPolicy, merge_policies
from mcd.on_disk_validation import validate_on_disk
from mcd.systemd import SystemdError
from machineconfig.reconcile import NotReconcilableError
from machineconfig.rendered_config import RenderedConfig
from mcd.update import apply_update, plan_update, resume_after_boot


class FakeSystemd:
    """Records calls; unit file states live in a dict; a unit name can be made to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.states: dict[str, str] = {}
        self.fail_on: set[str] = set()

    def _do(self, *call: str) -> None:
        self.calls.append(call)
        if any(name in self.fail_on for name in call[1:]) or call[0] in self.fail_on:
            raise SystemdError(f"{call[0]} failed")

    def daemon_reload(self) -> None:
        self._do("Reload")

    def unit_file_state(self, name: str) -> str:
        return self.states.get(name, "disabled")

    def enable(self, names: Sequence[str]) -> None:
        self._do("Enable", *names)
        self.states.update(dict.fromkeys(names, "enabled"))

    def disable(self, names: Sequence[str]) -> None:
        self._do("Disable", *names)
        self.states.update(dict.fromkeys(names, "disabled"))

    def preset(self, names: Sequence[str]) -> None:
        self._do("Preset", *names)

    def mask(self, names: Sequence[str]) -> None:
        self._do("Mask", *names)

    def unmask(self, names: Sequence[str]) -> None:
        self._do("Unmask", *names)

    def reload_unit(self, name: str) -> None:
        self._do("ReloadUnit", name)

    def restart_unit(self, name: str) -> None:
        self._do("RestartUnit", name)

    def reboot(self, rationale: str) -> None:
        self._do("Reboot", rationale)


def mc(name: str, files: dict[str, str] | None = None, units: list[dict[str, Any]] = (),  # type: ignore[assignment]
       **spec: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"ignition": {"version": "3.5.0"}}
    if files:
        config["storage"] = {"files": [{"path": p, "contents": {"source": "data:," + quote(t)}}
                                       for p, t in files.items()]}
    if units:
        config["systemd"] = {"units": list(units)}
    return {"metadata": {"name": name}, "spec": {"config": config, **spec}}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A node's root directory with the passwd and group files (test_mcd_daemon uses it too)."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\n")
    return tmp_path


def test_rebootless_update_is_done_with_one_reload(root: Path) -> None:
    systemd = FakeSystemd()
    old = mc("a", {"/etc/containers/policy.json": "{}"})
    new = mc("b", {"/etc/containers/policy.json": '{"x": 1}'},
             units=[{"name": "iri-registry.service", "enabled": True, "contents": "[Service]\n"}])
    outcome = apply_update(old, new, systemd, root=root)
    assert outcome.state == "Done", outcome.reason
    assert [c[0] for c in systemd.calls].count("Reload") == 1
    assert ("ReloadUnit", "crio.service") in systemd.calls
    assert ("RestartUnit", "iri-registry.service") in systemd.calls
    assert ("Enable", "iri-registry.service") in systemd.calls
    assert node_state.read_current_config(root) == RenderedConfig(new)
    assert node_state.read_state(root)["state"] == "Done"
    validate_on_disk(new, root, systemd)


def test_reboot_records_current_config_before_rebooting(root: Path) -> None:
    systemd = FakeSystemd()
    outcome = apply_update(mc("a"), mc("b", {"/etc/kubernetes/kubelet.conf": "k"}), systemd,
                           root=root)
    assert outcome.rebooting and systemd.calls[-1] == ("Reboot", "Node will reboot into config b")
    assert node_state.read_current_config(root).name == "b"  # type: ignore[union-attr]
    assert node_state.read_state(root)["postConfigAction"] == "Rebooting"
    assert resume_after_boot(systemd, root).state == "Done"
    (root / "etc/kubernetes/kubelet.conf").write_text("edited")
    outcome = resume_after_boot(systemd, root)
    assert outcome.state == "Degraded"
    assert outcome.reason == ('unexpected on-disk state validating against b: '
                              'content mismatch for file "/etc/kubernetes/kubelet.conf"')


def test_failure_before_point_of_no_return_rolls_back(root: Path) -> None:
    (root / "etc/keep").write_text("old")
    systemd = FakeSystemd()
    systemd.fail_on.add("Reload")
    old = mc("a", {"/etc/keep": "old"})
    new = mc("b", {"/etc/keep": "new", "/etc/d/new": "n"},
             units=[{"name": "x.service", "enabled": True, "contents": "[Service]\n"}])
    outcome = apply_update(old, new, systemd, root=root)
    assert outcome.state == "Degraded"
    assert outcome.reason.startswith("failed to apply b, rolled back to a: Reload failed")
    assert (root / "etc/keep").read_text() == "old"
    assert not (root / "etc/d").exists()
    assert not (root / "etc/systemd/system/x.service").exists()
    assert systemd.states["x.service"] == "disabled"  # enablement undone
    assert node_state.read_current_config(root) is None


def test_failed_reload_after_point_of_no_return_degrades_without_rollback(root: Path) -> None:
    systemd = FakeSystemd()
    systemd.fail_on.add("crio.service")
    new = mc("b", {"/etc/containers/policy.json": "{}"})
    outcome = apply_update(mc("a"), new, systemd, root=root)
    assert outcome.state == "Degraded"
    assert outcome.reason == ("could not apply update: reloading crio.service configuration "
                              "failed. Error: ReloadUnit failed")
    assert (root / "etc/containers/policy.json").exists()


def test_unreconcilable_texts(root: Path) -> None:
    outcome = apply_update(mc("a"), mc("b", fips=True), FakeSystemd(), root=root)
    assert outcome.state == "Unreconcilable"
    assert outcome.reason == (
        "can't reconcile config a with b: configs a, b are not reconcilable: new machineconfig "
        '"a" is not reconcilable against "b": detected change to FIPS flag; refusing to modify '
        "FIPS on a running cluster")
    assert node_state.read_state(root)["state"] == "Unreconcilable"
    with pytest.raises(NotReconcilableError, match="need rpm-ostree, and this node is not "
                                                   r"rpm-ostree based \(/run/ostree-booted"):
        plan_update(mc("a"), mc("b", osImageURL="quay.io/os@sha256:1", kernelType="realtime"),
                    root=root)


def test_forcefile_reboots_rewrites_units_and_is_consumed(root: Path) -> None:
    force = root / "run/machine-config-daemon-force"
    force.parent.mkdir()
    force.touch()
    systemd = FakeSystemd()
    same = mc("a", units=[{"name": "u.service", "contents": "[Service]\n"}])
    outcome = apply_update(same, same, systemd, root=root)
    assert outcome.rebooting and not force.exists()
    assert (root / "etc/systemd/system/u.service").read_text() == "[Service]\n"


def test_removed_unit_is_disabled_and_its_file_deleted(root: Path) -> None:
    systemd = FakeSystemd()
    unit = {"name": "iri-registry.service", "enabled": True, "contents": "[Service]\n"}
    assert apply_update(mc("a"), mc("b", units=[unit]), systemd, root=root).state == "Done"
    outcome = apply_update(mc("b", units=[unit]), mc("c"), systemd, root=root)
    assert outcome.state == "Done", outcome.reason
    assert ("Disable", "iri-registry.service") in systemd.calls
    assert not (root / "etc/systemd/system/iri-registry.service").exists()


def _files(count: int, version: str) -> dict[str, str]:
    return {f"/etc/mct/{i // 10}/{i:03}.conf": f"{version} {i}\n" for i in range(count)}


@pytest.fixture
def shm_root(root: Path) -> Iterator[Path]:
    """A root on tmpfs when there is one: fsync costs nothing there, the 300 crash runs stay fast."""
    if not Path("/dev/shm").is_dir():
        yield root
        return
    with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
        shutil.copytree(root, tmp, dirs_exist_ok=True)
        yield Path(tmp)


def crash_after_renames(point: int) -> None:
    """In a forked "daemon": SIGKILL this process right after its `point`-th rename (every atomic
    write of a file, a link or a record ends in one), by wrapping os.rename."""
    renames, rename = itertools.count(1), os.rename

    def counted(*args: Any, **kwargs: Any) -> None:
        rename(*args, **kwargs)
        if next(renames) >= point:
            os.kill(os.getpid(), signal.SIGKILL)
    os.rename = counted  # type: ignore[assignment]


def test_sigkill_at_every_write_point_leaves_old_or_new_and_converges(shm_root: Path) -> None:
    root = shm_root
    old_files, new_files = _files(100, "old"), _files(100, "new")
    old, new = mc("a", old_files), mc("b", new_files)
    policy = merge_policies(DEFAULT_POLICY, NodeDisruptionPolicy(files={"/etc/mct": (NONE,)}))
    assert apply_update(mc("empty"), old, FakeSystemd(), root=root, policy=policy).state == "Done"
    point = 0
    while True:
        point += 1
        pid = os.fork()
        if pid == 0:  # the "daemon": dies by SIGKILL at write number `point`
            crash_after_renames(point)
            try:
                apply_update(old, new, FakeSystemd(), root=root, policy=policy)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        for path, text in new_files.items():
            on_disk = (root / path.lstrip("/")).read_text()
            assert on_disk in (old_files[path], text), f"{path} torn at write point {point}"
        if not os.WIFSIGNALED(status):
            break  # the update finished before reaching this write point
        assert os.WTERMSIG(status) == signal.SIGKILL
        # the restarted daemon still believes it is in A (or already in B) and converges
        current = node_state.read_current_config(root) or old
        outcome = apply_update(current, new, FakeSystemd(), root=root, policy=policy)
        assert outcome.state == "Done", (point, outcome.reason)
        validate_on_disk(new, root)
        # back to A for the next crash point
        assert apply_update(new, old, FakeSystemd(), root=root, policy=policy).state == "Done"
    assert point > 100  # every file write (and the state writes) was a crash point


def test_boot_keeps_a_failed_move_to_another_config(root: Path) -> None:
    systemd = FakeSystemd()
    assert apply_update(mc("empty"), mc("a"), systemd, root=root).state == "Done"
    assert apply_update(mc("a"), mc("b", fips=True), systemd, root=root).state == "Unreconcilable"
    outcome = resume_after_boot(systemd, root)
    assert outcome.state == "Unreconcilable" and "FIPS" in outcome.reason
    assert node_state.read_state(root)["desiredConfig"] == "b"


class CountingSystemd(FakeSystemd):
    def __init__(self) -> None:
        super().__init__()
        self.state_queries: list[str] = []

    def unit_file_state(self, name: str) -> str:
        self.state_queries.append(name)
        return super().unit_file_state(name)


def installable_units(names: Sequence[str], tag: str, enabled: Callable[[int], bool | None]
                      ) -> list[dict[str, Any]]:
    """Units with an [Install] section whose contents carry `tag`; `enabled(i)` None leaves the
    field out."""
    return [{"name": name, **({} if enabled(i) is None else {"enabled": enabled(i)}),
             "contents": f"[Service]\nExecStart=/bin/true {tag}\n[Install]\nWantedBy=multi-user.target\n"}
            for i, name in enumerate(names)]


def test_unit_file_states_are_asked_once_until_changed_and_rollback_uses_prior(root: Path) -> None:
    names = [f"u{i}.service" for i in range(4)]

    def units(tag: str) -> list[dict[str, Any]]:
        return installable_units(names, tag, lambda i: i % 2 == 0)
    policy = NodeDisruptionPolicy(units={name: (NONE,) for name in names})
    systemd = CountingSystemd()
    assert apply_update(mc("empty"), mc("a", units=units("a")), systemd, root=root,
                        policy=policy).state == "Done"
    systemd.state_queries.clear()
    assert apply_update(mc("a", units=units("a")), mc("b", units=units("b")), systemd, root=root,
                        policy=policy).state == "Done"
    # before the writes (is it enabled?), after them (enable/disable filters), and the
    # validation: at most three times per unit, never once per call site and unit
    assert all(systemd.state_queries.count(f"u{i}.service") <= 3 for i in range(4))
    # a failing update rolls enablement back to the states from before it
    systemd.fail_on = {"Reload"}
    assert systemd.states["u0.service"] == "enabled"
    swapped = [{**u, "enabled": not u["enabled"]} for u in units("c")]
    outcome = apply_update(mc("b", units=units("b")), mc("c", units=swapped), systemd, root=root,
                           policy=policy)
    assert outcome.state == "Degraded"
    assert systemd.states["u0.service"] == "enabled"
    assert systemd.states["u1.service"] == "disabled"


def test_first_key_write_reloads_sshd_once_on_a_daemonset_root(root: Path) -> None:
    # a Debian host seen through /rootfs (the DaemonSet): the drop-in is installed and the host's
    # sshd reloaded through its manager; a later rotation needs no reload
    uid, gid = os.getuid(), os.getgid()
    (root / "etc/passwd").write_text(f"root:x:0:0::/root:/bin/sh\ncore:x:{uid}:{gid}::/home/core:/bin/sh\n")
    (root / "etc/shadow").write_text("root:*:1::::::\ncore:*:1::::::\n")
    (root / "home/core").mkdir(parents=True)
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True)
    (root / "etc/ssh/sshd_config").write_text("Include /etc/ssh/sshd_config.d/*.conf\n")
    systemd = FakeSystemd()
    systemd.states["ssh.service"] = "enabled"

    def keyed(name: str, key: str) -> dict[str, Any]:
        config = mc(name)
        config["spec"]["config"]["passwd"] = {"users": [{"name": "core",
                                                         "sshAuthorizedKeys": [key]}]}
        return config

    outcome = apply_update(mc("a"), keyed("b", "ssh-ed25519 AAA1 a"), systemd, root=root)
    assert outcome.state == "Done", outcome
    assert ("ReloadUnit", "ssh.service") in systemd.calls
    assert (root / "etc/ssh/sshd_config.d/40-machine-config-ssh-keys.conf").exists()
    systemd.calls.clear()
    outcome = apply_update(keyed("b", "ssh-ed25519 AAA1 a"), keyed("c", "ssh-ed25519 AAA2 b"),
                           systemd, root=root)
    assert outcome.state == "Done" and ("ReloadUnit", "ssh.service") not in systemd.calls


class TamperingSystemd(FakeSystemd):
    """Changes a file on disk when crio is reloaded: after the update wrote it, before the
    validation that follows the post-config actions."""

    def __init__(self, root: Path, path: str, data: bytes) -> None:
        super().__init__()
        self.target, self.data = root / path.lstrip("/"), data

    def reload_unit(self, name: str) -> None:
        super().reload_unit(name)
        self.target.write_bytes(self.data)


def _encoded(text: bytes, how: str) -> dict[str, str]:
    if how == "gzip":
        return {"source": "data:;base64," + base64.b64encode(gzip.compress(text)).decode(),
                "compression": "gzip"}
    if how == "base64":
        return {"source": "data:text/plain;charset=utf-8;base64," + base64.b64encode(text).decode()}
    return {"source": "data:," + quote(text)}


@pytest.mark.parametrize("how", ["percent", "base64", "gzip"])
@pytest.mark.parametrize("tampered", [b"registry: B", b"registry: changed"],
                         ids=["same-size", "other-size"])
def test_a_file_changed_between_write_and_validation_is_reported(root: Path, how: str,
                                                                 tampered: bytes) -> None:
    """The validation takes the expected bytes from the update's decoded data URLs but still
    reads the disk, so a change made after the write (same size or not) is a content mismatch."""
    path = "/etc/containers/registries.d/x.yaml"

    def config(name: str, text: bytes) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": {"config": {
            "ignition": {"version": "3.5.0"},
            "storage": {"files": [{"path": path, "contents": _encoded(text, how)}]}}}}

    old, new = config("a", b"registry: a"), config("b", b"registry: b")
    systemd = TamperingSystemd(root, path, tampered)
    outcome = apply_update(old, new, systemd, root=root)
    assert ("ReloadUnit", "crio.service") in systemd.calls
    assert outcome.state == "Degraded"
    assert outcome.reason == ("unexpected on-disk state validating against b: "
                              f'content mismatch for file "{path}"')
    # and untouched, the same update validates
    (root / path.lstrip("/")).write_bytes(b"registry: b")
    validate_on_disk(new, root, systemd)


def test_the_update_forgets_the_decoded_bytes(root: Path) -> None:
    """Each data URL is decoded once within an update; the bytes are not kept after it."""
    from machineconfig.ignition import dataurl

    files = {f"/etc/containers/registries.d/f{i}.yaml": f"r{i}" for i in range(3)}
    assert apply_update(mc("a"), mc("b", files), FakeSystemd(), root=root).state == "Done"
    assert dataurl._MEMO is None
    for path, text in files.items():
        assert (root / path.lstrip("/")).read_text() == text
