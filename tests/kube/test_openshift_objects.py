"""OpenShift's cluster objects on the real control plane: with manifests/openshift-crds/ applied
(the stand-ins a plain Kubernetes cluster needs), the controller's kube store reads the image
config and generates 99-<pool>-generated-registries from it, publishes the MachineConfiguration's
node disruption policies in its status, and a daemon's store reads them back; without the CRDs
the same reads find nothing and nothing fails (tests/kube/test_rollout_kube.py runs without)."""
from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from machineconfig.store import open_store
from mcc.controller import Controller
from tests.kube.controlplane import ControlPlane
from tests.kube.kit import apply, call, controller_config, examples

CRDS = Path(__file__).resolve().parents[2] / "manifests" / "openshift-crds"
IMAGE = {"apiVersion": "config.openshift.io/v1", "kind": "Image",
         "metadata": {"name": "cluster"},
         "spec": {"registrySources": {"insecureRegistries": ["registry.insecure.example"]}}}
POLICY = {"apiVersion": "operator.openshift.io/v1", "kind": "MachineConfiguration",
          "metadata": {"name": "cluster"},
          "spec": {"nodeDisruptionPolicy": {"files": [
              {"path": "/etc/chrony.conf",
               "actions": [{"type": "Restart", "restart": {"serviceName": "chronyd.service"}}]}]}}}


@pytest.fixture
def openshift_crds(clean_cluster: ControlPlane) -> Iterator[ControlPlane]:
    cp = clean_cluster
    names = []
    for path in sorted(CRDS.glob("*.*.yaml")):
        crd = yaml.safe_load(path.read_text())
        code, answer = cp.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                               crd)
        assert code in (201, 409), (path.name, answer)
        names.append(crd["metadata"]["name"])
    for name in names:
        plural, group = name.split(".", 1)
        version = "v1alpha1" if plural == "imagecontentsourcepolicies" else "v1"
        cp.wait_for(f"{name} served",
                    lambda g=group, v=version, p=plural: cp.call("GET", f"/apis/{g}/{v}/{p}")[0]
                    == 200)
    try:
        yield cp
    finally:
        for name in names:  # deleting a CRD deletes its objects: the cluster scope as before
            cp.call("DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        for name in names:
            cp.wait_for(f"{name} gone", lambda n=name: cp.call(
                "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{n}")[0] == 404,
                timeout=60)


def file_text(mc: dict[str, Any], path: str) -> str:
    for f in mc["spec"]["config"]["storage"]["files"]:
        if f["path"] == path:
            source = f["contents"]["source"]
            head, _, data = source.partition(",")
            return base64.b64decode(data).decode() if head.endswith(";base64") \
                else urllib.parse.unquote(data)
    raise AssertionError(f"{path} not in {mc['metadata']['name']}")


def test_generated_registries_and_published_policies(openshift_crds: ControlPlane) -> None:
    cp = openshift_crds
    apply(cp, controller_config())
    for pool in examples("pools.yaml"):  # the built-in pools (mco-built-in: generated configs)
        apply(cp, pool)
    assert call(cp, "POST", "/apis/config.openshift.io/v1/images", IMAGE)[0] == 201
    assert call(cp, "POST", "/apis/operator.openshift.io/v1/machineconfigurations",
                POLICY)[0] == 201
    store = open_store(f"kube:{cp.kubeconfig}")
    daemon = open_store(f"kube:{cp.kubeconfig}", node="n1")
    try:
        Controller(store).run_pass()
        mc = store.get_object("MachineConfig", "99-worker-generated-registries")
        assert 'location = "registry.insecure.example"' in file_text(
            mc, "/etc/containers/registries.conf")
        assert mc["metadata"]["ownerReferences"][0]["kind"] == "Image"
        rendered = store.get_object("MachineConfigPool", "worker")["spec"]["configuration"]
        assert {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
                "name": "99-worker-generated-registries"} in rendered["source"]

        _, obj = call(cp, "GET", "/apis/operator.openshift.io/v1/machineconfigurations/cluster")
        files = obj["status"]["nodeDisruptionPolicyStatus"]["clusterPolicies"]["files"]
        assert files[-1] == {"path": "/etc/chrony.conf", "actions": [
            {"type": "Restart", "restart": {"serviceName": "chronyd.service"}}]}
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        found = daemon.cluster_disruption_policies()  # type: ignore[attr-defined]
        assert found is not None
        generation, observed, policies = found
        assert generation == observed and policies["files"][-1]["path"] == "/etc/chrony.conf"
    finally:
        store.close()  # type: ignore[attr-defined]
        daemon.close()  # type: ignore[attr-defined]


def test_without_the_crds_there_is_nothing_to_read(clean_cluster: ControlPlane) -> None:
    store = open_store(f"kube:{clean_cluster.kubeconfig}")
    daemon = open_store(f"kube:{clean_cluster.kubeconfig}", node="n1")
    try:
        assert store.list_objects("Image") == []
        assert store.list_objects("MachineConfiguration") == []
        assert daemon.cluster_disruption_policies() is None  # type: ignore[attr-defined]
    finally:
        store.close()  # type: ignore[attr-defined]
        daemon.close()  # type: ignore[attr-defined]


def test_the_daemon_updates_with_the_published_policies(openshift_crds: ControlPlane,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from mcd import daemon as mcd_daemon
    from mcd.daemon import Daemon, DaemonError
    from tests.unit.daemon.test_mcd_update import FakeSystemd

    cp = openshift_crds
    assert call(cp, "POST", "/apis/operator.openshift.io/v1/machineconfigurations",
                POLICY)[0] == 201
    store = open_store(f"kube:{cp.kubeconfig}")
    api = open_store(f"kube:{cp.kubeconfig}", node="n1")
    try:
        daemon = Daemon(api, "n1", FakeSystemd())  # no update runs here: the policy only
        # the controller has not published yet (observedGeneration missing): not ready
        monkeypatch.setattr(mcd_daemon, "POLICY_WAIT", 0.0)
        with pytest.raises(DaemonError, match="^NodeDisruptionPolicyStatus was not ready: "
                                              "MachineConfiguration cluster generation 1, "
                                              "status observedGeneration None$"):
            daemon.update_policy()
        Controller(store).run_pass()
        policy = daemon.update_policy()
        assert [str(a) for a in policy.files["/etc/chrony.conf"]] == ["restart chronyd.service"]
        assert "/etc/containers/registries.conf" in policy.files  # MCO's defaults, merged
    finally:
        store.close()  # type: ignore[attr-defined]
        api.close()  # type: ignore[attr-defined]
