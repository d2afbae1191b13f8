"""The real daemon (mcd.daemon.Daemon, the real update engine on a tmp root, an in-memory
systemd) on the kube store limited to its node, with the real controller (mcc.controller) running
its loop over the kube store in a thread: a reboot update drains through the desiredDrain /
lastAppliedDrain handshake (the controller cordons the Node via spec.unschedulable and evicts its
pods, here none), queues the reboot, and after the "reboot" the new daemon process uncordons and
reports Done - all through the real kube-apiserver, as `mcc start --store kube` and
`mcd start --store kube --node NAME` would."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from machineconfig import constants as C
from machineconfig.store import open_store
from mcc.controller import Controller
from mcd.state import Phase
from mcd.daemon import Daemon, Timeouts
from tests.kube.controlplane import ControlPlane
from tests.kube.kit import call
from tests.support.clusterkit import seed_node
from tests.unit.daemon.test_mcd_daemon import A, B_REBOOT, lay_down
from tests.unit.daemon.test_mcd_update import FakeSystemd, root  # noqa: F401 - root is a fixture

NODE = "node-1"
# Bounds, not speeds: the controller thread answers a drain request within milliseconds.
TIMEOUTS = Timeouts(drain=60, uncordon=60, watch=0.5, backoff_min=0.01, backoff_max=0.05,
                    drift_poll=0.01, drift_full=0.5)


@pytest.fixture
def controller(clean_cluster: ControlPlane, kubeconfig: Path) -> Iterator[Any]:
    store = open_store(f"kube:{kubeconfig}")
    seed_node(store, NODE, A, B_REBOOT)
    stop = threading.Event()
    thread = threading.Thread(target=Controller(store).run, args=(stop, 1.0), daemon=True)
    thread.start()
    yield store
    stop.set()
    thread.join(30)
    store.close()  # type: ignore[attr-defined]


def test_reboot_update_through_the_api_server(controller: Any, control_plane: ControlPlane,
                                             kubeconfig: Path, root: Path) -> None:
    cp = control_plane
    mark = cp.audit_mark()
    lay_down(root, A)
    systemd = FakeSystemd()
    api = open_store(f"kube:{kubeconfig}", node=NODE)
    try:
        daemon = Daemon(api, NODE, systemd, root=root, timeouts=TIMEOUTS)
        daemon.phase = Phase.FOLLOWING
        daemon.sync()
        annotations = api.get_node(NODE).annotations
        assert annotations[C.LAST_APPLIED_DRAIN_ANNOTATION] == "drain-rendered-worker-b"
        assert annotations[C.POST_CONFIG_ACTION_ANNOTATION] == "Rebooting"
        assert annotations[C.CURRENT_CONFIG_ANNOTATION] == "rendered-worker-a"
        assert systemd.calls[-1] == ("Reboot", "Node will reboot into config rendered-worker-b")
        _, node = call(cp, "GET", f"/api/v1/nodes/{NODE}")
        assert node["spec"]["unschedulable"] is True  # cordoned by the controller
        assert node["metadata"]["annotations"][C.CORDONED_BY_MCC_ANNOTATION] == "true"
        # The pods on the node were looked up for eviction.
        cp.audit_mark()
        assert any(r.path == "/api/v1/pods" and "spec.nodeName" in r.uri
                   for r in cp.requests(mark))

        resumed = Daemon(api, NODE, systemd, root=root, timeouts=TIMEOUTS)  # after the reboot
        resumed.sync()
        annotations = api.get_node(NODE).annotations
        assert annotations[C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION] == "Done"
        assert annotations[C.CURRENT_CONFIG_ANNOTATION] == "rendered-worker-b"
        assert annotations[C.LAST_APPLIED_DRAIN_ANNOTATION] == "uncordon-rendered-worker-b"
        _, node = call(cp, "GET", f"/api/v1/nodes/{NODE}")
        assert not node["spec"].get("unschedulable")
        assert (root / "etc/kubernetes/kubelet.conf").read_text() == "kubelet"
        reasons = [e.reason for e in controller.list_events("Node", NODE)]
        assert {"Cordon", "Drain", "Reboot"} <= set(reasons)
    finally:
        api.close()  # type: ignore[attr-defined]



def node_done_in_a(kubeconfig: Path, root: Path) -> tuple[Any, Any]:
    """A node Done in config A on disk and in the API server: (the controller's store, the
    node's own store)."""
    lay_down(root, A)
    store = open_store(f"kube:{kubeconfig}")
    seed_node(store, NODE, A)
    return store, open_store(f"kube:{kubeconfig}", node=NODE)


def test_certificate_writer_follows_the_controller_config(clean_cluster: ControlPlane,
                                                          kubeconfig: Path, root: Path) -> None:
    """MCO's certificate writer through the API server: a daemon writes the ControllerConfig's
    CA bundles and records its resourceVersion; a CA rotation is written again without any
    rendered config changing (a paused pool's nodes get it too); an unchanged one is not."""
    import base64

    from tests.kube.kit import apply, controller_config

    cp = clean_cluster
    cc = controller_config()
    cc["spec"]["kubeAPIServerServingCAData"] = base64.b64encode(b"CA-ONE\n").decode()
    apply(cp, cc)
    store, api = node_done_in_a(kubeconfig, root)
    try:
        daemon = Daemon(api, NODE, FakeSystemd(), root=root, timeouts=TIMEOUTS)
        daemon.phase = Phase.FOLLOWING
        daemon.sync()
        kubelet_ca = root / "etc/kubernetes/kubelet-ca.crt"
        assert kubelet_ca.read_text() == "CA-ONE\n"
        _, obj = call(cp, "GET", "/apis/machineconfiguration.openshift.io/v1/controllerconfigs/"
                                 "machine-config-controller")
        first = obj["metadata"]["resourceVersion"]
        assert api.get_node(NODE).annotations[
            C.LAST_SYNCED_CONTROLLER_CONFIG_ANNOTATION] == first

        kubelet_ca.write_text("tampered\n")
        daemon.sync()  # same resourceVersion: nothing written
        assert kubelet_ca.read_text() == "tampered\n"

        cc["spec"]["kubeAPIServerServingCAData"] = base64.b64encode(b"CA-TWO\n").decode()
        apply(cp, cc)
        daemon.sync()
        assert kubelet_ca.read_text() == "CA-TWO\n"
        assert api.get_node(NODE).annotations[
            C.LAST_SYNCED_CONTROLLER_CONFIG_ANNOTATION] != first
        # the rollout state never moved: no config was rendered or applied for it
        assert api.get_node(NODE).annotations[C.CURRENT_CONFIG_ANNOTATION] == A["metadata"]["name"]
    finally:
        api.close()  # type: ignore[attr-defined]
        store.close()  # type: ignore[attr-defined]


def test_service_ca_rotation_through_the_api_server(clean_cluster: ControlPlane,
                                                     kubeconfig: Path, root: Path) -> None:
    """MCO's service-CA rotation: the ControllerConfig says `service-ca-rotate: "true"`, the
    operator's kubeconfig-data ConfigMap holds the new bundle; the daemon adds the new CA to the
    node's kubeconfigs, restarts the kubelet once, and records what it observed on its Node."""
    import base64

    from tests.kube.kit import apply, controller_config
    from tests.unit.daemon.test_mcd_certificate_writer import OLD_CA, SERVICE_CA, ca_of, node_with_kubeconfigs

    cp = clean_cluster
    namespace = "openshift-machine-config-operator"
    call(cp, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": namespace}})
    call(cp, "DELETE", f"/api/v1/namespaces/{namespace}/configmaps/kubeconfig-data")
    code, _ = call(cp, "POST", f"/api/v1/namespaces/{namespace}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kubeconfig-data"},
        "data": {"ca-bundle.crt": OLD_CA + SERVICE_CA}})  # plain PEM text, as data may hold it
    assert code == 201
    cc = controller_config()
    cc["metadata"].setdefault("annotations", {})[C.SERVICE_CA_ROTATE_ANNOTATION] = "true"
    cc["spec"]["kubeAPIServerServingCAData"] = base64.b64encode(b"CA\n").decode()
    apply(cp, cc)
    etc, kubelet = node_with_kubeconfigs(root, OLD_CA)
    store, api = node_done_in_a(kubeconfig, root)
    systemd = FakeSystemd()
    try:
        daemon = Daemon(api, NODE, systemd, root=root, timeouts=TIMEOUTS)
        daemon.phase = Phase.FOLLOWING
        daemon.sync()
        for path in (etc, kubelet):
            assert SERVICE_CA.strip() in ca_of(path) and OLD_CA.strip() in ca_of(path)
        assert systemd.calls.count(("RestartUnit", "kubelet.service")) == 1
        assert api.get_node(NODE).annotations[C.LAST_OBSERVED_SERVER_CA_ANNOTATION] == "true"
        daemon.sync()  # observed: no second restart while the ControllerConfig still says true
        assert systemd.calls.count(("RestartUnit", "kubelet.service")) == 1
        cc["metadata"]["annotations"][C.SERVICE_CA_ROTATE_ANNOTATION] = "false"
        apply(cp, cc)
        daemon.sync()
        assert api.get_node(NODE).annotations[C.LAST_OBSERVED_SERVER_CA_ANNOTATION] == "false"
        assert systemd.calls.count(("RestartUnit", "kubelet.service")) == 1
    finally:
        call(cp, "DELETE", f"/api/v1/namespaces/{namespace}/configmaps/kubeconfig-data")
        api.close()  # type: ignore[attr-defined]
        store.close()  # type: ignore[attr-defined]
