"""mcd.rpm_ostree: MCO's rpm-ostree command lines, staging rollback, and the OS checks."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from machineconfig.disruption import compute_diff
from machineconfig.rendered_config import RenderedConfig
from mcd.on_disk_validation import OnDiskValidationError, validate_os
from mcd.rpm_ostree import (OSUpdateError, apply_os_changes, os_commands,
                            split_kernel_arguments)
from mcd.update import apply_update
from tests.unit.daemon.test_mcd_update import FakeSystemd


class FakeRpmOstree:
    def __init__(self, booted: str = "quay.io/os@sha256:old", kargs: str = "ro quiet",
                 fail: str = "") -> None:
        self.calls: list[list[str]] = []
        self.booted, self.kargs, self.fail = booted, kargs, fail

    def __call__(self, args: Sequence[str]) -> str:
        self.calls.append(list(args))
        if self.fail and args[0] == self.fail:
            raise OSUpdateError(f"rpm-ostree {args[0]} exited 1: boom")
        if list(args) == ["status", "--json"]:
            return json.dumps({"deployments": [
                {"booted": True, "container-image-reference":
                 f"ostree-unverified-registry:{self.booted}"}]})
        if list(args) == ["kargs"]:
            return self.kargs + "\n"
        return ""


def mc(name: str = "x", **spec: Any) -> RenderedConfig:
    return RenderedConfig({"metadata": {"name": name},
                           "spec": {"config": {"ignition": {"version": "3.5.0"}}, **spec}})


def test_split_kernel_arguments_like_the_kernel() -> None:
    assert split_kernel_arguments(' a=1  b="x y" c\tquiet ') == ["a=1", 'b="x y"', "c", "quiet"]


def test_kargs_delete_old_then_append_new() -> None:
    old, new = mc(kernelArguments=["nosmt a=1"]), mc(kernelArguments=["a=2"])
    assert os_commands(old, new, compute_diff(old, new)) == [
        ["kargs", "--delete-if-present=nosmt", "--delete-if-present=a=1", "--append=a=2"]]


def test_rebase_and_realtime_swap_order() -> None:
    old = mc(osImageURL="quay.io/os@sha256:old", kernelType="realtime")
    new = mc(osImageURL="quay.io/os@sha256:new", kernelType="realtime")
    commands = os_commands(old, new, compute_diff(old, new), "quay.io/os@sha256:old")
    assert [c[:2] for c in commands] == [["override", "reset"], ["rebase", "--experimental"],
                                         ["override", "remove"]]
    assert commands[1][2] == "ostree-unverified-registry:quay.io/os@sha256:new"
    assert "--install=kernel-rt-core" in commands[2]


def test_already_booted_image_is_not_rebased() -> None:
    old, new = mc(osImageURL="a"), mc(osImageURL="b")
    assert os_commands(old, new, compute_diff(old, new), "b") == []


def test_failure_drops_the_staged_deployment() -> None:
    runner = FakeRpmOstree(fail="kargs")
    old, new = mc(), mc(kernelArguments=["nosmt"])
    with pytest.raises(OSUpdateError, match="boom"):
        apply_os_changes(old, new, compute_diff(old, new), runner)
    assert runner.calls == [["cleanup", "-p"], ["kargs", "--append=nosmt"], ["cleanup", "-p"]]


def test_update_on_an_ostree_node_stages_and_reboots(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run/ostree-booted").touch()
    runner = FakeRpmOstree()
    systemd = FakeSystemd()
    outcome = apply_update(mc("a"), mc("b", kernelArguments=["nosmt"]), systemd, root=tmp_path,
                           os_runner=runner)
    assert outcome.rebooting and ["kargs", "--append=nosmt"] in runner.calls
    failing = FakeRpmOstree(fail="rebase")
    outcome = apply_update(mc("b", osImageURL="quay.io/os@sha256:old"),
                           mc("c", osImageURL="quay.io/os@sha256:new"), systemd, root=tmp_path,
                           os_runner=failing)
    assert outcome.state == "Degraded" and "boom" in outcome.reason
    assert failing.calls[-1] == ["cleanup", "-p"]


def test_extensions_are_refused_even_on_ostree(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run/ostree-booted").touch()
    outcome = apply_update(mc("a"), mc("b", extensions=["usbguard"]), FakeSystemd(),
                           root=tmp_path, os_runner=FakeRpmOstree())
    assert outcome.state == "Unreconcilable" and "extensions" in outcome.reason


def test_os_validation_texts() -> None:
    with pytest.raises(OnDiskValidationError) as err:
        validate_os(mc("r", osImageURL="quay.io/os@sha256:new"), FakeRpmOstree())
    assert str(err.value) == ('unexpected on-disk state validating against r: expected target '
                              'osImageURL "quay.io/os@sha256:new", have "quay.io/os@sha256:old"')
    with pytest.raises(OnDiskValidationError) as err:
        validate_os(mc("r", kernelArguments=["quiet nosmt", "a=1"]), FakeRpmOstree())
    assert str(err.value).endswith("missing expected kernel arguments: [nosmt a=1]")
    validate_os(mc("r", kernelArguments=["quiet"]), FakeRpmOstree())


def test_in_a_container_rpm_ostree_runs_chrooted_into_the_host_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kube DaemonSet mounts the host's / at /rootfs: rpm-ostree must act on the host."""
    import subprocess

    from mcd import rpm_ostree
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "ok\n", "")

    monkeypatch.setattr(rpm_ostree.subprocess, "run", fake_run)
    monkeypatch.setattr(rpm_ostree, "_host_root", Path("/"))
    rpm_ostree.run_rpm_ostree(["kargs"])
    rpm_ostree.set_host_root(tmp_path)
    rpm_ostree.run_rpm_ostree(["kargs"])
    assert seen == [["rpm-ostree", "kargs"], ["chroot", str(tmp_path), "rpm-ostree", "kargs"]]
