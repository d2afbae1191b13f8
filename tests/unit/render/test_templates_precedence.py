"""Template discovery on small synthetic trees: platform-directory precedence, zero-byte removal,
common/ placement, errors naming the template file and line, and user values."""
from __future__ import annotations

from pathlib import Path

import pytest

from machineconfig.errors import InputError
from mcc.template import platform_dirs, render_role, render_templates, render_user_template

from tests.support.templatekit import by_name, controller_config, file_text, files, units


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def file_tpl(path: str, body: str) -> str:
    return f"path: {path}\nmode: 0644\ncontents:\n  inline: |\n    {body}\n"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """worker/00-worker and 01-worker-kubelet with one file overridden at each precedence level."""
    w = "worker/00-worker"
    write(tmp_path, f"{w}/_base/files/a.yaml", file_tpl("/etc/a", "base"))
    write(tmp_path, f"{w}/on-prem/files/a.yaml", file_tpl("/etc/a", "on-prem"))
    write(tmp_path, f"{w}/baremetal/files/a.yaml", file_tpl("/etc/a", "baremetal"))
    write(tmp_path, f"{w}/sno/files/a.yaml", file_tpl("/etc/a", "sno {{ platform }}"))
    write(tmp_path, f"{w}/_base/files/b.yaml", file_tpl("/etc/b", "base"))
    write(tmp_path, f"{w}/aws/files/b.yaml", "")  # zero bytes: AWS nodes get no /etc/b
    write(tmp_path, f"{w}/_base/files/c.yaml", "{% if platform == 'none' %}" + file_tpl("/etc/c", "x") + "{% endif %}\n")
    write(tmp_path, f"{w}/_base/units/u.yaml", "name: u.service\nenabled: true\ncontents: |\n  [Service]\n  ExecStart=/bin/true\n")
    write(tmp_path, f"{w}/_base/extensions/usbguard", "# a non-empty marker\n")
    write(tmp_path, "worker/01-worker-kubelet/_base/files/k.yaml", file_tpl("/etc/k", "kubelet"))
    write(tmp_path, "common/_base/files/common.yaml", file_tpl("/etc/common", "{{ role }}"))
    write(tmp_path, "common/aws/files/common.yaml", file_tpl("/etc/common", "aws {{ role }}"))
    (tmp_path / "README.md").write_text("not a role\n")
    return tmp_path


def render(tree: Path, platform: str, topology: str = "HighlyAvailable") -> dict[str, dict]:
    return by_name(render_templates(controller_config(platform, topology), tree))


def test_platform_dir_order() -> None:
    spec = controller_config("BareMetal", "SingleReplica")["spec"]
    assert platform_dirs(spec) == ["_base", "on-prem", "baremetal", "sno"]
    assert platform_dirs(controller_config("AWS")["spec"]) == ["_base", "aws"]
    assert platform_dirs(controller_config("DualReplicaCloud", "DualReplica")["spec"]) == [
        "_base", "none", "two-node-with-fencing"]
    alt = controller_config("GCP")
    alt["spec"]["infra"]["status"]["platformStatus"]["gcp"] = {
        "cloudLoadBalancerConfig": {"dnsType": "ClusterHosted", "clusterHosted": {"apiIntLoadBalancerIPs": ["10.0.0.2"]}}}
    assert platform_dirs(alt["spec"]) == ["_base", "cloud-platform-alt-dns", "gcp"]


@pytest.mark.parametrize(("platform", "topology", "expected"), [
    ("None", "HighlyAvailable", "base"),
    ("AWS", "HighlyAvailable", "base"),
    ("OpenStack", "HighlyAvailable", "on-prem"),
    ("BareMetal", "HighlyAvailable", "baremetal"),
    ("BareMetal", "SingleReplica", "sno baremetal"),
    ("SomethingNew", "SingleReplica", "sno none"),
])
def test_later_platform_dirs_override_earlier_ones(tree: Path, platform: str, topology: str,
                                                   expected: str) -> None:
    assert file_text(render(tree, platform, topology)["00-worker"], "/etc/a") == expected + "\n"


def test_zero_byte_template_removes_lower_precedence_one(tree: Path) -> None:
    assert "/etc/b" in files(render(tree, "None")["00-worker"])
    assert "/etc/b" not in files(render(tree, "AWS")["00-worker"])


def test_whitespace_only_output_is_skipped(tree: Path) -> None:
    assert "/etc/c" in files(render(tree, "None")["00-worker"])
    assert "/etc/c" not in files(render(tree, "GCP")["00-worker"])


def test_common_templates_go_only_into_the_first_machine_config(tree: Path) -> None:
    mcs = render(tree, "AWS")
    assert sorted(mcs) == ["00-worker", "01-worker-kubelet"]
    assert file_text(mcs["00-worker"], "/etc/common") == "aws worker\n"
    assert set(files(mcs["01-worker-kubelet"])) == {"/etc/k"}


def test_units_and_extensions(tree: Path) -> None:
    mc = render(tree, "None")["00-worker"]
    assert units(mc) == {"u.service": {"name": "u.service", "enabled": True,
                                       "contents": "[Service]\nExecStart=/bin/true\n"}}
    assert mc["spec"]["extensions"] == ["usbguard"]


def test_files_are_ordered_by_template_file_name(tree: Path) -> None:
    paths = [f["path"] for f in render(tree, "None")["00-worker"]["spec"]["config"]["storage"]["files"]]
    assert paths == ["/etc/a", "/etc/b", "/etc/c", "/etc/common"]


def test_custom_pool_renders_worker_templates(tree: Path) -> None:
    mcs = by_name(render_role(controller_config("None"), tree, "infra"))
    assert sorted(mcs) == ["00-worker", "01-worker-kubelet"]
    assert mcs["00-worker"]["metadata"]["labels"]["machineconfiguration.openshift.io/role"] == "infra"
    assert file_text(mcs["00-worker"], "/etc/common") == "infra\n"


def test_missing_or_reserved_platform_type_is_an_error(tree: Path) -> None:
    cc = controller_config("None")
    cc["spec"]["infra"]["status"]["platformStatus"]["type"] = ""
    with pytest.raises(InputError, match="cannot generate MachineConfigs when no platformStatus.type is set"):
        render_templates(cc, tree)
    with pytest.raises(InputError, match="platform _base unsupported"):
        render_templates(controller_config("_base"), tree)


def test_undefined_variable_names_template_file_and_line(tree: Path) -> None:
    path = write(tree, "worker/00-worker/_base/files/z.yaml",
                 "path: /etc/z\ncontents:\n  inline: |\n    {{ clusterDNSIP }}\n    {{ no_such_thing }}\n")
    with pytest.raises(InputError) as e:
        render_templates(controller_config("None"), tree)
    assert e.value.file == str(path) and e.value.line == 5
    assert str(e.value) == f"{path}:5: undefined variable: 'no_such_thing' is undefined"


def test_undefined_attribute_inside_an_expression_names_the_line(tree: Path) -> None:
    path = write(tree, "common/_base/units/v.yaml", "name: v.service\n\ncontents: {{ images.nope }}\n")
    with pytest.raises(InputError) as e:
        render_templates(controller_config("None"), tree)
    assert (e.value.file, e.value.line) == (str(path), 3)
    assert "has no attribute 'nope'" in e.value.message


def test_syntax_error_names_template_file_and_line(tree: Path) -> None:
    path = write(tree, "worker/01-worker-kubelet/aws/files/k.yaml", "path: /etc/k\n{% if %}\n")
    with pytest.raises(InputError) as e:
        render_templates(controller_config("AWS"), tree)
    assert (e.value.file, e.value.line) == (str(path), 2)
    assert e.value.message.startswith("template syntax error:")


def test_rendered_yaml_errors_and_unknown_keys_name_the_template(tree: Path) -> None:
    path = write(tree, "worker/00-worker/_base/files/y.yaml", "path: /etc/y\ncontents: [unclosed\n")
    with pytest.raises(InputError) as e:
        render_templates(controller_config("None"), tree)
    assert e.value.file == str(path) and "not valid YAML" in e.value.message
    path.write_text("path: /etc/y\nmod: 0644\n")
    with pytest.raises(InputError, match="unknown key.s. mod"):
        render_templates(controller_config("None"), tree)


def test_sandbox_refuses_python_internals(tree: Path) -> None:
    write(tree, "worker/00-worker/_base/files/s.yaml", "path: /etc/s\ncontents:\n  inline: {{ ''.__class__.__mro__ }}\n")
    with pytest.raises(InputError):
        render_templates(controller_config("None"), tree)


def test_values_are_variables_in_templates(tree: Path) -> None:
    write(tree, "worker/00-worker/_base/files/v.yaml", file_tpl("/etc/v", "{{ ntp_server }} {{ values.ntp_server }}"))
    mcs = by_name(render_templates(controller_config("None"), tree, {"ntp_server": "time.example.com"}))
    assert file_text(mcs["00-worker"], "/etc/v") == "time.example.com time.example.com\n"
    with pytest.raises(InputError, match="'ntp_server' is undefined"):
        render_templates(controller_config("None"), tree)
    with pytest.raises(InputError, match="would hide the template variable"):
        render_templates(controller_config("None"), tree, {"clusterDNSIP": "1.1.1.1"})


def test_user_machine_config_template(tmp_path: Path) -> None:
    path = write(tmp_path, "99-worker-chrony.yaml.j2", (
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\n"
        "metadata:\n  name: 99-{{ pool }}-chrony\n"
        "spec:\n  config:\n    ignition:\n      version: 3.5.0\n"
        "{% for s in ntp %}    # server {{ s }}\n{% endfor %}"))
    text = render_user_template(path, {"pool": "worker", "ntp": ["a", "b"]})
    assert "name: 99-worker-chrony" in text and "# server b" in text
    with pytest.raises(InputError) as e:
        render_user_template(path, {"pool": "worker"})
    assert (e.value.file, e.value.line) == (str(path), 9)
    assert "'ntp' is undefined" in e.value.message


def test_relative_paths_still_report_the_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "mc.yaml.j2", "a: 1\nb: {{ missing }}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as e:
        render_user_template(Path("mc.yaml.j2"), {})
    assert (e.value.file, e.value.line) == ("mc.yaml.j2", 2)


def test_default_templates_dir_is_the_repository_tree() -> None:
    from mcc.template import DEFAULT_TEMPLATES_DIR

    assert (DEFAULT_TEMPLATES_DIR / "worker" / "01-worker-kubelet").is_dir()
