"""machineconfig.disruption, as the daemon uses it: which sections, files and units differ between two MachineConfigs."""
from __future__ import annotations

from typing import Any

import pytest

from machineconfig.disruption import compute_diff, decoded_contents


def mc(files: list[dict[str, Any]] = (), units: list[dict[str, Any]] = (),  # type: ignore[assignment]
       passwd: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"ignition": {"version": "3.5.0"}}
    if files:
        config["storage"] = {"files": list(files)}
    if units:
        config["systemd"] = {"units": list(units)}
    if passwd:
        config["passwd"] = passwd
    return {"metadata": {"name": "x"}, "spec": {"config": config, **spec}}


def f(path: str, text: str = "x", **extra: Any) -> dict[str, Any]:
    return {"path": path, "contents": {"source": "data:," + text}, **extra}


def test_identical_configs_have_an_empty_diff() -> None:
    a = mc([f("/etc/a")], [{"name": "a.service", "enabled": True}])
    assert compute_diff(a, a).is_empty


def test_files_added_changed_removed_by_whole_entry() -> None:
    old = mc([f("/etc/keep"), f("/etc/mode"), f("/etc/gone")])
    new = mc([f("/etc/keep"), f("/etc/mode", mode=0o600), f("/etc/new")])
    diff = compute_diff(old, new)
    assert (diff.files_added, diff.files_changed, diff.files_removed) == \
        (("/etc/new",), ("/etc/mode",), ("/etc/gone",))
    assert diff.file_paths == ("/etc/gone", "/etc/mode", "/etc/new")
    assert not diff.units and not diff.os_level


def test_unit_dropin_change_is_a_unit_change() -> None:
    old = mc(units=[{"name": "k.service", "dropins": [{"name": "a.conf", "contents": "1"}]}])
    new = mc(units=[{"name": "k.service", "dropins": [{"name": "a.conf", "contents": "2"}]}])
    assert compute_diff(old, new).units_changed == ("k.service",)


@pytest.mark.parametrize(("old", "new", "flag"), [
    ({"osImageURL": "a"}, {"osImageURL": "b"}, "os_update"),
    ({"kernelArguments": ["a"]}, {"kernelArguments": ["b"]}, "kargs"),
    ({"fips": False}, {"fips": True}, "fips"),
    ({"kernelType": "default"}, {"kernelType": "realtime"}, "kernel_type"),
    ({"extensions": []}, {"extensions": ["usbguard"]}, "extensions"),
])
def test_spec_level_changes(old: dict[str, Any], new: dict[str, Any], flag: str) -> None:
    assert getattr(compute_diff(mc(**old), mc(**new)), flag)


def test_empty_and_absent_lists_and_default_kernel_are_no_change() -> None:
    diff = compute_diff(mc(kernelArguments=None, kernelType=""),
                        mc(kernelArguments=[], kernelType="default", extensions=[]))
    assert diff.is_empty


def test_passwd_and_forcefile() -> None:
    assert compute_diff(mc(), mc(passwd={"users": [{"name": "core"}]})).passwd
    assert compute_diff(mc(), mc(), force=True).os_update


def test_decoded_contents_gzip_and_empty() -> None:
    gz = "data:;base64,H4sIAAAAAAACA8tIzcnJVyjPL8pJAQCFEUoNCwAAAA=="
    assert decoded_contents({"contents": {"source": gz, "compression": "gzip"}}) == b"hello world"
    assert decoded_contents({"path": "/etc/empty"}) == b""
    assert decoded_contents({"contents": {"source": "data:,a%20b"}}) == b"a b"
