"""`mcc validate` on MachineConfig YAML/JSON files: MCO's checks, paths rooted at the document,
file positions, and raw Ignition output left exactly as ignition-validate prints it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from machineconfig.ignition.decode import node_path_at
from mcc.cli import main
from mcc.validate_mc import looks_like_objects

DATA = Path(__file__).resolve().parents[2] / "data" / "validate"
API = "apiVersion: machineconfiguration.openshift.io/v1\n"
UNKNOWN_VERSION = ("parsing Ignition config failed: unknown version. Supported spec versions: "
                   "2.2,3.0,3.1,3.2,3.3,3.4,3.5")


def run(capsys: pytest.CaptureFixture[str], *files: Path) -> tuple[int, list[str], list[str]]:
    rc = main(["validate", *map(str, files)])
    out, err = capsys.readouterr()
    return rc, out.splitlines(), err.splitlines()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def mc_yaml(name: str, spec: str) -> str:
    return f"{API}kind: MachineConfig\nmetadata:\n  name: {name}\nspec:\n{spec}"


def test_error_deep_in_spec_config_has_its_path_and_yaml_position(
        capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / "50-worker-bad-file.yaml"
    rc, out, err = run(capsys, path)
    assert rc == 1 and err == []
    assert out == [
        f"error at $.spec.kernelType, {path}:10:3: kernelType=foo is invalid",
        f"error at $.spec.config.storage.files.1.path, {path}:20:9: path not absolute",
        f"warning at $.spec.config.storage.files.2.mode, {path}:25:9: setuid/setgid/sticky bits "
        "are not supported or functional in spec versions older than 3.6.0",
        f"error at $.spec.config.storage.files.2.mode, {path}:25:9: invalid mode 04755 for "
        "/usr/local/bin/tool, cannot exceed 0777",
    ]
    lines = path.read_text().splitlines()
    assert lines[19][8:] == "- path: etc/chrony.conf"[2:]  # 20:9 is the `path` key


def test_missing_field_points_at_nearest_existing_ancestor(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "mc.yaml", mc_yaml("x", (
        "  config:\n"
        "    ignition:\n"
        "      version: 3.5.0\n"
        "    systemd:\n"
        "      units:\n"
        "      - contents: |\n"
        "          [Unit]\n")))
    rc, out, _ = run(capsys, path)
    # the unit has no name: upstream reports `...units.0.name`, which sits on the item's line
    assert rc == 1
    assert f"error at $.spec.config.systemd.units.0.name, {path}:11:9: " \
           "invalid systemd unit extension" in out


def test_valid_machine_config_prints_nothing(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "ok.yaml", mc_yaml("ok", (
        "  kernelType: realtime\n  extensions: [usbguard]\n  kernelArguments: [nosmt]\n"
        "  config:\n    ignition:\n      version: 3.2.0\n")))
    assert run(capsys, path) == (0, [], [])


def test_json_machine_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mc = {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
          "metadata": {"name": "60-json"},
          "spec": {"config": {"ignition": {"version": "3.4.0"},
                              "storage": {"files": [{"path": "/etc/x", "mode": "420"}]}}}}
    path = write(tmp_path, "mc.json", json.dumps(mc, indent=2))
    rc, out, _ = run(capsys, path)
    assert rc == 1
    # a type mismatch has no path upstream: the value is found from the decoder's offset
    assert out == [f"error at $.spec.config.storage.files.0.mode, {path}:16:13: json: cannot "
                   "unmarshal string into Go struct field Config.storage.files.0.mode of type int"]


def test_multi_document_file_paths_and_lines_per_document(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = mc_yaml("a", "  kernelType: rt\n")
    second = mc_yaml("b", "  config:\n    ignition: {version: 3.6.0}\n")
    path = write(tmp_path, "all.yaml", first + "---\n" + second)
    rc, out, _ = run(capsys, path)
    assert rc == 1
    assert out == [f"error at $.spec.kernelType, {path}:6:3: kernelType=rt is invalid",
                   # MCO accepts 3.0-3.5 only, whatever Ignition itself knows
                   f"error at $.spec.config.ignition.version, {path}:14:16: {UNKNOWN_VERSION}"]


def test_list_items_are_rooted_at_the_list(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    text = ("apiVersion: v1\nkind: List\nitems:\n"
            "- apiVersion: machineconfiguration.openshift.io/v1\n  kind: MachineConfig\n"
            "  metadata: {name: a}\n  spec: {kernelType: x}\n")
    path = write(tmp_path, "list.yaml", text)
    assert run(capsys, path) == (1, [f"error at $.items.0.spec.kernelType, {path}:7:10: "
                                     "kernelType=x is invalid"], [])


def test_spec_2_2_config_inside_a_machine_config(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "v22.yaml", mc_yaml("v22", (
        "  config:\n"
        "    ignition:\n"
        "      version: 2.2.0\n"
        "    storage:\n"
        "      files:\n"
        "      - filesystem: root\n"
        "        path: etc/x\n"
        "    systemd:\n"
        "      units:\n"
        "      - name: foo\n")))
    rc, out, _ = run(capsys, path)
    assert rc == 1
    assert out == [
        f"error at $.spec.config.storage.files.0.path, {path}:12:9: path not absolute",
        # the legacy validator's warnings are printed too
        f"warning at $.spec.config.storage.files.0.mode, {path}:11:9: permissions unset, "
        "defaulting to 0644",
        f"error at $.spec.config.systemd.units.0.name, {path}:15:9: invalid systemd unit extension",
    ]


def test_spec_2_2_users_other_than_core_are_refused(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "users.yaml", mc_yaml("u", (
        "  config:\n    ignition: {version: 2.2.0}\n"
        "    passwd:\n      users:\n      - name: core\n      - name: bob\n")))
    assert run(capsys, path) == (1, [
        f"error at $.spec.config.passwd.users.1.name, {path}:11:9: unexpected user with name: "
        "bob. Only core user is supported"], [])


def test_valid_spec_2_2_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "v22.yaml", mc_yaml("v22", (
        "  config:\n    ignition: {version: 2.2.0}\n    storage:\n      files:\n"
        "      - {filesystem: root, path: /etc/x, mode: 420, contents: {source: 'data:,x'}}\n")))
    assert run(capsys, path) == (0, [], [])


@pytest.mark.parametrize("kernel_type, ok", [("", True), ("default", True), ("realtime", True),
                                             ("64k-pages", True), ("Realtime", False)])
def test_kernel_type(tmp_path: Path, capsys: pytest.CaptureFixture[str], kernel_type: str,
                     ok: bool) -> None:
    path = write(tmp_path, "k.yaml", mc_yaml("k", f"  kernelType: '{kernel_type}'\n"))
    rc, out, _ = run(capsys, path)
    assert (rc, out) == ((0, []) if ok else (1, [
        f"error at $.spec.kernelType, {path}:6:3: kernelType={kernel_type} is invalid"]))


@pytest.mark.parametrize("mode, text", [("04755", "04755"), ("01777", "01777"), ("02000", "02000")])
def test_file_mode_over_0777(tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str,
                             text: str) -> None:
    # 3.6.0-style special bits are fine for Ignition 3.5 but never for MCO
    path = write(tmp_path, "m.yaml", mc_yaml("m", (
        "  config:\n    ignition: {version: 3.5.0}\n    storage:\n      files:\n"
        f"      - path: /usr/bin/x\n        mode: {mode}\n")))
    rc, out, _ = run(capsys, path)
    assert rc == 1
    assert out[-1] == (f"error at $.spec.config.storage.files.0.mode, {path}:11:9: "
                       f"invalid mode {text} for /usr/bin/x, cannot exceed 0777")


def test_extensions_checked_only_with_a_config(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    without = write(tmp_path, "a.yaml", mc_yaml("a", "  extensions: [vim, usbguard, emacs]\n"))
    assert run(capsys, without) == (0, [], [])  # MCO's quirk: no config, no extensions check
    with_config = write(tmp_path, "b.yaml", mc_yaml("b", (
        "  extensions: [vim, usbguard, emacs]\n  config:\n    ignition: {version: 3.2.0}\n")))
    assert run(capsys, with_config) == (1, [
        f"error at $.spec.extensions, {with_config}:6:3: invalid extensions found: [vim emacs]"],
        [])


def test_missing_labels_are_not_a_validate_error(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "nolabels.yaml", mc_yaml("x", "  fips: true\n"))
    assert run(capsys, path) == (0, [], [])


def test_wrong_field_type_names_path_and_line(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "t.yaml", mc_yaml("t", "  kernelArguments:\n  - nosmt\n  - 1\n"))
    assert run(capsys, path) == (1, [
        f"error at $.spec.kernelArguments.1, {path}:8:5: MachineConfig: Input should be a valid "
        "string"], [])


def test_other_kinds_are_skipped_with_a_note(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    pool = (f"{API}kind: MachineConfigPool\nmetadata:\n  name: worker\n")
    path = write(tmp_path, "mixed.yaml", pool + "---\n" + mc_yaml("x", "  kernelType: bad\n"))
    rc, out, err = run(capsys, path)
    assert rc == 1
    assert out == [f"error at $.spec.kernelType, {path}:11:3: kernelType=bad is invalid"]
    assert err == [f"note: {path}:1: skipping MachineConfigPool worker: only MachineConfig "
                   "objects are validated"]
    only_pool = write(tmp_path, "pool.yaml", pool)
    assert run(capsys, only_pool)[0] == 0


def test_document_without_kind_is_an_error(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "x.yaml", mc_yaml("x", "  fips: false\n") + "---\n- just a list\n")
    assert run(capsys, path) == (1, [
        f"error at $, {path}:8:1: expected an object with apiVersion and kind"], [])


def test_yaml_syntax_error_names_file_line_and_column(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "broken.yaml", f"{API}kind: MachineConfig\nspec:\n  config: [\n")
    rc, out, err = run(capsys, path)
    assert (rc, out) == (1, [])
    assert len(err) == 1 and err[0].startswith(f"couldn't parse config: {path}:5:1: invalid YAML")


def test_duplicate_key_is_a_finding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "dup.yaml", mc_yaml("d", "  fips: true\n  fips: false\n"))
    assert run(capsys, path) == (1, [
        f"error at $.spec.fips, {path}:7: duplicate key 'fips'"], [])


def test_broken_json_machine_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "b.json", '{"apiVersion": "v1",\n "kind": "MachineConfig",\n "spec": }')
    rc, out, err = run(capsys, path)
    assert (rc, out) == (1, [])
    assert err[0].startswith(f"couldn't parse config: {path}:3: invalid JSON")


def test_several_files_mixing_ignition_and_machine_configs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ign = write(tmp_path, "c.ign",
                '{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"x"}]}}')
    mc = write(tmp_path, "mc.yaml", mc_yaml("x", "  kernelType: none\n"))
    rc, out, err = run(capsys, ign, mc)
    # raw Ignition lines stay ignition-validate's; MachineConfig lines name their file anyway
    assert (rc, err) == (1, [])
    assert out == ["error at $.storage.files.0.path, line 1 col 61: path not absolute",
                   f"error at $.spec.kernelType, {mc}:6:3: kernelType=none is invalid"]
    assert run(capsys, ign) == (1, out[:1], [])


@pytest.mark.parametrize("text, expected", [
    ('{"ignition":{"version":"3.4.0"}}', False),
    ('{"kind":"MachineConfig","apiVersion":"v1"}', True),
    ('{"kind":"MachineConfig","apiVersion":"v1","ignition":{}}', False),  # Ignition with extras
    ('{"kind":"MachineConfig"}', True),  # a kind we model needs no apiVersion
    ('{"kind":"Pod"}', False),
    ('not json at all', False),
    ('{"ignition": ', False),
    ("kind: MachineConfig\n", True),
    ("# comment\napiVersion: v1\n", True),
    ('{"kind": "List", "apiVersion": "v1"}\n{"kind": "List", "apiVersion": "v1"}', True),
    ("", False),
])
def test_detection_by_content(text: str, expected: bool) -> None:
    assert looks_like_objects(text.encode()) is expected
    assert looks_like_objects(b"\xff\xfe") is False


def test_node_path_at_finds_the_value_ending_at_an_offset() -> None:
    raw = b'{"a": [1, "xy"], "b": {"c": true}}'
    assert node_path_at(raw, raw.index(b'"xy"') + 4) == ("a", 1)
    assert node_path_at(raw, raw.index(b"true") + 4) == ("b", "c")
    assert node_path_at(b"{", 1) == ()


def test_case_insensitive_keys_are_found(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # Go's decoder matches `Storage`/`Files`/`Path`; the report uses the canonical names
    path = write(tmp_path, "case.yaml", mc_yaml("c", (
        "  config:\n    ignition: {version: 3.3.0}\n    Storage:\n      Files:\n"
        "      - Path: rel\n")))
    rc, out, _ = run(capsys, path)
    assert rc == 1
    assert f"error at $.spec.config.storage.files.0.path, {path}:10:9: path not absolute" in out


RENDER_VECTORS = sorted((Path(__file__).resolve().parents[2] / "data" / "vectors" / "render")
                        .glob("*.json"))


@pytest.mark.parametrize("vector", RENDER_VECTORS, ids=[p.stem for p in RENDER_VECTORS])
def test_verdict_matches_the_renderers_validation(vector: Path) -> None:
    """Every MachineConfig of the render vectors: validate errs exactly when MCO's
    ValidateMachineConfig (or the conversion render does next) refuses it."""
    from machineconfig import mcoparse
    from machineconfig.api import MachineConfig
    from mcc.render import RenderError, validate_machine_config
    from mcc.validate_mc import check_machine_config

    for raw in json.loads(vector.read_text(encoding="utf-8"))["machineConfigs"]:
        mc = MachineConfig.model_validate(raw)
        refused = None
        try:
            validate_machine_config(mc.spec)
            config = mcoparse.raw_config(mc.spec.config)
            if config is not None:
                mcoparse.converted_config(config)
        except (RenderError, mcoparse.IgnitionConfigError) as e:
            refused = str(e)
        errors = [f for f in check_machine_config(mc) if f[0] == "error"]
        assert bool(errors) == bool(refused), (mc.name, refused, errors)


def test_json_stream_of_machine_configs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = {"apiVersion": "v1", "kind": "MachineConfig", "metadata": {"name": "a"},
             "spec": {"kernelType": "x"}}
    second = {"apiVersion": "v1", "kind": "MachineConfig", "metadata": {"name": "b-é-中"},
              "spec": {"config": {"ignition": {"version": "3.5.0"},
                                  "storage": {"files": [{"path": "ünicode/rel"}]}}}}
    path = write(tmp_path, "stream.json", json.dumps(first) + "\n" + json.dumps(
        second, ensure_ascii=False))
    rc, out, _ = run(capsys, path)
    assert rc == 1
    col = json.dumps(second, ensure_ascii=False).index('"path"') + 1  # characters, not bytes
    first_col = json.dumps(first).index('"kernelType"') + 1
    assert out == [f"error at $.spec.kernelType, {path}:1:{first_col}: kernelType=x is invalid",
                   f"error at $.spec.config.storage.files.0.path, {path}:2:{col}: path not absolute"]


def test_machine_config_on_stdin(capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    class Stdin:
        buffer = io.BytesIO(mc_yaml("s", "  kernelType: x\n").encode())

    monkeypatch.setattr(sys, "stdin", Stdin)
    assert main(["validate", "-"]) == 1
    assert capsys.readouterr().out == ("error at $.spec.kernelType, <stdin>:6:3: "
                                       "kernelType=x is invalid\n")


def test_json_that_only_python_reads_still_has_lines(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # NaN is not JSON to Go (Ignition's parser refuses it); Python's reads it, and the error
    # about the field must still name its line and column
    f = tmp_path / "nan.json"
    f.write_text('\n\n  {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",'
                 ' "metadata": {"name": "x"}, "spec": {"config": {"ignition": {"version": "3.2.0"}},'
                 '\n "fips": NaN}}\n')
    assert main(["validate", str(f)]) == 1
    assert f"error at $.spec.fips, {f}:4:2: " in capsys.readouterr().out
