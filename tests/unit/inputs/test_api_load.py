"""Loading MachineConfig objects: any mix of YAML and JSON, and errors that say where to look."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from machineconfig.api import (
    ControllerConfig, ContainerRuntimeConfig, KubeletConfig, MachineConfig, MachineConfigPool,
    load_paths,
)
from machineconfig.errors import InputError

MC_YAML = """\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: 99-worker-file
  labels:
    machineconfiguration.openshift.io/role: worker
spec:
  osImageURL: quay.io/example/os:1
  kernelArguments: [nosmt]
  config:
    ignition:
      version: 3.2.0
    storage:
      files:
      - path: /etc/a
        mode: 0644
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_mixed_yaml_json_and_multi_document(tmp_path: Path) -> None:
    write(tmp_path, "mc.yaml", MC_YAML + "---\n# empty document\n---\n" + """\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfigPool
metadata: {name: worker}
spec:
  machineConfigSelector:
    matchExpressions:
    - {key: machineconfiguration.openshift.io/role, operator: NotIn, values: [master]}
""")
    (tmp_path / "sub").mkdir()
    write(tmp_path, "sub/cc.json", json.dumps({
        "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "ControllerConfig",
        "metadata": {"name": "machine-config-controller"},
        "spec": {"baseOSContainerImage": "quay.io/example/os:0"}}))
    write(tmp_path, "sub/other.yml", """\
kind: KubeletConfig
apiVersion: machineconfiguration.openshift.io/v1
metadata: {name: k}
spec: {logLevel: 4, machineConfigPoolSelector: {matchLabels: {a: b}}}
---
kind: ContainerRuntimeConfig
apiVersion: machineconfiguration.openshift.io/v1
metadata: {name: c}
spec: {containerRuntimeConfig: {pidsLimit: 2048, defaultRuntime: crun}}
---
kind: ConfigMap
apiVersion: v1
metadata: {name: ignored}
""")
    write(tmp_path, "README.txt", "not an input")
    objs = [item.obj for item in load_paths([str(tmp_path)])]
    kinds = [type(o) for o in objs]
    assert kinds == [MachineConfig, MachineConfigPool, ControllerConfig, KubeletConfig,
                     ContainerRuntimeConfig]
    mc = objs[0]
    assert isinstance(mc, MachineConfig)
    assert mc.spec.os_image_url == "quay.io/example/os:1"
    assert mc.spec.kernel_arguments == ["nosmt"]
    # spec.config stays the raw Ignition object (YAML's 0644 is octal, as in Kubernetes)
    assert mc.spec.config == {"ignition": {"version": "3.2.0"},
                              "storage": {"files": [{"path": "/etc/a", "mode": 420}]}}
    cc = objs[2]
    assert isinstance(cc, ControllerConfig)
    assert cc.spec.base_os_container_image == "quay.io/example/os:0"


@pytest.mark.parametrize("bad, path, line", [
    ("  kernelArguments: [nosmt]", "$.spec.kernelArguments.0", 9),
    ("  fips: \"yes\"", "$.spec.fips", 9),
    ("  kernelType: 7", "$.spec.kernelType", 9),
])
def test_wrong_type_names_file_line_and_field(tmp_path: Path, bad: str, path: str,
                                              line: int) -> None:
    text = MC_YAML.replace("  kernelArguments: [nosmt]", bad.replace("[nosmt]", "[1]"))
    file = write(tmp_path, "mc.yaml", text)
    with pytest.raises(InputError) as err:
        load_paths([str(file)])
    assert err.value.file == str(file)
    assert err.value.path == path
    assert err.value.line == line
    assert str(err.value).startswith(f"{file}:{line}: {path}: MachineConfig: ")


def test_wrong_type_deep_in_a_pool_selector(tmp_path: Path) -> None:
    file = write(tmp_path, "pool.yaml", """\
kind: MachineConfigPool
metadata:
  name: infra
spec:
  machineConfigSelector:
    matchExpressions:
    - key: machineconfiguration.openshift.io/role
      operator: Within
      values: [infra]
""")
    with pytest.raises(InputError) as err:
        load_paths([str(file)])
    assert err.value.path == "$.spec.machineConfigSelector.matchExpressions.0.operator"
    assert err.value.line == 8


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    file = write(tmp_path, "broken.yaml", MC_YAML.replace("kernelArguments: [nosmt]",
                                                          "kernelArguments: [nosmt"))
    with pytest.raises(InputError) as err:
        load_paths([str(file)])
    assert err.value.file == str(file)
    assert err.value.line is not None and err.value.line >= 9
    assert "invalid YAML" in str(err.value)


def test_json_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    file = write(tmp_path, "mc.json", '{\n  "kind": "MachineConfig",\n  "spec": {,}\n}\n')
    with pytest.raises(InputError) as err:
        load_paths([str(file)])
    assert str(err.value).startswith(f"{file}:3: invalid JSON")


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    file = write(tmp_path, "dup.yaml", "kind: MachineConfig\nmetadata: {name: a}\n"
                                       "spec:\n  fips: true\n  fips: false\n")
    with pytest.raises(InputError) as err:
        load_paths([str(file)])
    assert (err.value.path, err.value.line) == ("$.spec.fips", 5)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_paths([str(tmp_path / "nope")])


def test_round_trip_keeps_unknown_fields(tmp_path: Path) -> None:
    file = write(tmp_path, "mc.yaml", MC_YAML.replace("spec:\n", "spec:\n  futureField: 1\n"))
    mc = load_paths([str(file)])[0].obj
    data = mc.to_dict()
    assert data["spec"]["futureField"] == 1
    assert data["spec"]["osImageURL"] == "quay.io/example/os:1"
    assert data["metadata"]["labels"] == {"machineconfiguration.openshift.io/role": "worker"}
