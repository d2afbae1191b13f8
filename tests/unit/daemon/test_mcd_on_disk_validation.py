"""mcd.on_disk_validation: MCO's messages for content, mode, masks, drop-ins and enablement."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from mcd.on_disk_validation import (OnDiskValidationError, go_file_mode, go_mode_string,
                                    validate_on_disk)


def mc(files: list[dict[str, Any]] = (), units: list[dict[str, Any]] = ()  # type: ignore[assignment]
       ) -> dict[str, Any]:
    return {"metadata": {"name": "rendered-w-1"},
            "spec": {"config": {"ignition": {"version": "3.5.0"},
                                "storage": {"files": list(files)},
                                "systemd": {"units": list(units)}}}}


def put(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def error(config: dict[str, Any], root: Path) -> str:
    with pytest.raises(OnDiskValidationError) as err:
        validate_on_disk(config, root)
    return str(err.value)


PREFIX = "unexpected on-disk state validating against rendered-w-1: "


def test_matching_disk_passes(tmp_path: Path) -> None:
    put(tmp_path, "/etc/a", "a")
    put(tmp_path, "/etc/systemd/system/u.service", "[Unit]\n")
    validate_on_disk(mc([{"path": "/etc/a", "contents": {"source": "data:,a"}}],
                        [{"name": "u.service", "contents": "[Unit]\n"}]), tmp_path)


def test_content_mode_and_missing_messages(tmp_path: Path) -> None:
    put(tmp_path, "/etc/a", "edited")
    entry = {"path": "/etc/a", "contents": {"source": "data:,a"}}
    assert error(mc([entry]), tmp_path) == PREFIX + 'content mismatch for file "/etc/a"'
    put(tmp_path, "/etc/a", "a", 0o755)
    assert error(mc([entry]), tmp_path) == PREFIX + (
        'mode mismatch for file: "/etc/a"; expected: -rw-r--r--/420/0644; '
        "received: -rwxr-xr-x/493/0755")
    assert error(mc([{"path": "/etc/none"}]), tmp_path) == PREFIX + (
        'could not stat file "/etc/none": lstat /etc/none: no such file or directory')


def test_symlink_fails_the_mode_check(tmp_path: Path) -> None:
    put(tmp_path, "/etc/real", "a")
    os.symlink("real", tmp_path / "etc/link")
    message = error(mc([{"path": "/etc/link", "contents": {"source": "data:,a"}}]), tmp_path)
    assert "received: Lrwxrwxrwx/134218239/01000000777" in message


def test_skipped_paths_and_append(tmp_path: Path) -> None:
    validate_on_disk(mc([{"path": "/etc/kubernetes/kubelet-ca.crt"}]), tmp_path)
    assert error(mc([{"path": "/etc/x", "append": [{"source": "data:,"}]}]), tmp_path) == \
        PREFIX + "found an append section when checking files. Append is not supported"


def test_units_masks_and_dropins(tmp_path: Path) -> None:
    unit_dir = tmp_path / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    os.symlink("/etc/hostname", unit_dir / "m.service")
    assert error(mc(units=[{"name": "m.service", "mask": True}]), tmp_path) == PREFIX + (
        'state validation: invalid unit masked setting. path: "/etc/systemd/system/m.service"; '
        "expected: /dev/null; received: /etc/hostname")
    (unit_dir / "m.service").unlink()
    os.symlink("/dev/null", unit_dir / "m.service")
    validate_on_disk(mc(units=[{"name": "m.service", "mask": True}]), tmp_path)
    dropin_unit = {"name": "k.service", "dropins": [{"name": "a.conf", "contents": "[Unit]\n"},
                                                     {"name": "empty.conf"}]}
    assert error(mc(units=[dropin_unit]), tmp_path).startswith(
        PREFIX + 'could not stat file "/etc/systemd/system/k.service.d/a.conf"')
    put(tmp_path, "/etc/systemd/system/k.service.d/a.conf", "[Unit]\n")
    validate_on_disk(mc(units=[dropin_unit]), tmp_path)


class States:
    def __init__(self, states: dict[str, str]) -> None:
        self.states = states

    def unit_file_state(self, name: str) -> str:
        return self.states.get(name, "not-found")


def test_enablement_is_checked_through_systemd(tmp_path: Path) -> None:
    config = mc(units=[{"name": "a.service", "enabled": True}, {"name": "b.service",
                                                                "enabled": False}])
    validate_on_disk(config, tmp_path, States({"a.service": "enabled",  # type: ignore[arg-type]
                                               "b.service": "disabled"}))
    with pytest.raises(OnDiskValidationError, match="unit a.service is masked, expected enabled"):
        validate_on_disk(config, tmp_path, States({"a.service": "masked"}))  # type: ignore[arg-type]


def test_go_mode_strings() -> None:
    assert go_mode_string(go_file_mode(0o40755)) == "drwxr-xr-x"
    assert go_mode_string(go_file_mode(0o104755)) == "urwxr-xr-x"  # Go prints no "-" once a type letter is set
