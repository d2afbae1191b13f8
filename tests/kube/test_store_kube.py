"""The kube store against the real control plane (tests/kube/controlplane.py): every port method,
conflicts, the daemon's node-limited store, the pull secret, and the watches behind revision()
(a real 410 after an etcd compaction, a real kube-apiserver restart). What the store wrote is
read from kube-apiserver's audit log."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from machineconfig.rendered_config import RenderedConfig
from machineconfig.constants import CURRENT_CONFIG_ANNOTATION
from machineconfig.store import (
    ForbiddenError, NotFoundError, Store, StoreError, open_store, store_url,
)
from machineconfig.store import kube_watch
from machineconfig.store.kube import KubeStore, node_ready, translate
from tests.kube.controlplane import ControlPlane
from tests.kube.kit import GROUP_PATH, apply, call, controller_config, eventually, writes

MC = "MachineConfig"
MCP = "MachineConfigPool"


def mc(name: str, path: str = "/etc/motd", role: str = "worker") -> dict[str, Any]:
    return {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": MC,
            "metadata": {"name": name, "labels": {"machineconfiguration.openshift.io/role": role}},
            "spec": {"config": {"ignition": {"version": "3.2.0"},
                                "storage": {"files": [{"path": path, "mode": 420,
                                                       "contents": {"source": "data:,x"}}]}}}}


def pool(name: str = "worker") -> dict[str, Any]:
    return {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": MCP,
            "metadata": {"name": name},
            "spec": {"machineConfigSelector": {"matchLabels": {
                         "machineconfiguration.openshift.io/role": name}},
                     "nodeSelector": {"matchLabels": {f"node-role.kubernetes.io/{name}": ""}}}}


# ----- opening


def test_open_store_urls(tmp_path: Path, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StoreError, match="kubeconfig file not found"):
        open_store(f"kube:{tmp_path / 'nope'}")
    (tmp_path / "bad").write_text("::: not yaml [")
    with pytest.raises(StoreError, match="bad: cannot load the kubeconfig"):
        open_store(f"kube:{tmp_path / 'bad'}")
    assert store_url("kube", "/k") == "kube:/k" and store_url("kube:", "/k") == "kube:/k"
    assert store_url("local:x", None) == "local:x"
    with pytest.raises(StoreError, match="--kubeconfig goes with --store kube"):
        store_url("local:x", "/k")
    # `kube` and `kube:` take $KUBECONFIG (there is no in-cluster service account here), and
    # need no state directory.
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    for url in ("kube", "kube:"):
        store = open_store(url)
        assert isinstance(store, KubeStore)
        assert store.client.config.cluster.server.startswith("https://127.0.0.1:")
        store.close()


CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


@pytest.fixture
def without_crds(clean_cluster: ControlPlane) -> Iterator[ControlPlane]:
    """The pool and machineconfig CRDs deleted for one test (created again after it)."""
    from tests.kube.conftest import apply_crds

    cp = clean_cluster
    for name in ("machineconfigpools", "machineconfigs"):
        cp.call("DELETE", f"{CRD}/{name}.machineconfiguration.openshift.io")
    for name in ("machineconfigpools", "machineconfigs"):
        cp.wait_for(f"{name} gone", lambda n=name: cp.call("GET", f"{GROUP_PATH}/{n}")[0] == 404)
    try:
        yield cp
    finally:
        apply_crds(cp)


def test_missing_crds_is_a_clear_error(without_crds: ControlPlane) -> None:
    store = open_store(f"kube:{without_crds.kubeconfig}")
    with pytest.raises(NotFoundError, match=r"list machineconfigpools: the server could not find "
                       r"the requested resource \(is the CustomResourceDefinition machineconfigpools"
                       r"\.machineconfiguration.openshift.io installed\? kubectl apply -k "
                       r"manifests/\)"):
        store.list_objects(MCP)
    with pytest.raises(NotFoundError, match="machineconfigs.machineconfiguration.openshift.io "
                                            "installed"):
        store.get_rendered("rendered-worker-1")
    store.close()  # type: ignore[attr-defined]


def test_is_a_store(kube_store: KubeStore) -> None:
    s: Store = kube_store  # mypy checks the protocol
    assert callable(s.wait_for_change)


# ----- objects


def test_objects_crud(kube_store: KubeStore, control_plane: ControlPlane) -> None:
    cp = control_plane
    apply(cp, mc("00-worker"))
    kube_store.put_rendered(RenderedConfig({**mc("rendered-worker-abc"),
                                            "metadata": {"name": "rendered-worker-abc"}}))
    assert [o["metadata"]["name"] for o in kube_store.list_objects(MC)] == ["00-worker"]
    got = kube_store.get_object(MC, "00-worker")
    assert got["kind"] == MC and got["apiVersion"] == "machineconfiguration.openshift.io/v1"
    assert "resourceVersion" not in got["metadata"] and got["metadata"]["uid"]
    assert got["spec"]["config"]["storage"]["files"][0]["path"] == "/etc/motd"

    generated = mc("99-worker-generated-kubelet", "/etc/kubelet")
    kube_store.put_object(generated)
    mark = cp.audit_mark()
    kube_store.put_object(generated)  # unchanged: no write at all
    assert writes(cp, mark) == []
    changed = mc("99-worker-generated-kubelet", "/etc/kubelet2")
    kube_store.put_object(changed)
    assert writes(cp, mark) == [
        ("PUT", f"{GROUP_PATH}/machineconfigs/99-worker-generated-kubelet")]
    assert kube_store.get_object(MC, "99-worker-generated-kubelet")["spec"] == changed["spec"]
    kube_store.delete_object(MC, "99-worker-generated-kubelet")
    kube_store.delete_object(MC, "99-worker-generated-kubelet")  # absent: no error
    with pytest.raises(NotFoundError, match='machineconfigs.machineconfiguration.openshift.io "99-'):
        kube_store.get_object(MC, "99-worker-generated-kubelet")
    with pytest.raises(StoreError, match="Secret"):
        kube_store.put_object({"kind": "Secret", "metadata": {"name": "x"}})


def test_put_rejected_by_the_schema_names_the_field(kube_store: KubeStore) -> None:
    bad = mc("50-bad")
    bad["spec"]["kernelArguments"] = "not-a-list"
    with pytest.raises(StoreError, match=r"spec.kernelArguments"):
        kube_store.put_object(bad)


def test_put_retries_on_conflict(kube_store: KubeStore, control_plane: ControlPlane,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    kube_store.put_object(mc("99-gen"))
    real = kube_store.client.replace
    attempts = []

    def racing_replace(obj: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(obj["metadata"]["resourceVersion"])
        if len(attempts) == 1:  # someone else writes between our read and our write
            call(control_plane, "PATCH", f"{GROUP_PATH}/machineconfigs/99-gen",
                 {"metadata": {"annotations": {"other": "writer"}}}, "application/merge-patch+json")
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(kube_store.client, "replace", racing_replace)
    kube_store.put_object(mc("99-gen", "/etc/changed"))
    assert len(attempts) == 2 and attempts[0] != attempts[1]
    assert kube_store.get_object(MC, "99-gen")["spec"]["config"]["storage"]["files"][0][
        "path"] == "/etc/changed"


def test_pool_configuration_and_status(kube_store: KubeStore,
                                       control_plane: ControlPlane) -> None:
    cp = control_plane
    apply(cp, pool())
    mark = cp.audit_mark()
    source = [{"apiVersion": "machineconfiguration.openshift.io/v1", "kind": MC, "name": "00-worker"}]
    kube_store.set_pool_configuration("worker", "rendered-worker-1", source)
    status = {"machineCount": 3, "conditions": [{"type": "Updated", "status": "True",
                                                 "lastTransitionTime": "2026-01-01T00:00:00Z",
                                                 "reason": "", "message": "done"}]}
    kube_store.update_status(MCP, "worker", status)
    got = kube_store.get_object(MCP, "worker")
    assert got["spec"]["configuration"] == {"name": "rendered-worker-1", "source": source}
    assert got["status"]["machineCount"] == 3
    assert got["status"]["conditions"][0]["message"] == "done"
    assert ("PUT", f"{GROUP_PATH}/machineconfigpools/worker/status") in writes(cp, mark)
    mark = cp.audit_mark()
    kube_store.update_status(MCP, "worker", got["status"])  # unchanged: no write
    assert writes(cp, mark) == []
    with pytest.raises(NotFoundError):
        kube_store.update_status(MCP, "nope", status)
    with pytest.raises(NotFoundError):
        kube_store.set_pool_configuration("nope", "x", [])


def test_update_status_retries_on_conflict(kube_store: KubeStore, control_plane: ControlPlane,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    apply(control_plane, pool())
    real = kube_store.client.replace
    calls = []

    def racing(obj: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            call(control_plane, "PATCH", f"{GROUP_PATH}/machineconfigpools/worker",
                 {"spec": {"paused": True}}, "application/merge-patch+json")
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(kube_store.client, "replace", racing)
    kube_store.update_status(MCP, "worker", {"machineCount": 1})
    assert len(calls) == 2
    got = kube_store.get_object(MCP, "worker")
    assert got["status"] == {"machineCount": 1} and got["spec"]["paused"] is True


def test_rendered(kube_store: KubeStore) -> None:
    for name in ("rendered-worker-b", "rendered-worker-a"):
        kube_store.put_rendered(RenderedConfig({**mc(name), "metadata": {"name": name}}))
    kube_store.put_object(mc("00-worker"))
    assert kube_store.list_rendered() == ["rendered-worker-a", "rendered-worker-b"]
    assert kube_store.get_rendered("rendered-worker-a").name == "rendered-worker-a"
    kube_store.delete_rendered("rendered-worker-a")
    kube_store.delete_rendered("rendered-worker-a")
    assert kube_store.list_rendered() == ["rendered-worker-b"]
    with pytest.raises(NotFoundError):
        kube_store.get_rendered("rendered-worker-a")


# ----- nodes


def test_nodes(kube_store: KubeStore, control_plane: ControlPlane) -> None:
    cp = control_plane
    rec = kube_store.register_node("n2", {"node-role.kubernetes.io/worker": ""})
    assert rec.ready and not rec.unschedulable and rec.creation_timestamp.endswith("Z")
    kube_store.register_node("n1", {})
    rec = kube_store.register_node("n2", {"zone": "a"})  # present: labels merged
    assert rec.labels == {"node-role.kubernetes.io/worker": "", "zone": "a"}
    assert [n.name for n in kube_store.list_nodes()] == ["n1", "n2"]

    first = kube_store.patch_node_annotations("n2", {CURRENT_CONFIG_ANNOTATION: "rendered-a",
                                                     "x": "1"})
    second = kube_store.patch_node_annotations("n2", {"x": None})
    assert second.annotations == {CURRENT_CONFIG_ANNOTATION: "rendered-a"}
    assert second.resource_version > first.resource_version
    _, raw = call(cp, "GET", "/api/v1/nodes/n2")
    assert raw["metadata"]["annotations"] == {CURRENT_CONFIG_ANNOTATION: "rendered-a"}

    assert kube_store.set_node_labels("n2", {"zone": None, "b": "c"}).labels == {
        "node-role.kubernetes.io/worker": "", "b": "c"}
    assert kube_store.set_unschedulable("n2", True).unschedulable
    _, raw = call(cp, "GET", "/api/v1/nodes/n2")
    assert raw["spec"]["unschedulable"] is True
    assert not kube_store.set_unschedulable("n2", False).unschedulable
    assert not kube_store.set_node_ready("n2", False).ready
    _, raw = call(cp, "GET", "/api/v1/nodes/n2")
    assert [c["status"] for c in raw["status"]["conditions"] if c["type"] == "Ready"] == ["False"]
    assert kube_store.set_node_ready("n2", True).ready
    with pytest.raises(NotFoundError, match='nodes "nope" not found'):
        kube_store.get_node("nope")
    with pytest.raises(NotFoundError):
        kube_store.patch_node_annotations("nope", {"a": "b"})
    with pytest.raises(StoreError, match="invalid annotation change"):
        kube_store.patch_node_annotations("n2", {"": "x"})


def test_node_taint_keeps_the_other_taints(kube_store: KubeStore,
                                          control_plane: ControlPlane) -> None:
    cp = control_plane
    kube_store.register_node("n1", {})
    gpu = {"key": "example.com/gpu", "value": "a100", "effect": "NoSchedule"}
    status, _ = call(cp, "PATCH", "/api/v1/nodes/n1", {"spec": {"taints": [gpu]}},
                     "application/merge-patch+json")
    assert status == 200
    rec = kube_store.set_node_taint("n1", "UpdateInProgress", "PreferNoSchedule", True)
    assert rec.has_taint("UpdateInProgress", "PreferNoSchedule")
    _, raw = call(cp, "GET", "/api/v1/nodes/n1")
    ours = {"key": "UpdateInProgress", "effect": "PreferNoSchedule"}
    # kube-controller-manager may add node.kubernetes.io/* taints of its own meanwhile
    assert [t for t in raw["spec"]["taints"] if "node.kubernetes.io" not in t["key"]] == [gpu, ours]
    mark = cp.audit_mark()
    kube_store.set_node_taint("n1", "UpdateInProgress", "PreferNoSchedule", True)
    assert writes(cp, mark) == []  # already there: nothing written
    rec = kube_store.set_node_taint("n1", "UpdateInProgress", "PreferNoSchedule", False)
    assert not rec.has_taint("UpdateInProgress", "PreferNoSchedule")
    _, raw = call(cp, "GET", "/api/v1/nodes/n1")
    assert [t for t in raw["spec"]["taints"] if "node.kubernetes.io" not in t["key"]] == [gpu]


def test_node_ready_is_mcos_test() -> None:
    assert node_ready([])
    assert node_ready([{"type": "Ready", "status": "True"},
                       {"type": "DiskPressure", "status": "False"}])
    assert not node_ready([{"type": "Ready", "status": "Unknown"}])
    assert not node_ready([{"type": "Ready", "status": "True"},
                           {"type": "DiskPressure", "status": "True"}])
    assert not node_ready([{"type": "NetworkUnavailable", "status": "Unknown"}])


# ----- events


def test_events_are_core_v1_events_with_counts(kube_store: KubeStore,
                                                control_plane: ControlPlane) -> None:
    cp = control_plane
    kube_store.record_event("Node", "n1", "SetDesiredConfig", "Targeted node n1 to X")
    kube_store.record_event(MCP, "worker", "Completed", "done")
    kube_store.record_event("Node", "n1", "SetDesiredConfig", "Targeted node n1 to X")
    # The kubelet's events in the same namespace are not ours.
    call(cp, "POST", "/api/v1/namespaces/default/events",
         {"metadata": {"name": "n1.kubelet"}, "involvedObject": {"kind": "Node", "name": "n1"},
          "reason": "NodeReady", "message": "ready", "type": "Normal",
          "source": {"component": "kubelet"}})
    _, raw = call(cp, "GET", "/api/v1/namespaces/default/events")
    ours = [e for e in raw["items"] if e["source"]["component"] != "kubelet"]
    assert len(ours) == 2
    node_event = next(e for e in ours if e["involvedObject"]["kind"] == "Node")
    assert node_event["involvedObject"] == {"kind": "Node", "name": "n1", "apiVersion": "v1"}
    assert node_event["count"] == 2 and node_event["type"] == "Normal"
    assert node_event["source"]["component"] == "machine-config-controller"
    events = kube_store.list_events()
    assert [(e.kind, e.reason, e.count) for e in events] == [
        (MCP, "Completed", 1), ("Node", "SetDesiredConfig", 2)]  # the repeat moved it last
    assert [e.reason for e in kube_store.list_events("Node", "n1")] == ["SetDesiredConfig"]
    assert kube_store.list_events(MCP, "nope") == []
    assert kube_store.list_events(since_seq=events[0].seq) == events[1:]


# ----- the daemon's store


def test_daemon_store_touches_only_its_node(kube_store: KubeStore, kubeconfig: Path) -> None:
    for name in ("n1", "n2"):
        kube_store.register_node(name, {})
    kube_store.put_rendered(RenderedConfig({**mc("rendered-worker-a"),
                                            "metadata": {"name": "rendered-worker-a"}}))
    daemon = open_store(f"kube:{kubeconfig}", node="n1")
    try:
        assert daemon.get_node("n1").name == "n1"
        patched = daemon.patch_node_annotations("n1", {CURRENT_CONFIG_ANNOTATION: "x"})
        assert patched.annotations
        assert daemon.get_rendered("rendered-worker-a").name == "rendered-worker-a"
        daemon.record_event("Node", "n1", "Reboot", "rebooting")
        for attempt in (lambda: daemon.get_node("n2"),
                        lambda: daemon.patch_node_annotations("n2", {"a": "b"}),
                        lambda: daemon.list_nodes(), lambda: daemon.list_objects(MCP),
                        lambda: daemon.set_unschedulable("n1", True),
                        lambda: daemon.record_event("Node", "n2", "X", "y"),
                        lambda: daemon.record_event(MCP, "worker", "X", "y")):
            with pytest.raises(ForbiddenError):
                attempt()
        # It watches its own node only.
        assert [w.target.fields for w in daemon.watches()] == [{"metadata.name": "n1"}]
        watch = daemon.watches()[0]
        eventually(lambda: int(watch.resource_version or 0) >= patched.resource_version)
        rev = daemon.revision()
        kube_store.patch_node_annotations("n2", {"a": "b"})
        kube_store.put_object(pool())
        assert daemon.wait_for_change(rev, 0.5) == rev
        kube_store.patch_node_annotations("n1", {"a": "b"})
        assert daemon.wait_for_change(rev, 10) > rev
        assert kube_store.list_events("Node", "n1")[0].reason == "Reboot"
    finally:
        daemon.close()  # type: ignore[attr-defined]


# ----- the pull secret


def test_pull_secret_is_the_one_the_controller_config_names(kube_store: KubeStore,
                                                            control_plane: ControlPlane) -> None:
    cp = control_plane
    apply(cp, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "openshift-config"}})
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
              "metadata": {"name": "pull-secret", "namespace": "openshift-config"},
              "data": {".dockerconfigjson": "e30="}}
    apply(cp, secret)
    apply(cp, {**secret, "metadata": {"name": "other", "namespace": "openshift-config"}})
    assert kube_store.list_objects("Secret") == []  # no ControllerConfig names one yet
    rev = kube_store.revision()
    cc = controller_config()
    cc["spec"]["pullSecret"] = {"namespace": "openshift-config", "name": "pull-secret"}
    apply(cp, cc)
    got = kube_store.list_objects("Secret")
    assert [(s["metadata"]["name"], s["type"]) for s in got] == [
        ("pull-secret", "kubernetes.io/dockerconfigjson")]
    assert kube_store.get_object("Secret", "pull-secret")["data"] == {".dockerconfigjson": "e30="}
    # The store now watches that secret (and only it): a change to it is a change.
    eventually(lambda: any(w.target.name == "secret openshift-config/pull-secret"
                           for w in kube_store.watches()))
    rev = kube_store.revision()
    apply(cp, {**secret, "metadata": {"name": "other", "namespace": "openshift-config"},
                    "data": {".dockerconfigjson": "e30K"}})
    assert kube_store.wait_for_change(rev, 0.5) == rev
    apply(cp, {**secret, "data": {".dockerconfigjson": "eyJhIjoxfQ=="}})
    assert kube_store.wait_for_change(rev, 10) > rev


# ----- watches


def read_everything(store: KubeStore) -> None:
    """What a controller pass reads."""
    for kind in ("MachineConfig", MCP, "ControllerConfig", "KubeletConfig",
                 "ContainerRuntimeConfig", "Secret"):
        store.list_objects(kind)
    store.list_nodes()


def test_every_kind_read_is_watched(kube_store: KubeStore, control_plane: ControlPlane) -> None:
    cp = control_plane
    read_everything(kube_store)
    rev = kube_store.revision()
    for obj in (pool(), mc("00-worker"),
                {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "KubeletConfig",
                 "metadata": {"name": "k"}, "spec": {}},
                {"apiVersion": "machineconfiguration.openshift.io/v1",
                 "kind": "ContainerRuntimeConfig", "metadata": {"name": "c"},
                 "spec": {"containerRuntimeConfig": {}}},
                controller_config()):
        apply(cp, obj)
        rev = kube_store.wait_for_change(rev, 10)
        eventually(lambda: kube_store.revision() >= rev)
    before = kube_store.revision()
    call(cp, "POST", "/api/v1/nodes", {"metadata": {"name": "n9"}})
    assert kube_store.wait_for_change(before, 10) > before
    # Events are not watched: recording one wakes nobody (a controller must not wake itself).
    # (The ControllerConfig names a pull secret: once that secret is watched, all is quiet.)
    eventually(lambda: any(w.target.name == "secret openshift-config/pull-secret"
                           for w in kube_store.watches()))
    # A new watch delivers what it lists a moment after it is registered: wait for a quiet second.
    quiet = kube_store.revision()
    for _ in range(30):
        settled = kube_store.wait_for_change(quiet, 1.0)
        if settled == quiet:
            break
        quiet = settled
    kube_store.record_event("Node", "n9", "X", "y")
    assert kube_store.wait_for_change(quiet, 0.3) == quiet


def test_only_kinds_read_are_watched(kube_store: KubeStore, control_plane: ControlPlane) -> None:
    """The server reads pools, the ControllerConfig and rendered configs, never nodes: it never
    watches them (and needs no right to)."""
    cp = control_plane
    mark = cp.audit_mark()
    kube_store.list_objects(MCP)
    with pytest.raises(NotFoundError):
        kube_store.get_object("ControllerConfig", "machine-config-controller")
    with pytest.raises(NotFoundError):
        kube_store.get_rendered("rendered-worker-1")
    assert sorted(w.target.name for w in kube_store.watches()) == [
        "controllerconfigs", "machineconfigpools", "machineconfigs"]
    rev = kube_store.revision()
    call(cp, "POST", "/api/v1/nodes", {"metadata": {"name": "n9"}})
    assert kube_store.wait_for_change(rev, 0.3) == rev
    cp.audit_mark()
    assert not any("/nodes" in r.path for r in cp.requests(mark, user="admin")
                   if r.method == "GET")
    apply(cp, pool())
    assert kube_store.wait_for_change(rev, 10) > rev


def test_wait_for_change_wakes_a_blocked_waiter(kube_store: KubeStore,
                                                control_plane: ControlPlane) -> None:
    cp = control_plane
    read_everything(kube_store)
    rev = kube_store.revision()
    woke: list[int] = []
    waiter = threading.Thread(target=lambda: woke.append(kube_store.wait_for_change(rev, 30)))
    waiter.start()
    apply(cp, pool())
    waiter.join(30)
    assert woke and woke[0] > rev


def test_bookmarks_move_the_resume_point(kube_store: KubeStore,
                                        control_plane: ControlPlane) -> None:
    """kube-apiserver's watch cache sends a BOOKMARK shortly before a watch request's
    timeoutSeconds: it moves the resume point (past writes of other kinds) and wakes nobody."""
    cp = control_plane
    mark = cp.audit_mark()
    store = KubeStore(kube_store.client, watch_seconds=4)
    try:
        store.list_objects(MCP)
        pools = store.watches()[0]
        listed = int(pools.resource_version)
        rev = store.revision()
        written = int(apply(cp, mc("00-worker"))["metadata"]["resourceVersion"])
        # another kind: the pools watch sees no event, only bookmarks; a consistent list of
        # pools makes the pools' watch cache catch up with etcd's revision (a progress
        # notification), and the next bookmark carries it
        call(cp, "GET", f"{GROUP_PATH}/machineconfigpools")
        eventually(lambda: pools.bookmarks > 0 and int(pools.resource_version) >= written, 20)
        assert written > listed
        assert store.revision() == rev
        cp.audit_mark()
        assert any("allowWatchBookmarks=true" in r.uri
                   for r in cp.requests(mark, user="admin") if r.verb == "watch"
                   and r.path == f"{GROUP_PATH}/machineconfigpools")
    finally:
        for w in store.watches():
            w.stop()


def test_expired_watch_lists_again_and_sees_what_it_missed(
        control_plane: ControlPlane, clean_cluster: ControlPlane,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The nodes watch's connection drops; while it waits to reconnect a node is created and etcd
    is compacted past the watch's resume point: kube-apiserver answers the resumed watch 410
    Expired, the watch lists again, and the change it never saw as an event still bumps the
    revision."""
    cp = control_plane
    monkeypatch.setattr(kube_watch, "BACKOFF_START", 3.0)  # a wide window to act in
    store = open_store(f"kube:{cp.kubeconfig}")
    try:
        assert isinstance(store, KubeStore)
        read_everything(store)
        nodes = next(w for w in store.watches() if w.target.name == "nodes")
        eventually(lambda: nodes._response is not None)
        rev = store.revision()
        # the connection drops (the loop retries in 3 s)
        nodes._response.extensions["network_stream"].get_extra_info("socket").shutdown(
            socket.SHUT_RDWR)
        call(cp, "POST", "/api/v1/nodes", {"metadata": {"name": "missed"}})
        # one more write, so that the compaction goes past the revision the watch resumes at
        call(cp, "POST", "/api/v1/nodes", {"metadata": {"name": "also-missed"}})
        cp.compact_etcd()
        assert store.wait_for_change(rev, 20) > rev
        eventually(lambda: nodes.lists == 2, 20)
        assert "/missed" in nodes.seen
        # And it watches again from the list's resourceVersion.
        rev = store.revision()
        store.patch_node_annotations("missed", {"a": "b"})
        assert store.wait_for_change(rev, 10) > rev
    finally:
        store.close()  # type: ignore[attr-defined]


def test_watches_outlive_an_api_server_restart(kube_store: KubeStore,
                                               control_plane: ControlPlane) -> None:
    """kube-apiserver stops (every watch connection drops) and starts again: the watches resume
    from where they were and see the next change; the store reads and writes again."""
    read_everything(kube_store)
    kube_store.register_node("n1", {})
    control_plane.restart_apiserver()
    rev = kube_store.revision()
    call(control_plane, "POST", "/api/v1/nodes", {"metadata": {"name": "n2"}})
    assert kube_store.wait_for_change(rev, 40) > rev
    assert [n.name for n in kube_store.list_nodes()] == ["n1", "n2"]
    assert all(not w.error for w in kube_store.watches()) or kube_store.wait_for_change(
        kube_store.revision(), 0.1) >= 0


def test_close_stops_the_watches(clean_cluster: ControlPlane) -> None:
    store = open_store(f"kube:{clean_cluster.kubeconfig}")
    try:
        read_everything(store)  # type: ignore[arg-type]
        threads = [w._thread for w in store.watches()]  # type: ignore[attr-defined]
        assert len(threads) == 6 and all(t is not None and t.is_alive() for t in threads)
    finally:
        store.close()  # type: ignore[attr-defined]
    eventually(lambda: not any(t is not None and t.is_alive() for t in threads))


def test_periodic_resync_lists_again(kube_store: KubeStore) -> None:
    """A watch request that ends after the resync period is followed by a full list; a list
    that finds what the watch already saw changes nothing."""
    store = KubeStore(kube_store.client, watch_seconds=1)
    try:
        store.list_nodes()
        nodes = store.watches()[0]
        nodes.resync_seconds = 0
        rev = store.revision()
        eventually(lambda: nodes.lists >= 2)
        assert store.revision() == rev
    finally:
        for w in store.watches():
            w.stop()


def test_errors_say_whether_to_retry() -> None:
    """No answer, 429 and 5xx are retried as they are; a conflict too (after a fresh read);
    a refusal, a missing object or a bug are not."""
    from lightkube.core.exceptions import ApiError

    class Status:
        def __init__(self, code: int) -> None:
            self.code, self.message = code, f"HTTP {code}"

    def api_error(code: int) -> Exception:
        e = ApiError.__new__(ApiError)
        e.status = Status(code)  # type: ignore[assignment]
        return e

    got = {code: translate(api_error(code), "get x") for code in (404, 409, 403, 422, 429, 503)}
    assert {c: e.temporary for c, e in got.items()} == {
        404: False, 409: True, 403: False, 422: False, 429: True, 503: True}
    assert translate(ConnectionRefusedError("refused"), "get x").temporary
    assert not translate(ValueError("bug"), "get x").temporary
    assert str(got[503]) == "kube: get x: HTTP 503"
