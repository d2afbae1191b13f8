"""`mcc render` end to end on temporary directories."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from mcc.cli import main

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "cluster"


@pytest.fixture()
def cluster(tmp_path: Path) -> Path:
    src = tmp_path / "cluster"
    shutil.copytree(EXAMPLES, src)
    return src


def load(path: Path) -> dict:  # type: ignore[type-arg]
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_out_writes_the_bootstrap_layout(cluster: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["render", str(cluster), "--out", str(out)]) == 0
    pools = sorted(p.stem for p in (out / "machine-pools").iterdir())
    assert pools == ["infra", "master", "worker"]
    assert (out / "controller-config" / "machine-config-controller.yaml").is_file()
    configs = {p.stem for p in (out / "machine-configs").iterdir()}
    assert {"00-master", "00-worker", "99-master-ssh", "99-worker-ssh",
            "50-infra-sysctl"} <= configs
    for pool in pools:
        obj = load(out / "machine-pools" / f"{pool}.yaml")
        name = obj["spec"]["configuration"]["name"]
        assert name.startswith(f"rendered-{pool}-") and len(name) == len(f"rendered-{pool}-") + 32
        assert obj["status"]["configuration"] == obj["spec"]["configuration"]
        assert name in configs
        rendered = load(out / "machine-configs" / f"{name}.yaml")
        assert rendered["metadata"]["ownerReferences"][0]["name"] == pool
        assert rendered["spec"]["config"]["ignition"]["version"] == "3.5.0"
    infra = load(out / "machine-pools" / "infra.yaml")["spec"]["configuration"]["source"]
    # template MCs (worker role), user MCs, and the MCs generated from the KubeletConfig (worker)
    # and the ContainerRuntimeConfig (infra)
    assert [s["name"] for s in infra] == [
        "00-worker", "01-worker-container-runtime", "01-worker-kubelet", "50-infra-sysctl",
        "50-worker-chrony", "99-infra-generated-containerruntime", "99-worker-generated-kubelet",
        "99-worker-ssh"]
    assert {s["kind"] for s in infra} == {"MachineConfig"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_rerender_replaces_the_directory_and_is_deterministic(cluster: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["render", str(cluster), "--out", str(out)]) == 0
    (out / "stale.yaml").write_text("x")
    first = {p.name for p in (out / "machine-configs").iterdir()}
    assert main(["render", str(cluster), "--out", str(out)]) == 0
    assert not (out / "stale.yaml").exists()
    assert {p.name for p in (out / "machine-configs").iterdir()} == first


def test_failing_pool_leaves_nothing_partial(cluster: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (cluster / "bad.yaml").write_text("""\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: 60-worker-bad
  labels: {machineconfiguration.openshift.io/role: worker}
spec:
  config:
    ignition: {version: 3.2.0}
    storage:
      files:
      - {path: /usr/bin/x, mode: 2541, contents: {source: "data:,x"}}
""")
    out = tmp_path / "out"
    assert main(["render", str(cluster), "--out", str(out)]) == 1
    assert not out.exists()
    assert not list(tmp_path.glob(".out*"))
    err = capsys.readouterr().err
    assert err == f"mcc render: {cluster / 'bad.yaml'}: Failed to render configuration for " \
                  "pool infra: invalid mode 04755 for /usr/bin/x, cannot exceed 0777\n"
    # an existing directory survives a failed render untouched
    out.mkdir()
    (out / "keep").write_text("x")
    assert main(["render", str(cluster), "--out", str(out)]) == 1
    assert [p.name for p in out.iterdir()] == ["keep"]


def test_json_output_is_one_list(cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(cluster), "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["apiVersion"] == "v1" and doc["kind"] == "List"
    names = [item["metadata"]["name"] for item in doc["items"]]
    assert [n.rsplit("-", 1)[0] for n in names] == [
        "rendered-infra", "rendered-master", "rendered-worker"]
    worker = doc["items"][2]
    assert list(worker["spec"]) == ["osImageURL", "baseOSExtensionsContainerImage", "config",
                                    "kernelArguments", "extensions", "fips", "kernelType"]
    assert worker["metadata"]["annotations"][
        "machineconfiguration.openshift.io/release-image-version"] == "4.19.0"


def test_yaml_output_matches_json(cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(cluster), "-o", "json"]) == 0
    items = json.loads(capsys.readouterr().out)["items"]
    assert main(["render", str(cluster)]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert docs == items


def test_bad_input_is_one_line_naming_file_line_and_field(
        cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = cluster / "99-worker-ssh.yaml"
    path.write_text(path.read_text().replace("name: 99-worker-ssh",
                                             "name: 99-worker-ssh\n  generation: many"))
    assert main(["render", str(cluster)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"mcc render: {path}:6: $.metadata.generation: ")


def test_no_pool_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(EXAMPLES / "99-worker-ssh.yaml", tmp_path)
    assert main(["render", str(tmp_path)]) == 1
    assert "no MachineConfigPool" in capsys.readouterr().err
