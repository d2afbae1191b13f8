"""`mcc render` with a ControllerConfig, end to end: the template, kubelet-config and
container-runtime-config controllers feed the render, as MCO's bootstrap does."""
from __future__ import annotations

import base64
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from machineconfig.constants import GENERATED_BY_CONTROLLER_VERSION_ANNOTATION
from machineconfig.ignition.dataurl import decode
from mcc.cli import main
from mcc.template import DEFAULT_TEMPLATES_DIR

from tests.support.templatekit import assert_valid_ignition

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "cluster"
VALUES = ROOT / "examples" / "cluster-values.yaml"
AUTH = "ZXhhbXBsZTpub3QtYS1yZWFsLXRva2Vu"  # the token inside examples/cluster/pull-secret.yaml
MC_HEADER = """\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: {name}
  labels: {{machineconfiguration.openshift.io/role: worker}}
"""


@pytest.fixture()
def cluster(tmp_path: Path) -> Path:
    src = tmp_path / "cluster"
    shutil.copytree(EXAMPLES, src)
    return src


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def rendered(out: Path, pool: str) -> dict[str, Any]:
    name = load(out / "machine-pools" / f"{pool}.yaml")["status"]["configuration"]["name"]
    return load(out / "machine-configs" / f"{name}.yaml")


def sources(out: Path, pool: str) -> list[str]:
    pool_obj = load(out / "machine-pools" / f"{pool}.yaml")
    return [s["name"] for s in pool_obj["spec"]["configuration"]["source"]]


def files(mc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in mc["spec"]["config"]["storage"]["files"]}


def file_text(mc: dict[str, Any], path: str) -> str:
    return decode(files(mc)[path]["contents"]["source"]).decode("utf-8")


def units(mc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {u["name"]: u for u in mc["spec"]["config"]["systemd"]["units"]}


def render_ok(*args: str, capsys: pytest.CaptureFixture[str] | None = None) -> str:
    """Run `mcc render ARGS` expecting success; return stderr."""
    code = main(["render", *args])
    err = capsys.readouterr().err if capsys is not None else ""
    assert code == 0, err
    return err


def test_template_and_generated_machine_configs_feed_every_pool(
        cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert render_ok(str(cluster), "--out", str(out), capsys=capsys) == ""
    configs = {p.stem for p in (out / "machine-configs").iterdir()}
    assert {"00-master", "01-master-container-runtime", "01-master-kubelet", "00-worker",
            "01-worker-container-runtime", "01-worker-kubelet", "99-worker-generated-kubelet",
            "99-infra-generated-containerruntime"} <= configs
    template = load(out / "machine-configs" / "00-worker.yaml")
    assert GENERATED_BY_CONTROLLER_VERSION_ANNOTATION in template["metadata"]["annotations"]
    assert sources(out, "master") == ["00-master", "01-master-container-runtime",
                                      "01-master-kubelet", "99-master-ssh"]
    assert sources(out, "worker") == [
        "00-worker", "01-worker-container-runtime", "01-worker-kubelet", "50-worker-chrony",
        "99-worker-generated-kubelet", "99-worker-ssh"]
    for pool in ("master", "worker", "infra"):
        mc = rendered(out, pool)
        assert mc["metadata"]["name"].startswith(f"rendered-{pool}-")
        assert_valid_ignition(mc["spec"]["config"])
        assert {"kubelet.service", "crio.service", "machine-config-daemon.service",
                "machine-config-daemon-firstboot.service"} <= set(units(mc))
        assert units(mc)["kubelet.service"]["enabled"] is True
        assert {"/etc/kubernetes/kubelet.conf", "/etc/crio/crio.conf.d/00-default",
                "/etc/containers/registries.conf", "/etc/containers/policy.json",
                "/etc/kubernetes/kubelet-ca.crt"} <= set(files(mc))
        kubelet_conf = yaml.safe_load(file_text(mc, "/etc/kubernetes/kubelet.conf"))
        assert kubelet_conf["clusterDNS"] == ["172.30.0.10"]
        # the ControllerConfig's base64 CA arrives decoded as PEM
        assert file_text(mc, "/etc/kubernetes/kubelet-ca.crt").startswith("-----BEGIN CERTIFICATE")
    assert "/etc/sysctl.d/50-infra.conf" in files(rendered(out, "infra"))


def test_kubelet_and_container_runtime_configs_take_effect_and_get_their_status(
        cluster: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    render_ok(str(cluster), "--out", str(out))
    worker, infra, master = (rendered(out, p) for p in ("worker", "infra", "master"))
    # the KubeletConfig selects the worker pool; infra renders worker MCs too, as in MCO
    for mc in (worker, infra):
        conf = yaml.safe_load(file_text(mc, "/etc/kubernetes/kubelet.conf"))
        assert conf["maxPods"] == 500 and conf["podPidsLimit"] == 8192
        assert "KUBELET_LOG_LEVEL=3" in file_text(
            mc, "/etc/systemd/system/kubelet.service.d/20-logging.conf")
    assert yaml.safe_load(file_text(master, "/etc/kubernetes/kubelet.conf"))["maxPods"] != 500
    # the ContainerRuntimeConfig selects only the infra pool
    assert "pids_limit = 8192" in file_text(infra, "/etc/crio/crio.conf.d/01-ctrcfg-pidsLimit")
    assert "/etc/crio/crio.conf.d/01-ctrcfg-pidsLimit" not in files(worker)

    kc = load(out / "kubelet-configs" / "worker-max-pods.yaml")
    assert kc["kind"] == "KubeletConfig"
    assert kc["status"]["conditions"][-1]["type"] == "Accepted"
    assert kc["status"]["conditions"][-1]["status"] == "True"
    assert kc["metadata"]["finalizers"] == ["99-worker-generated-kubelet"]
    ctr = load(out / "container-runtime-configs" / "infra-pids-limit.yaml")
    assert [(c["type"], c["status"]) for c in ctr["status"]["conditions"]] == [("Success", "True")]


def test_rejected_configs_are_reported_and_the_pools_still_render(
        cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cluster / "bad-kubelet.yaml").write_text("""\
apiVersion: machineconfiguration.openshift.io/v1
kind: KubeletConfig
metadata: {name: worker-dns}
spec:
  machineConfigPoolSelector:
    matchLabels: {pools.operator.machineconfiguration.openshift.io/worker: ""}
  kubeletConfig: {clusterDNS: [10.0.0.10]}
""")
    ctr_path = cluster / "containerruntimeconfig.yaml"
    ctr_path.write_text(ctr_path.read_text().replace("pidsLimit: 8192", "pidsLimit: 10"))
    out = tmp_path / "out"
    err = render_ok(str(cluster), "--out", str(out), capsys=capsys)
    assert err.splitlines() == [
        f"mcc render: warning: {cluster / 'bad-kubelet.yaml'}: KubeletConfig worker-dns not "
        "applied (Accepted): Error: KubeletConfiguration: clusterDNS is not allowed to be set, "
        "but contains: [10.0.0.10]",
        f"mcc render: warning: {ctr_path}: ContainerRuntimeConfig infra-pids-limit not applied "
        "(Failure): Error: invalid PidsLimit 10",
    ]
    bad = load(out / "kubelet-configs" / "worker-dns.yaml")["status"]["conditions"][-1]
    assert (bad["type"], bad["status"]) == ("Accepted", "False")
    assert "clusterDNS" in bad["message"]
    ctr = load(out / "container-runtime-configs" / "infra-pids-limit.yaml")
    assert ctr["status"]["conditions"][-1]["type"] == "Failure"
    # the accepted KubeletConfig still applies; the rejected ones produce nothing
    assert "99-worker-generated-kubelet" in sources(out, "worker")
    assert "99-infra-generated-containerruntime" not in sources(out, "infra")
    conf = yaml.safe_load(file_text(rendered(out, "worker"), "/etc/kubernetes/kubelet.conf"))
    assert conf["clusterDNS"] == ["172.30.0.10"] and conf["maxPods"] == 500


def test_values_reach_user_templates_and_the_shipped_templates(
        cluster: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    render_ok(str(cluster), "--values", str(VALUES), "--out", str(out))
    worker = rendered(out, "worker")
    assert file_text(worker, "/etc/chrony.conf").startswith(
        "server ntp1.demo.example.com iburst\nserver ntp2.demo.example.com iburst\n")
    assert file_text(worker, "/etc/containers/registries.conf").startswith(
        'unqualified-search-registries = ["registry.demo.example.com", "quay.io"]')
    # the *.yaml.j2 input is written out as the MachineConfig it rendered to
    assert load(out / "machine-configs" / "50-worker-chrony.yaml")["metadata"]["name"] == \
        "50-worker-chrony"
    # without --values, the template's own default applies
    render_ok(str(cluster), "--out", str(out))
    assert file_text(rendered(out, "worker"), "/etc/chrony.conf").startswith(
        "server 2.fedora.pool.ntp.org iburst\n")


def test_user_template_with_an_undefined_variable_names_file_and_line(
        cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = cluster / "60-worker-motd.yaml.j2"
    path.write_text(MC_HEADER.format(name="60-worker-motd") + """\
spec:
  config:
    ignition: {version: 3.2.0}
    storage:
      files:
      - path: /etc/motd
        contents: {source: "data:,{{ motd }}"}
""")
    out = tmp_path / "out"
    assert main(["render", str(cluster), "--values", str(VALUES), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == f"mcc render: {path}:12: undefined variable: 'motd' is undefined\n"
    assert not out.exists()
    # defined through --values, the same file renders
    values = tmp_path / "values.yaml"
    values.write_text("motd: hello\n")
    render_ok(str(cluster), "--values", str(values), "--out", str(out))
    assert file_text(rendered(out, "worker"), "/etc/motd") == "hello"


def test_a_values_file_must_be_a_mapping(cluster: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("- a\n- b\n")
    assert main(["render", str(cluster), "--values", str(values)]) == 1
    assert capsys.readouterr().err == f"mcc render: {values}: --values must be one YAML mapping\n"


def test_a_user_machine_config_may_not_take_a_template_name(
        cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # MCO's template controller owns 00-worker and would overwrite the user's object: refuse it.
    path = cluster / "00-worker.yaml"
    path.write_text(MC_HEADER.format(name="00-worker") + "spec: {}\n")
    assert main(["render", str(cluster)]) == 1
    err = capsys.readouterr().err
    template = DEFAULT_TEMPLATES_DIR / "worker" / "00-worker"
    assert err.startswith(f"mcc render: {path}: MachineConfig '00-worker' has the name of the "
                          f"MachineConfig generated from {template}, which owns it; rename yours")
    assert err.count("\n") == 1


def test_a_user_machine_config_may_not_take_a_generated_name(
        cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = cluster / "99-worker-generated-kubelet.yaml"
    path.write_text(MC_HEADER.format(name="99-worker-generated-kubelet") + "spec: {}\n")
    assert main(["render", str(cluster)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"mcc render: {path}: MachineConfig '99-worker-generated-kubelet' has "
                          f"the name of the MachineConfig generated from "
                          f"{cluster / 'kubeletconfig.yaml'}, which owns it")


def test_controller_made_copies_are_replaced_so_an_out_dir_renders_again(
        cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, again = tmp_path / "out", tmp_path / "again"
    render_ok(str(cluster), "--out", str(out))
    # out/ holds controller-made MCs (annotated) with the template names: fresh ones replace them,
    # so with the pull secret (not part of the layout) the same rendered configs come out.
    render_ok(str(out), str(cluster / "pull-secret.yaml"), "--out", str(again), capsys=capsys)
    for pool in ("master", "worker", "infra"):
        assert rendered(again, pool)["metadata"]["name"] == rendered(out, pool)["metadata"]["name"]


def test_pull_secret_is_0600_on_the_node_and_never_printed(
        cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "out"
    assert main(["-v", "render", str(cluster), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    data = load(cluster / "pull-secret.yaml")["data"][".dockerconfigjson"]
    secret = base64.b64decode(data).decode()
    for text in (captured.out, captured.err, caplog.text):
        assert AUTH not in text and data not in text and secret not in text
    for pool in ("master", "worker", "infra"):
        f = files(rendered(out, pool))["/var/lib/kubelet/config.json"]
        assert f["mode"] == 0o600
        assert json.loads(decode(f["contents"]["source"])) == json.loads(secret)


def test_a_broken_pull_secret_is_named_without_its_data(
        cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = cluster / "pull-secret.yaml"
    text = path.read_text()
    data = load(path)["data"][".dockerconfigjson"]
    path.write_text(text.replace(data, data[:-9]))
    assert main(["render", str(cluster)]) == 1
    err = capsys.readouterr().err
    assert err == (f"mcc render: {path}: Secret 'pull-secret': .dockerconfigjson is not "
                   "base64-encoded JSON\n")


def test_without_a_pull_secret_nodes_get_an_empty_one(
        cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cluster / "pull-secret.yaml").unlink()
    out = tmp_path / "out"
    err = render_ok(str(cluster), "--out", str(out), capsys=capsys)
    assert err == ("mcc render: warning: no pull secret (a Secret of type "
                   "kubernetes.io/dockerconfigjson) among the inputs: nodes get an empty one\n")
    assert file_text(rendered(out, "worker"), "/var/lib/kubelet/config.json") == '{"auths":{}}'


def test_a_controller_config_without_platform_type_names_the_file(
        cluster: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = cluster / "controllerconfig.yaml"
    path.write_text(path.read_text().replace("      platformStatus:\n        type: None\n", ""))
    assert main(["render", str(cluster)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"mcc render: {path}:")
    assert err.endswith("$.spec.infra.status.platformStatus.type: cannot generate MachineConfigs "
                        "when no platformStatus.type is set\n")


def test_templates_option_selects_the_tree(cluster: Path, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(DEFAULT_TEMPLATES_DIR, templates)
    (templates / "worker" / "00-worker" / "_base" / "files" / "motd.yaml").write_text(
        "path: /etc/motd\nmode: 0644\ncontents:\n  inline: worker of {{ dns.spec.baseDomain }}\n")
    out = tmp_path / "out"
    render_ok(str(cluster), "--templates", str(templates), "--out", str(out))
    assert file_text(rendered(out, "worker"), "/etc/motd") == "worker of demo.example.com"
    assert "/etc/motd" not in files(rendered(out, "master"))


def test_without_a_controller_config_only_the_inputs_are_rendered(
        cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cluster / "controllerconfig.yaml").unlink()
    out = tmp_path / "out"
    render_ok(str(cluster), "--out", str(out), capsys=capsys)
    assert sources(out, "worker") == ["50-worker-chrony", "99-worker-ssh"]
    assert not (out / "kubelet-configs").exists()
    assert not (out / "container-runtime-configs").exists()


def write_secret(path: Path, name: str, docker_config: str) -> None:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": "openshift-config"},
        "stringData": {".dockerconfigjson": docker_config}}))


def test_the_controller_config_names_the_pull_secret_among_several(
        cluster: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = '{"auths":{"other.example.com":{"auth":"b3RoZXI6c2VjcmV0"}}}'
    write_secret(cluster / "other-secret.yaml", "other", other)
    out = tmp_path / "out"
    render_ok(str(cluster), "--out", str(out))
    config_json = file_text(rendered(out, "worker"), "/var/lib/kubelet/config.json")
    assert "registry.example.com" in config_json
    # a reference to a Secret that is not there is an error naming what is, never the data
    (cluster / "pull-secret.yaml").unlink()
    assert main(["render", str(cluster)]) == 1
    err = capsys.readouterr().err
    cc_lines = (cluster / "controllerconfig.yaml").read_text().splitlines()
    line = cc_lines.index("  pullSecret:") + 2  # the `name:` line under it, 1-based
    assert err == (f"mcc render: {cluster / 'controllerconfig.yaml'}:{line}: $.spec.pullSecret.name: "
                   "ControllerConfig spec.pullSecret names Secret 'pull-secret', which is not "
                   f"among the inputs (found 'other' in {cluster / 'other-secret.yaml'})\n")
    # without a reference, the only Secret given is used (stringData works as well as data)
    path = cluster / "controllerconfig.yaml"
    path.write_text(path.read_text().replace("  pullSecret:\n    name: pull-secret\n"
                                             "    namespace: openshift-config\n", ""))
    render_ok(str(cluster), "--out", str(out))
    assert json.loads(file_text(rendered(out, "worker"), "/var/lib/kubelet/config.json")) == \
        json.loads(other)


VECTORS = Path(__file__).resolve().parents[2] / "data" / "vectors" / "render"
VECTOR_CASES = sorted(VECTORS.glob("*.json"))


def write_vector_inputs(case: dict[str, Any], directory: Path) -> None:
    """A render vector as the files `mcc render` reads: its ControllerConfig carries only the
    default OS images (no spec.infra), so no template MachineConfigs join the pool."""
    args = case["args"]
    pool = case["pool"] or {
        "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfigPool",
        "metadata": {"name": args["pool"]},
        "spec": {"machineConfigSelector": {"matchExpressions": [{
            "key": "machineconfiguration.openshift.io/role", "operator": "In",
            "values": args["poolRoles"].split(",") if args["poolRoles"] else [args["pool"]]}]}}}
    cconfig = case["controllerConfig"] or {
        "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "ControllerConfig",
        "metadata": {"name": "machine-config-controller"},
        "spec": {"baseOSContainerImage": args["baseOSImage"],
                 "baseOSExtensionsContainerImage": args["baseOSExtImage"]}}
    directory.mkdir()
    (directory / "pool.json").write_text(json.dumps(pool))
    (directory / "controllerconfig.json").write_text(json.dumps(cconfig))
    for i, mc in enumerate(case["machineConfigs"]):
        (directory / f"mc-{i:03}.json").write_text(json.dumps(mc, ensure_ascii=False))


@pytest.mark.parametrize("path", VECTOR_CASES, ids=[p.stem for p in VECTOR_CASES])
def test_a_controller_config_without_infra_renders_the_inputs_only(
        path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    expected = case["expected"]
    write_vector_inputs(case, tmp_path / "in")
    code = main(["render", str(tmp_path / "in"), "-o", "json"])
    captured = capsys.readouterr()
    if not expected["ok"]:
        assert code == 1
        assert expected["error"].split("\n")[0] in captured.err
        return
    assert code == 0, captured.err
    [item] = json.loads(captured.out)["items"]
    assert item["metadata"]["name"] == expected["renderedName"]
    assert item["spec"] == expected["spec"]
    assert item["metadata"]["annotations"] == expected["annotations"]
