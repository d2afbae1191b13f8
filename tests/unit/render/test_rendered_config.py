"""machineconfig.rendered_config: the one rendered-config value, and machineconfig.atomicfile."""
from __future__ import annotations

import os
import stat

import pytest

from machineconfig.atomicfile import write_atomic
from machineconfig.errors import InputError, TemporaryError, is_temporary
from machineconfig.mcoparse import IgnitionConfigError
from machineconfig.rendered_config import RenderedConfig


def mc(config: object, **spec: object) -> dict[str, object]:
    return {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
            "metadata": {"name": "rendered-worker-0123"}, "spec": {"config": config, **spec}}


def test_spec_2_config_is_converted_once_and_shared() -> None:
    rc = RenderedConfig(mc({"ignition": {"version": "2.2.0"},
                            "storage": {"files": [{"filesystem": "root", "path": "/etc/a",
                                                   "contents": {"source": "data:,x"}}]}},
                           kernelArguments=["nosmt"], fips=False))
    first = rc.ignition
    assert first["ignition"]["version"] == "3.5.0"
    assert [f["path"] for f in first["storage"]["files"]] == ["/etc/a"]
    assert rc.ignition is first
    assert rc.spec.kernel_arguments == ["nosmt"]
    assert RenderedConfig.of(rc) is rc


def test_raw_bytes_are_mco_rawextension_text_and_round_trip() -> None:
    rc = RenderedConfig(mc({"ignition": {"version": "3.2.0"}}))
    assert rc.config_raw == b'{"ignition": {"version": "3.2.0"}}'
    kept = RenderedConfig(mc(rc.config_raw))
    assert kept.to_dict() == rc.to_dict() and kept == rc
    assert RenderedConfig(mc(None)).ignition == {}


@pytest.mark.parametrize("obj, where", [
    ({"kind": "MachineConfig", "metadata": {}}, "$.metadata.name"),
    ({"kind": "Secret", "metadata": {"name": "x"}}, "$.metadata.name"),
    ({"kind": "MachineConfig", "metadata": {"name": "x"}, "spec": []}, "$.spec"),
])
def test_not_a_machine_config_names_the_field(obj: dict[str, object], where: str) -> None:
    with pytest.raises(InputError, match=where.replace("$", r"\$")):
        RenderedConfig(obj)


def test_bad_ignition_is_reported_on_use_with_mco_text() -> None:
    rc = RenderedConfig(mc({"ignition": {"version": "9.9.9"}}))
    with pytest.raises(IgnitionConfigError, match="failed to parse Ignition config"):
        rc.ignition


def test_write_atomic_mode_content_and_no_temporary_left(tmp_path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "token"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    write_atomic(target, b"public", mode=0o644)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path, b"x")  # renaming a file over a directory fails...
    assert sorted(p.name for p in tmp_path.parent.iterdir() if p.name.startswith(".tmp-")) == []


def test_temporary_errors() -> None:
    assert is_temporary(TemporaryError("x")) and is_temporary(ConnectionRefusedError())
    assert not is_temporary(InputError("x")) and not is_temporary(ValueError())


def test_a_wrongly_typed_spec_field_is_an_input_error_naming_it() -> None:
    rc = RenderedConfig(mc({"ignition": {"version": "3.2.0"}}, fips="true"))
    with pytest.raises(InputError, match=r"\$\.spec\.fips: rendered config rendered-worker-0123"):
        rc.spec
