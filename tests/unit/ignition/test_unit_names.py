"""Unit, drop-in and [Install] names: the controller refuses what the daemon would refuse
(machineconfig.unitnames), in `mcc validate` (field path and YAML line) and at render time."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from machineconfig import mcoparse
from machineconfig.unitnames import unit_name_problem
from mcc.cli import main

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "cluster"

BAD = """\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: 60-worker-units
  labels: {machineconfiguration.openshift.io/role: worker}
spec:
  config:
    ignition:
      version: 3.2.0
    systemd:
      units:
      - name: ../../etc/evil.service
        contents: "[Unit]\\n"
      - name: ok.service
        dropins:
        - name: ../x.conf
          contents: "[Unit]\\n"
      - name: good.service
        contents: "[Install]\\nWantedBy=../../../etc/foo.target\\n"
"""


@pytest.mark.parametrize("name", ["", ".", "..", "a/b.service", "../x.service", "a\0.service"])
def test_names_that_are_not_one_file_name_are_refused(name: str) -> None:
    assert unit_name_problem(name) is not None


def test_plain_names_pass() -> None:
    assert unit_name_problem("foo@bar.service") is None
    assert unit_name_problem("10-x.conf", "drop-in") is None


def test_validate_names_field_path_and_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mc.yaml"
    path.write_text(BAD)
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"error at $.spec.config.systemd.units.0.name, {path}:12:9: unit name "
        "'../../etc/evil.service' is not a plain file name",
        f"error at $.spec.config.systemd.units.1.dropins.0.name, {path}:16:11: drop-in name "
        "'../x.conf' is not a plain file name",
        f"error at $.spec.config.systemd.units.2.contents, {path}:19:9: [Install] WantedBy name "
        "'../../../etc/foo.target' is not a plain file name",
    ]


@pytest.mark.parametrize("unit, where", [
    ('{"name": "../a.service", "contents": "[Unit]\\n"}', "$.systemd.units.0.name"),
    ('{"name": "a.service", "dropins": [{"name": "x/y.conf"}]}', "$.systemd.units.0.dropins.0.name"),
    ('{"name": "a.service", "contents": "[Install]\\nAlias=../../b.service\\n"}',
     "$.systemd.units.0.contents"),
    ('{"name": "a.service", "contents": "[Install]\\nRequiredBy=x.target ..\\n"}',
     "$.systemd.units.0.contents"),
])
def test_check_machine_config_ignition_refuses(unit: str, where: str) -> None:
    for version in ("3.2.0", "3.5.0"):
        raw = ('{"ignition": {"version": "%s"}, "systemd": {"units": [%s]}}'
               % (version, unit)).encode()
        with pytest.raises(mcoparse.IgnitionConfigError) as info:
            mcoparse.check_machine_config_ignition(raw)
        assert str(info.value).endswith(f"at {where}") and "\n" not in str(info.value)


def test_spec2_unit_names_are_refused_too() -> None:
    raw = b'{"ignition": {"version": "2.2.0"}, "systemd": {"units": [{"name": "../a.service"}]}}'
    with pytest.raises(mcoparse.IgnitionConfigError, match="not a plain file name"):
        mcoparse.check_machine_config_ignition(raw)


def test_render_refuses_the_config_on_one_line(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cluster = tmp_path / "cluster"
    shutil.copytree(EXAMPLES, cluster)
    assert main(["render", str(cluster), "--out", str(tmp_path / "ok")]) == 0
    (cluster / "bad.yaml").write_text(BAD)
    capsys.readouterr()
    assert main(["render", str(cluster), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(cluster / "bad.yaml") in err
    assert "unit name '../../etc/evil.service' is not a plain file name at " \
           "$.systemd.units.0.name" in err
    assert not (tmp_path / "out").exists()
