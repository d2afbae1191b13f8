"""The local store: objects from the input directory, overlays, rendered configs, nodes, events."""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from machineconfig.constants import STORE_KUBE, STORE_LOCAL
from machineconfig.errors import InputError
from machineconfig.store import (
    NotFoundError, Store, StoreError, open_store, store_scheme,
)
from machineconfig.rendered_config import RenderedConfig
from machineconfig.store.local import LocalStore
from tests.support.poolyaml import pool_yaml, pools_yaml

POOLS = pools_yaml(pool_yaml("worker", role="worker"), pool_yaml("master", max_unavailable=1))


MC = """\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: {name}
  labels:
    machineconfiguration.openshift.io/role: worker
spec:
  config:
    ignition:
      version: 3.2.0
"""

SECRET = """\
apiVersion: v1
kind: Secret
metadata:
  name: pull-secret
data:
  .dockerconfigjson: e30=
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: ignored
"""


def write(path: Path, text: str) -> None:
    """Write and make sure the stat signature changes even on coarse-timestamp filesystems."""
    old = path.stat().st_mtime_ns if path.exists() else 0
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a new inode, as editors and `kubectl`-like tools do
    if path.stat().st_mtime_ns == old:
        os.utime(path, ns=(old + 1000, old + 1000))


@pytest.fixture()
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    inputs = tmp_path / "in"
    inputs.mkdir()
    write(inputs / "pools.yaml", POOLS)
    write(inputs / "mc.yaml", MC.format(name="50-a"))
    write(inputs / "secret.yaml", SECRET)
    return inputs, tmp_path / "state"


@pytest.fixture()
def store(dirs: tuple[Path, Path]) -> LocalStore:
    s = open_store(f"local:{dirs[0]}", str(dirs[1]))
    assert isinstance(s, LocalStore)
    return s


def names(objs: list[dict[str, object]]) -> list[str]:
    return [o["metadata"]["name"] for o in objs]  # type: ignore[index]


# ----- open_store

def test_open_store_needs_state_dir(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(StoreError, match="state directory"):
        open_store(f"local:{dirs[0]}")


@pytest.mark.parametrize("url", ["kubernetes", "nfs:/x", "local:"])
def test_open_store_bad_urls(url: str, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="store URL"):
        open_store(url, str(tmp_path))


def test_open_store_missing_input_dir(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="input directory does not exist"):
        open_store(f"local:{tmp_path / 'nope'}", str(tmp_path / "state"))


def test_is_a_store(store: LocalStore) -> None:
    s: Store = store  # mypy checks the protocol; this checks it at runtime too
    assert callable(s.wait_for_change)
    assert (Path(store.state_dir) / "state.db").exists()


# ----- input objects

def test_lists_input_objects_by_kind(store: LocalStore) -> None:
    assert names(store.list_objects("MachineConfigPool")) == ["master", "worker"]
    assert names(store.list_objects("MachineConfig")) == ["50-a"]
    assert names(store.list_objects("Secret")) == ["pull-secret"]
    assert store.list_objects("KubeletConfig") == []
    mc = store.get_object("MachineConfig", "50-a")
    assert mc["spec"]["config"]["ignition"]["version"] == "3.2.0"
    with pytest.raises(NotFoundError):
        store.get_object("MachineConfig", "nope")


def test_returned_objects_are_copies(store: LocalStore) -> None:
    store.get_object("MachineConfig", "50-a")["spec"]["config"] = None
    assert store.get_object("MachineConfig", "50-a")["spec"]["config"] is not None


def test_list_kind_and_json_inputs(dirs: tuple[Path, Path], store: LocalStore) -> None:
    write(dirs[0] / "list.json", '{"kind": "List", "items": [' + ",".join(
        '{"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig", '
        f'"metadata": {{"name": "{n}"}}, "spec": {{}}}}' for n in ("60-b", "70-c")) + "]}")
    store.revision()
    assert names(store.list_objects("MachineConfig")) == ["50-a", "60-b", "70-c"]


def test_input_change_bumps_revision(dirs: tuple[Path, Path], store: LocalStore) -> None:
    rev = store.revision()
    assert store.revision() == rev  # nothing changed, nothing bumped
    write(dirs[0] / "more.yaml", MC.format(name="60-new"))
    rev2 = store.revision()
    assert rev2 > rev
    assert "60-new" in names(store.list_objects("MachineConfig"))
    write(dirs[0] / "more.yaml", MC.format(name="61-renamed"))
    rev3 = store.revision()
    assert rev3 > rev2
    assert names(store.list_objects("MachineConfig")) == ["50-a", "61-renamed"]
    (dirs[0] / "more.yaml").unlink()
    assert store.revision() > rev3
    assert names(store.list_objects("MachineConfig")) == ["50-a"]


def test_yaml_error_is_reported_and_other_files_served(dirs: tuple[Path, Path],
                                                       store: LocalStore) -> None:
    rev = store.revision()
    write(dirs[0] / "mc.yaml", "kind: MachineConfig\nmetadata:\n  name: [\n")
    assert store.revision() > rev
    errors = store.input_errors()
    assert len(errors) == 1
    assert errors[0].startswith(f"{dirs[0] / 'mc.yaml'}:4: invalid YAML")
    # The broken file's last good objects are still served, and so are the other files.
    assert names(store.list_objects("MachineConfig")) == ["50-a"]
    assert names(store.list_objects("MachineConfigPool")) == ["master", "worker"]
    write(dirs[0] / "mc.yaml", MC.format(name="50-fixed"))
    store.revision()
    assert store.input_errors() == []
    assert names(store.list_objects("MachineConfig")) == ["50-fixed"]


def test_schema_error_names_file_line_and_field(dirs: tuple[Path, Path],
                                                store: LocalStore) -> None:
    write(dirs[0] / "bad.yaml", MC.format(name="60-bad") + "  fips: \"true\"\n")
    store.revision()
    (error,) = store.input_errors()
    assert error.startswith(f"{dirs[0] / 'bad.yaml'}:11: $.spec.fips: MachineConfig:")
    assert "60-bad" not in names(store.list_objects("MachineConfig"))


def test_broken_file_from_the_start(dirs: tuple[Path, Path]) -> None:
    write(dirs[0] / "zz.yaml", "kind: MachineConfigPool\nmetadata: {}\n")
    s = LocalStore(str(dirs[0]), str(dirs[1]))
    (error,) = s.input_errors()
    assert "zz.yaml:2: $.metadata.name: MachineConfigPool: metadata.name is required" in error
    assert names(s.list_objects("MachineConfigPool")) == ["master", "worker"]


def test_duplicate_names_first_file_wins(dirs: tuple[Path, Path], store: LocalStore) -> None:
    write(dirs[0] / "zz.yaml", MC.format(name="50-a").replace("3.2.0", "3.4.0"))
    store.revision()
    (error,) = store.input_errors()
    assert "MachineConfig '50-a' is already defined in" in error
    assert store.get_object("MachineConfig", "50-a")["spec"]["config"]["ignition"][
        "version"] == "3.2.0"


def test_hidden_and_other_files_ignored(dirs: tuple[Path, Path], store: LocalStore) -> None:
    rev = store.revision()
    write(dirs[0] / ".hidden.yaml", MC.format(name="60-hidden"))
    write(dirs[0] / "notes.txt", "not yaml: [")
    assert store.revision() == rev
    assert store.input_errors() == []


# ----- controller-owned objects and overlays

def test_put_get_delete_owned_object(store: LocalStore) -> None:
    rev = store.revision()
    gen = {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
           "metadata": {"name": "99-worker-generated-kubelet"}, "spec": {}}
    store.put_object(gen)
    rev2 = store.revision()
    assert rev2 > rev
    store.put_object(gen)
    assert store.revision() == rev2  # unchanged content: no wake-up
    assert names(store.list_objects("MachineConfig")) == ["50-a", "99-worker-generated-kubelet"]
    assert store.get_object("MachineConfig", "99-worker-generated-kubelet") == gen
    store.delete_object("MachineConfig", "99-worker-generated-kubelet")
    assert store.revision() > rev2
    with pytest.raises(NotFoundError):
        store.get_object("MachineConfig", "99-worker-generated-kubelet")
    store.delete_object("MachineConfig", "99-worker-generated-kubelet")  # absent: no-op
    store.update_status("MachineConfig", "50-a", {"x": 1})
    store.delete_object("MachineConfig", "50-a")  # an input object: the user's, it stays
    assert store.get_object("MachineConfig", "50-a")["status"] == {"x": 1}
    with pytest.raises(StoreError):
        store.put_object({"kind": "Pod", "metadata": {"name": "x"}})
    with pytest.raises(StoreError):
        store.put_object({"kind": "MachineConfig", "metadata": {}})


def test_input_shadows_owned_object(store: LocalStore) -> None:
    store.put_object({"kind": "MachineConfig", "metadata": {"name": "50-a"}, "spec": {"x": 1}})
    assert "x" not in store.get_object("MachineConfig", "50-a")["spec"]
    assert names(store.list_objects("MachineConfig")) == ["50-a"]


def test_overlay_merge(dirs: tuple[Path, Path], store: LocalStore) -> None:
    rev = store.revision()
    source = [{"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
               "name": "50-a"}]
    store.set_pool_configuration("worker", "rendered-worker-abc", source)
    store.update_status("MachineConfigPool", "worker", {"machineCount": 3})
    assert store.revision() == rev + 2
    pool = store.get_object("MachineConfigPool", "worker")
    assert pool["spec"]["configuration"] == {"name": "rendered-worker-abc", "source": source}
    assert pool["spec"]["machineConfigSelector"]  # the input spec is kept
    assert pool["status"] == {"machineCount": 3}
    listed = {p["metadata"]["name"]: p for p in store.list_objects("MachineConfigPool")}
    assert listed["worker"] == pool and "status" not in listed["master"]
    # The overlay survives an edit of the input file.
    write(dirs[0] / "pools.yaml", POOLS.replace("maxUnavailable: 1", "maxUnavailable: 2"))
    store.revision()
    assert store.get_object("MachineConfigPool", "worker")["status"] == {"machineCount": 3}
    assert store.get_object("MachineConfigPool", "master")["spec"]["maxUnavailable"] == 2
    # Unchanged writes do not bump; status replaces, it does not merge.
    rev = store.revision()
    store.update_status("MachineConfigPool", "worker", {"machineCount": 3})
    assert store.revision() == rev
    store.update_status("MachineConfigPool", "worker", {"updatedMachineCount": 1})
    assert store.get_object("MachineConfigPool", "worker")["status"] == {
        "updatedMachineCount": 1}
    with pytest.raises(NotFoundError):
        store.update_status("MachineConfigPool", "nope", {})
    with pytest.raises(NotFoundError):
        store.set_pool_configuration("nope", "rendered-nope-1", [])


def test_status_of_owned_object(store: LocalStore) -> None:
    store.put_object({"kind": "KubeletConfig", "metadata": {"name": "k"}, "spec": {}})
    store.update_status("KubeletConfig", "k", {"conditions": [{"type": "Success"}]})
    store.put_object({"kind": "KubeletConfig", "metadata": {"name": "k"}, "spec": {"a": 1}})
    assert store.get_object("KubeletConfig", "k")["status"] == {
        "conditions": [{"type": "Success"}]}


# ----- rendered configs

def rendered(name: str, n: int = 0) -> RenderedConfig:
    return RenderedConfig({"apiVersion": "machineconfiguration.openshift.io/v1",
                           "kind": "MachineConfig", "metadata": {"name": name},
                           "spec": {"config": {"n": n}}})


def test_rendered_crud(store: LocalStore) -> None:
    rev = store.revision()
    store.put_rendered(rendered("rendered-worker-1"))
    store.put_rendered(rendered("rendered-worker-2"))
    assert store.revision() == rev + 2
    store.put_rendered(rendered("rendered-worker-2"))
    assert store.revision() == rev + 2
    assert store.list_rendered() == ["rendered-worker-1", "rendered-worker-2"]
    assert store.get_rendered("rendered-worker-1") == rendered("rendered-worker-1")
    assert (Path(store.state_dir) / "rendered" / "rendered-worker-1.json").is_file()
    store.delete_rendered("rendered-worker-1")
    assert store.revision() == rev + 3
    store.delete_rendered("rendered-worker-1")
    assert store.list_rendered() == ["rendered-worker-2"]
    with pytest.raises(NotFoundError):
        store.get_rendered("rendered-worker-1")
    for bad in ("../x", ".hidden"):
        with pytest.raises(StoreError):
            store.put_rendered(rendered(bad))
    with pytest.raises(InputError):
        rendered("")  # not even a rendered config
    assert not [n for n in os.listdir(Path(store.state_dir) / "rendered") if n.startswith(".")]


def test_corrupt_rendered_file_is_a_store_error(store: LocalStore) -> None:
    (Path(store.state_dir) / "rendered" / "rendered-x.json").write_text("{")
    with pytest.raises(StoreError, match="corrupt"):
        store.get_rendered("rendered-x")


# ----- nodes

def test_node_records(store: LocalStore) -> None:
    with pytest.raises(NotFoundError):
        store.get_node("n1")
    rec = store.register_node("n1", {"node-role.kubernetes.io/worker": ""})
    assert rec.labels == {"node-role.kubernetes.io/worker": ""}
    assert rec.creation_timestamp.endswith("Z") and rec.ready and not rec.unschedulable
    again = store.register_node("n1", {"zone": "a"})
    assert again.labels == {"node-role.kubernetes.io/worker": "", "zone": "a"}
    assert again.creation_timestamp == rec.creation_timestamp
    assert again.resource_version > rec.resource_version
    rec = store.patch_node_annotations("n1", {"a": "1", "b": "2"})
    rec = store.patch_node_annotations("n1", {"a": None, "c": "3"})
    assert rec.annotations == {"b": "2", "c": "3"}
    rev = store.revision()
    same = store.patch_node_annotations("n1", {"b": "2", "zz": None})
    assert same.resource_version == rec.resource_version and store.revision() == rev
    rec = store.set_node_labels("n1", {"zone": None, "x": "y"})
    assert rec.labels == {"node-role.kubernetes.io/worker": "", "x": "y"}
    assert store.set_unschedulable("n1", True).unschedulable
    assert not store.set_node_ready("n1", False).ready
    assert store.get_node("n1") == store.set_node_ready("n1", False)
    store.register_node("a0", {})
    assert [n.name for n in store.list_nodes()] == ["a0", "n1"]
    calls: list[Callable[[], object]] = [
        lambda: store.patch_node_annotations("nope", {}),
        lambda: store.set_node_labels("nope", {}),
        lambda: store.set_unschedulable("nope", True),
        lambda: store.set_node_ready("nope", True)]
    for call in calls:
        with pytest.raises(NotFoundError):
            call()
    with pytest.raises(StoreError):
        store.patch_node_annotations("n1", {"a": 1})  # type: ignore[dict-item]


# ----- events

def test_events(store: LocalStore) -> None:
    rev = store.revision()
    store.record_event("Node", "n1", "Drain", "Drain node n1")
    store.record_event("MachineConfigPool", "worker", "RenderDegraded", "boom", "Warning")
    store.record_event("Node", "n2", "Reboot", "Node will reboot")
    assert store.revision() == rev  # events do not wake the controllers
    events = store.list_events()
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert [e.reason for e in events] == ["Drain", "RenderDegraded", "Reboot"]
    assert events[1].type == "Warning" and events[1].time.endswith("Z")
    assert [e.name for e in store.list_events(kind="Node")] == ["n1", "n2"]
    assert [e.reason for e in store.list_events(kind="Node", name="n2")] == ["Reboot"]
    assert store.list_events(since_seq=events[1].seq) == [events[2]]


# ----- persistence, several stores, waiting

def test_state_survives_reopen(dirs: tuple[Path, Path], store: LocalStore) -> None:
    store.register_node("n1", {})
    store.patch_node_annotations("n1", {"a": "b"})
    store.update_status("MachineConfigPool", "worker", {"machineCount": 1})
    store.put_rendered(rendered("rendered-worker-1"))
    store.record_event("Node", "n1", "X", "y")
    rev = store.revision()
    store.close()
    again = LocalStore(str(dirs[0]), str(dirs[1]))
    assert again.revision() == rev  # same inputs: no bump on reopen
    assert again.get_node("n1").annotations == {"a": "b"}
    assert again.get_object("MachineConfigPool", "worker")["status"] == {"machineCount": 1}
    assert again.list_rendered() == ["rendered-worker-1"]
    assert len(again.list_events()) == 1


def test_two_stores_share_state_and_bump_once_per_input_change(
        dirs: tuple[Path, Path], store: LocalStore) -> None:
    # Named differently (relative path): still one bump per change.
    other = LocalStore(os.path.relpath(dirs[0]), str(dirs[1]))
    rev = store.revision()
    assert other.revision() == rev
    write(dirs[0] / "more.yaml", MC.format(name="60-new"))
    rev2 = store.revision()
    assert other.revision() == rev2 == rev + 1
    other.register_node("n1", {})
    assert store.get_node("n1").name == "n1"
    assert store.revision() == rev2 + 1


def test_wait_for_change(dirs: tuple[Path, Path], store: LocalStore) -> None:
    rev = store.revision()
    assert store.wait_for_change(rev - 1, 5) == rev  # already newer: at once
    start = time.monotonic()
    assert store.wait_for_change(rev, 0.3) == rev
    assert 0.25 < time.monotonic() - start < 5
    assert store.wait_for_change(rev, 0) == rev
    start = time.monotonic()
    assert store.wait_for_change(rev + 100, 5) == rev  # a reset state dir: answer at once
    assert time.monotonic() - start < 3

    def later(fn: Callable[[], object]) -> threading.Timer:
        t = threading.Timer(0.2, fn)
        t.start()
        return t

    # A write in this process wakes the waiter at once.
    t = later(lambda: store.register_node("n1", {}))
    start = time.monotonic()
    rev2 = store.wait_for_change(rev, 10)
    t.join()
    assert rev2 > rev and time.monotonic() - start < 3
    # A write by another process (another store instance) is seen within the poll interval.
    other = LocalStore(str(dirs[0]), str(dirs[1]))
    t = later(lambda: other.patch_node_annotations("n1", {"a": "b"}))
    start = time.monotonic()
    rev3 = store.wait_for_change(rev2, 10)
    t.join()
    assert rev3 > rev2 and time.monotonic() - start < 5
    # So is an input file change.
    t = later(lambda: write(dirs[0] / "more.yaml", MC.format(name="60-new")))
    start = time.monotonic()
    rev4 = store.wait_for_change(rev3, 10)
    t.join()
    assert rev4 > rev3 and time.monotonic() - start < 5
    assert "60-new" in names(store.list_objects("MachineConfig"))


def test_many_waiters(store: LocalStore) -> None:
    rev = store.revision()
    results: list[int] = []

    def wait() -> None:
        results.append(store.wait_for_change(rev, 10))

    threads = [threading.Thread(target=wait) for _ in range(50)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    store.register_node("n1", {})
    for t in threads:
        t.join(5)
    assert results == [rev + 1] * 50


def test_state_dir_inside_input_dir_is_not_input(dirs: tuple[Path, Path]) -> None:
    s = LocalStore(str(dirs[0]), str(dirs[0] / "state"))
    s.put_rendered(rendered("rendered-worker-1"))
    rev = s.revision()
    assert s.revision() == rev
    assert names(s.list_objects("MachineConfig")) == ["50-a"]


def test_stale_temporary_rendered_files_are_removed(dirs: tuple[Path, Path]) -> None:
    rdir = dirs[1] / "rendered"
    rdir.mkdir(parents=True)
    old, new = rdir / ".tmp-old.json", rdir / ".tmp-new.json"
    old.write_text("{")
    new.write_text("{")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    s = LocalStore(str(dirs[0]), str(dirs[1]))
    assert not old.exists() and new.exists()  # a live writer's file is left alone
    assert s.list_rendered() == []


def test_vanished_input_dir_keeps_last_objects(dirs: tuple[Path, Path], store: LocalStore) -> None:
    moved = dirs[0].with_name("moved")
    dirs[0].rename(moved)
    store.revision()
    (error,) = store.input_errors()
    assert "no such file or directory" in error
    assert names(store.list_objects("MachineConfigPool")) == ["master", "worker"]
    moved.rename(dirs[0])
    store.revision()
    assert store.input_errors() == []


def test_listed_nodes_are_copies_and_fresh(dirs: tuple[Path, Path], store: LocalStore) -> None:
    store.register_node("n1", {"a": "1"})
    store.list_nodes()[0].labels["a"] = "changed"
    assert store.list_nodes()[0].labels == {"a": "1"}
    LocalStore(str(dirs[0]), str(dirs[1])).set_node_labels("n1", {"a": "2"})
    assert store.list_nodes()[0].labels == {"a": "2"}


def test_an_existing_open_state_directory_is_narrowed(dirs: tuple[Path, Path]) -> None:
    # a state directory made by an older version (or by hand) with 0755 holds the pull secret
    inputs, state = dirs
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o755)
    LocalStore(str(inputs), str(state)).close()
    assert (os.stat(state).st_mode & 0o777) == 0o700


def test_node_taint_added_once_and_removed_keeping_the_others(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    store = open_store(f"local:{tmp_path / 'in'}", str(tmp_path / "state"))
    store.register_node("n1", {})
    store.set_node_taint("n1", "example.com/gpu", "NoSchedule", True)
    rec = store.set_node_taint("n1", "UpdateInProgress", "PreferNoSchedule", True)
    revision = store.revision()
    assert store.set_node_taint("n1", "UpdateInProgress", "PreferNoSchedule", True).taints == \
        rec.taints == [{"key": "example.com/gpu", "effect": "NoSchedule"},
                       {"key": "UpdateInProgress", "effect": "PreferNoSchedule"}]
    assert store.revision() == revision  # unchanged: nothing written
    rec = store.set_node_taint("n1", "UpdateInProgress", "PreferNoSchedule", False)
    assert rec.taints == [{"key": "example.com/gpu", "effect": "NoSchedule"}]
    assert store.get_node("n1").taints == rec.taints


def test_store_scheme_and_url_errors(tmp_path: Path) -> None:
    assert [store_scheme(u) for u in ("kube", "kube:", "kube:/k", "local:x", "local", "etcd:x",
                                      "https://server:22623")] == \
        [STORE_KUBE, STORE_KUBE, STORE_KUBE, STORE_LOCAL, None, None, None]
    for url, text in (("local", "expected SCHEME"), ("etcd:x", "unknown scheme 'etcd'")):
        with pytest.raises(StoreError, match=text):
            open_store(url, str(tmp_path))
    with pytest.raises(StoreError, match="needs the input directory"):
        open_store("local:", str(tmp_path))
    with pytest.raises(StoreError, match="needs a state directory"):
        open_store("local:x")
