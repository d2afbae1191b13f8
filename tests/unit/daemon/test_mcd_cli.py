"""mcd.cli: `mcd plan` and `mcd validate` offline, on files and a tmp root."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from urllib.parse import quote

import pytest
import yaml

from mcd.cli import main


def write_mc(path: Path, name: str, files: dict[str, str], **spec: Any) -> Path:
    config = {"ignition": {"version": "3.5.0"},
              "storage": {"files": [{"path": p, "contents": {"source": "data:," + quote(t)}}
                                    for p, t in files.items()]}}
    path.write_text(yaml.safe_dump({"apiVersion": "machineconfiguration.openshift.io/v1",
                                    "kind": "MachineConfig", "metadata": {"name": name},
                                    "spec": {"config": config, **spec}}))
    return path


def test_plan_lists_changes_and_action(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_mc(tmp_path / "a.yaml", "a", {"/etc/containers/policy.json": "1",
                                            "/etc/gone": "x"})
    b = write_mc(tmp_path / "b.yaml", "b", {"/etc/containers/policy.json": "2",
                                            "/var/lib/kubelet/config.json": "{}"})
    assert main(["plan", str(a), str(b)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "file added: /var/lib/kubelet/config.json" in out
    assert "file changed: /etc/containers/policy.json" in out
    assert "file removed: /etc/gone" in out
    assert out[-1] == "action: drain, reboot"  # /etc/gone matches no policy


def test_plan_with_user_policy_and_json_input(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    a = write_mc(tmp_path / "a.yaml", "a", {"/etc/containers/policy.json": "1"})
    b_doc = yaml.safe_load(write_mc(tmp_path / "b.yaml", "b",
                                    {"/etc/containers/policy.json": "2"}).read_text())
    b = tmp_path / "b.json"
    b.write_text(json.dumps(b_doc))
    policy = tmp_path / "policy.yaml"
    policy.write_text("spec:\n  nodeDisruptionPolicy:\n    files:\n"
                      "    - path: /etc/containers/policy.json\n"
                      "      actions: [{type: Restart, restart: {serviceName: crio.service}}]\n")
    assert main(["plan", str(a), str(b), "--policy", str(policy)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "action: restart crio.service"


def test_plan_unreconcilable_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_mc(tmp_path / "a.yaml", "a", {})
    b = write_mc(tmp_path / "b.yaml", "b", {}, kernelArguments=["nosmt"])
    assert main(["plan", str(a), str(b), "--root", str(tmp_path)]) == 3
    assert "need rpm-ostree" in capsys.readouterr().out
    assert main(["plan", str(a), str(b), "--no-node-checks"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "action: drain, reboot"


def test_validate_names_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_mc(tmp_path / "a.yaml", "rendered-a", {"/etc/x": "x"})
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/x").write_text("x")
    args = ["validate", "--config", str(config), "--root", str(tmp_path), "--no-systemd"]
    assert main(args) == 0
    (tmp_path / "etc/x").write_text("hand edit")
    assert main(args) == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        'unexpected on-disk state validating against rendered-a: content mismatch for file "/etc/x"')


def test_bad_input_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("kind: Nothing\n")
    assert main(["plan", str(tmp_path / "bad.yaml"), str(tmp_path / "bad.yaml")]) == 2


def test_spec_2_and_3_1_configs_are_compared_as_3_5(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    v2 = {"ignition": {"version": "2.2.0"}, "storage": {"files": [
        {"filesystem": "root", "path": "/etc/a", "mode": 420,
         "contents": {"source": "data:,same"}}]}}
    v31 = {"ignition": {"version": "3.1.0"}, "storage": {"files": [
        # ign-converter sets overwrite on spec 2 files: the same file in 3.x must say so too
        {"path": "/etc/a", "mode": 420, "overwrite": True, "contents": {"source": "data:,same"}}]}}
    for name, config in (("a", v2), ("b", v31)):
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"metadata": {"name": name}, "spec": {"config": config}}))
    assert main(["plan", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert capsys.readouterr().out.splitlines() == ["action: none"]


def test_validate_lists_every_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_mc(tmp_path / "a.yaml", "rendered-a", {"/etc/x": "x", "/etc/y": "y"})
    assert main(["validate", "--config", str(config), "--root", str(tmp_path),
                 "--no-systemd"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        'unexpected on-disk state validating against rendered-a: could not stat file "/etc/x": '
        "lstat /etc/x: no such file or directory",
        'unexpected on-disk state validating against rendered-a: could not stat file "/etc/y": '
        "lstat /etc/y: no such file or directory"]


def test_start_refuses_a_root_that_is_not_a_running_host(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--root /rootfs` is for a container with the host's / mounted there; a plain directory
    (no running systemd under it) is refused before anything is contacted."""
    assert main(["start", "--root", str(tmp_path), "--store", "kube", "--metrics-listen", ""]) == 2
    assert "is not a running systemd host's root" in capsys.readouterr().err


def test_start_reads_the_hosts_credentials_under_root() -> None:
    # the DaemonSet mounts the host at /rootfs: the host's node-credentials.json is there, not
    # in the container's own /etc
    from mcd.cli import build_parser, credentials_path

    parser = build_parser()
    args = parser.parse_args(["start", "--root", "/rootfs"])
    assert credentials_path(args) == Path("/rootfs/etc/machine-config-daemon/node-credentials.json")
    args = parser.parse_args(["start"])
    assert credentials_path(args) == Path("/etc/machine-config-daemon/node-credentials.json")
    args = parser.parse_args(["start", "--root", "/rootfs", "--credentials", "/run/creds.json"])
    assert credentials_path(args) == Path("/run/creds.json")


def test_the_apply_path_imports_no_module_it_does_not_use() -> None:
    # every `mcd apply` is a fresh process: pydantic and the API models (~0.2 s of CPU), the
    # HTTP client with ssl and email (the kubelet probe, FleetLock), tomllib (registries.conf
    # changes only) and platform are imported where they are used, not at start
    program = ("import sys, mcd.cli, mcd.update; print(sorted(m for m in sys.modules if "
               "m.split('.')[0] in ('pydantic', 'http', 'ssl', 'email', 'tomllib', 'platform') "
               "or m == 'machineconfig.api'))")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
