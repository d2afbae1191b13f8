"""The kube store: the Kubernetes API is the store, as in OpenShift (lightkube, synchronous).

- MachineConfig, MachineConfigPool, ControllerConfig, KubeletConfig, ContainerRuntimeConfig are
  the cluster-scoped `machineconfiguration.openshift.io/v1` custom resources (CRDs under
  manifests/crds/); rendered configs are the MachineConfigs named `rendered-*` (they are not
  returned by `list_objects("MachineConfig")`, as the local store keeps them apart too).
- The pull secret is the Secret each ControllerConfig's `spec.pullSecret` names (namespace/name).
- Nodes are core v1 Nodes: labels, annotations (the OpenShift keys), `spec.unschedulable`, and
  ready = no Ready, DiskPressure or NetworkUnavailable condition in a bad state (MCO's test).
- Events are core v1 Events in `default` (where events about cluster-scoped objects go), with
  `involvedObject`, reason, message, type and `count`: a repeat of the same event from this
  process increments the count of the existing Event instead of creating another, as client-go's
  recorder does.

Writes: JSON merge patches for annotation, label, cordon and `spec.configuration` changes (the
API server applies them atomically to the latest version, so nothing is lost and no retry is
needed); read-modify-write replacements (objects, `status`) carry the resourceVersion they read
and are retried on 409 Conflict with a fresh read. Server-side apply is not used: field
ownership would make the controller fight administrators' `kubectl edit` of generated objects.

Reads go to the API server (no cache), so a controller pass sees its own writes. Change
notification (`revision`, `wait_for_change`) comes from list+watch loops with bookmarks and
resync (kube_watch.py) on every kind the process has read (from its first read on): the
controller watches all it uses, the server only pools, MachineConfigs and the ControllerConfig. Objects are returned without
`metadata.resourceVersion` and `managedFields`, so a status write (which changes the
resourceVersion) does not look like an input change to the controller.

A daemon's store (`node=NAME`) watches only its own Node and refuses to touch any other node.
"""
from __future__ import annotations

import copy
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from machineconfig.clock import now_rfc3339
from machineconfig.constants import CONTROLLER_CONFIG_NAME, CONTROLLER_NAME, DAEMON_NAME, GROUP
from machineconfig.rendered_config import RenderedConfig
from machineconfig.machine_config_node import KIND as MCN_KIND, PLURAL as MCN_PLURAL
from machineconfig.store.base import (
    CLUSTER_CONFIG_KINDS,
    CONTAINER_RUNTIME_CONFIG,
    CONTROLLER_CONFIG,
    KUBELET_CONFIG,
    MACHINE_CONFIG,
    MACHINE_CONFIG_POOL,
    MACHINE_CONFIGURATION,
    SECRET,
    USER_TEMPLATE,
    ConflictError,
    DrainProgress,
    ForbiddenError,
    NodeRecord,
    NotFoundError,
    StoreError,
    StoreEvent,
    UnavailableError,
    rendered_config,
)
from machineconfig.store.kube_watch import (
    WATCH_SECONDS, KindWatch, Revision, WatchTarget, start_all,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
JSON = dict[str, Any]

RENDERED_PREFIX = "rendered-"
EVENT_NAMESPACE = "default"
MCO_NAMESPACE = "openshift-machine-config-operator"
# the kube-apiserver CA bundle MCO's operator publishes for the nodes' kubeconfig (name, key)
KUBECONFIG_DATA_CONFIGMAP = ("kubeconfig-data", "ca-bundle.crt")
FIELD_MANAGER = "machine-config"
# Event source components: ours all start with this, so list_events leaves the kubelet's alone.
COMPONENT_PREFIX = "machine-config"
CONFLICT_RETRIES = 10
EVENT_CACHE_SIZE = 4096  # events remembered for aggregation (client-go keeps as many)
# Server-managed metadata left out of returned objects (see the module docstring).
VOLATILE_METADATA = ("resourceVersion", "managedFields", "selfLink")

# kind -> plural of the machineconfiguration.openshift.io/v1 custom resources.
CUSTOM_KINDS = {
    MACHINE_CONFIG: "machineconfigs",
    MACHINE_CONFIG_POOL: "machineconfigpools",
    CONTROLLER_CONFIG: "controllerconfigs",
    KUBELET_CONFIG: "kubeletconfigs",
    CONTAINER_RUNTIME_CONFIG: "containerruntimeconfigs",
}
API_VERSIONS = {**{k: f"{GROUP}/v1" for k in CUSTOM_KINDS}, "Node": "v1", "Pod": "v1"}
# OpenShift's cluster objects (base.CLUSTER_CONFIG_KINDS): (group, version, plural). Optional:
# a cluster without their CustomResourceDefinitions (plain Kubernetes) has none of them.
CLUSTER_RESOURCES = {
    "Image": ("config.openshift.io", "v1", "images"),
    "ImageDigestMirrorSet": ("config.openshift.io", "v1", "imagedigestmirrorsets"),
    "ImageTagMirrorSet": ("config.openshift.io", "v1", "imagetagmirrorsets"),
    "FeatureGate": ("config.openshift.io", "v1", "featuregates"),
    "Node": ("config.openshift.io", "v1", "nodes"),
    "ImageContentSourcePolicy": ("operator.openshift.io", "v1alpha1",
                                 "imagecontentsourcepolicies"),
    MACHINE_CONFIGURATION: ("operator.openshift.io", "v1", "machineconfigurations"),
}
assert set(CLUSTER_RESOURCES) == set(CLUSTER_CONFIG_KINDS)
# a cluster kind found missing (no CRD) or forbidden is asked for again after this long
ABSENT_RECHECK_SECONDS = 60.0


def _to_dict(obj: Any) -> JSON:
    if isinstance(obj, dict):
        out = dict(obj)
        meta = out.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            out["metadata"] = meta.to_dict()
        return copy.deepcopy(out)
    result: JSON = obj.to_dict()
    return result


def _clean(obj: JSON) -> JSON:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for key in VOLATILE_METADATA:
            meta.pop(key, None)
    return obj


def _message(e: Exception) -> str:
    status = getattr(e, "status", None)
    text = getattr(status, "message", None)
    if text:
        return str(text)
    response = getattr(e, "response", None)
    if getattr(response, "status_code", 0) == 404:
        # kube-apiserver answers a path it does not serve at all (a group whose last CRD is
        # gone) with a plain-text "404 page not found", not a Status: say what it means, in
        # the words of the Status it sends for a missing type of a served group.
        return "the server could not find the requested resource"
    return f"{type(e).__name__}: {e}"


def _code(e: Exception) -> int:
    status = getattr(e, "status", None)
    code = getattr(status, "code", None)
    if isinstance(code, int):
        return code
    response = getattr(e, "response", None)
    return int(getattr(response, "status_code", 0) or 0)


def _unreachable(e: Exception) -> bool:
    """No answer from the API server: a connection refused or cut, a timeout (an OSError, or a
    TransportError of lightkube's httpx, whatever that package is called)."""
    return isinstance(e, OSError) or any(
        c.__name__ == "TransportError" and c.__module__.startswith("httpx")
        for c in type(e).__mro__)


def translate(e: Exception, what: str) -> StoreError:
    """A lightkube / transport error as the store's exception type, naming what was asked."""
    code = _code(e)
    message = f"kube: {what}: {_message(e)}"
    if code == 404:
        return NotFoundError(message)
    if code == 409:
        return ConflictError(message)
    if code in (401, 403):
        return ForbiddenError(message)
    if code == 429 or code >= 500 or (code == 0 and _unreachable(e)):
        return UnavailableError(message)
    return StoreError(message)


def node_ready(conditions: Any) -> bool:
    """MCO's isNodeReady: no Ready≠True, DiskPressure≠False or NetworkUnavailable≠False."""
    for cond in conditions or []:
        ctype, status = cond.get("type"), cond.get("status")
        if ctype == "Ready" and status != "True":
            return False
        if ctype in ("DiskPressure", "NetworkUnavailable") and status != "False":
            return False
    return True


def node_record(node: JSON) -> NodeRecord:
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    try:
        rv = int(meta.get("resourceVersion") or 0)
    except ValueError:
        rv = 0
    return NodeRecord(name=str(meta.get("name") or ""), labels=dict(meta.get("labels") or {}),
                      annotations=dict(meta.get("annotations") or {}),
                      unschedulable=bool(spec.get("unschedulable", False)),
                      ready=node_ready(status.get("conditions")),
                      creation_timestamp=str(meta.get("creationTimestamp") or ""),
                      resource_version=rv, uid=str(meta.get("uid") or ""),
                      taints=[{str(k): str(v) for k, v in t.items()}
                              for t in spec.get("taints") or [] if isinstance(t, dict)])


def _listed(items: list[Any], api_version: str, kind: str) -> list[JSON]:
    """Listed objects as plain dicts (server-side fields dropped, apiVersion and kind filled in,
    as a list leaves them out), sorted by name."""
    out = []
    for item in items:
        obj = _clean(_to_dict(item))
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind)
        out.append(obj)
    return sorted(out, key=lambda o: str(o["metadata"].get("name")))


def _retry_on_conflict(what: str, attempt: Callable[[], None]) -> None:
    """Run `attempt` (read, compare, write with the resourceVersion it read) until no 409."""
    for _ in range(CONFLICT_RETRIES):
        try:
            attempt()
            return
        except ConflictError:
            continue
    raise ConflictError(f"kube: {what}: still conflicting after {CONFLICT_RETRIES} attempts")


def _check_changes(changes: Mapping[str, str | None], what: str) -> None:
    for k, v in changes.items():
        if not isinstance(k, str) or not k or (v is not None and not isinstance(v, str)):
            raise StoreError(f"invalid {what} change {k!r}: {v!r}")


class KubeStore:
    """`Store` over a Kubernetes API server. `client` is a lightkube `Client`."""

    def __init__(self, client: Any, node: str | None = None, component: str | None = None,
                 watch_seconds: int = WATCH_SECONDS) -> None:
        from lightkube.generic_resource import create_global_resource
        from lightkube.resources.core_v1 import Event, Node, Secret

        self.client = client
        self.node = node
        self.component = component or (DAEMON_NAME if node else CONTROLLER_NAME)
        self.watch_seconds = watch_seconds  # server-side timeout of each watch request
        self._res: dict[str, Any] = {
            kind: create_global_resource(GROUP, "v1", kind, plural)
            for kind, plural in CUSTOM_KINDS.items()}
        self._cluster_res: dict[str, Any] = {
            kind: create_global_resource(group, version, kind, plural)
            for kind, (group, version, plural) in CLUSTER_RESOURCES.items()}
        self._absent: dict[str, float] = {}  # cluster kind -> monotonic time to ask again
        self._mcn_res: Any = create_global_resource(GROUP, "v1", MCN_KIND, MCN_PLURAL)
        self._node_res = Node
        self._event_res = Event
        self._secret_res = Secret
        self._revision = Revision()
        self._watch_lock = threading.RLock()
        self._watches: dict[str, KindWatch] = {}  # by target name
        self._closed = False
        self._secrets_used = False  # list_objects("Secret") was called: watch the pull secrets
        self._events: dict[tuple[str, str, str, str, str], tuple[str, int]] = {}
        self._event_lock = threading.Lock()
        self._drainer: Any = None
        self._host = socket.gethostname()

    def __repr__(self) -> str:
        return f"KubeStore({self.client.config.cluster.server!r}, node={self.node!r})"

    # ----- plumbing

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except StoreError:
            raise
        except Exception as e:  # noqa: BLE001 - lightkube raises ApiError and httpx errors
            raise translate(e, what) from e

    def _resource(self, kind: str) -> Any:
        res = self._res.get(kind)
        if res is None:
            raise StoreError(f"kube: unknown kind {kind!r}")
        return res

    def _own_node(self, name: str) -> None:
        if self.node is not None and name != self.node:
            raise ForbiddenError(f"kube: this daemon's store may only touch node {self.node}, "
                                 f"not {name}")

    def _controller_only(self, what: str) -> None:
        if self.node is not None:
            raise ForbiddenError(f"kube: a daemon's store does not {what}")

    # ----- change notification

    def _target(self, kind: str) -> WatchTarget:
        if kind == "Node":
            if self.node is not None:
                return WatchTarget(f"node {self.node}", self._node_res,
                                   fields={"metadata.name": self.node})
            return WatchTarget("nodes", self._node_res)
        return WatchTarget(CUSTOM_KINDS[kind], self._resource(kind))

    @staticmethod
    def _secret_target(ref: tuple[str, str], res: Any) -> WatchTarget:
        """A pull secret is watched alone (fieldSelector metadata.name): the store needs no
        right to read other secrets."""
        namespace, name = ref
        return WatchTarget(f"secret {namespace}/{name}", res, namespace=namespace,
                           fields={"metadata.name": name})

    def _watch(self, target: WatchTarget) -> None:
        """Watch `target` from now on (listed once here, then a watch loop), if not yet.

        Every kind this store reads is watched from its first read on, so `revision()` covers
        what the process uses, and the process needs no right to list or watch anything else
        (the server never watches nodes). The watch starts before the read that asked for it,
        so no change after the read goes unseen.
        """
        with self._watch_lock:
            if self._closed or target.name in self._watches:
                return
            on_change = {CUSTOM_KINDS[CONTROLLER_CONFIG]: self._retarget_secrets}
            watch, = start_all(self.client, [target], self._revision,
                               lambda what, e: translate(e, what), on_change=on_change,
                               watch_seconds=self.watch_seconds)
            self._watches[target.name] = watch

    def _retarget_secrets(self) -> None:
        """A ControllerConfig changed: if pull secrets are in use, watch the ones it names now."""
        if not self._secrets_used:
            return
        try:
            wanted = {t.name: t for t in (self._secret_target(ref, self._secret_res)
                                          for ref in self._pull_secret_refs())}
        except StoreError as e:
            log.warning("cannot read the ControllerConfigs for their pull secret: %s", e)
            return
        with self._watch_lock:
            have = [n for n in self._watches if n.startswith("secret ")]
            if set(have) == set(wanted):
                return
            for name in have:
                if name not in wanted:
                    self._watches.pop(name).stop()
            # Under the lock (an RLock): whoever sees the new watches sees this change too.
            for name, target in wanted.items():
                try:
                    self._watch(target)
                except StoreError as e:
                    log.warning("cannot watch the pull secret: %s", e)
            self._revision.bump()

    def watches(self) -> list[KindWatch]:
        """The running watch loops (for tests and diagnostics)."""
        with self._watch_lock:
            return list(self._watches.values())

    def revision(self) -> int:
        if self.node is not None:
            self._watch(self._target("Node"))
        return self._revision.value

    def wait_for_change(self, since: int, timeout: float) -> int:
        if self.node is not None:
            self._watch(self._target("Node"))
        return self._revision.wait_past(since, timeout)

    def close(self) -> None:
        """Stop every watch loop (and wait for their threads, briefly), then close the client."""
        with self._watch_lock:
            self._closed = True
            watches = list(self._watches.values())
            for watch in watches:
                watch.stop()
            self._watches = {}
        for watch in watches:
            if not watch.join(5.0):
                log.warning("watch %s did not stop within 5 s", watch.target.name)
        self.client.close()

    # ----- objects

    def _crd_hint(self, kind: str, e: NotFoundError) -> NotFoundError:
        """A 404 for the resource type itself (not an object of it): the CRD is missing."""
        if "could not find the requested resource" in str(e):
            return NotFoundError(f"{e} (is the CustomResourceDefinition "
                                 f"{CUSTOM_KINDS[kind]}.{GROUP} installed? kubectl apply -k "
                                 "manifests/)")
        return e

    def _list_custom(self, kind: str) -> list[JSON]:
        res = self._resource(kind)
        try:
            self._watch(self._target(kind))
            items = self._call(f"list {CUSTOM_KINDS[kind]}", lambda: list(self.client.list(res)))
        except NotFoundError as e:
            raise self._crd_hint(kind, e) from e
        return _listed(items, f"{GROUP}/v1", kind)

    def _pull_secret_refs(self) -> list[tuple[str, str]]:
        refs = []
        for cc in self._list_custom(CONTROLLER_CONFIG):
            ref = (cc.get("spec") or {}).get("pullSecret") or {}
            if ref.get("name"):
                refs.append((str(ref.get("namespace") or "openshift-config"), str(ref["name"])))
        return sorted(set(refs))

    def _list_cluster(self, kind: str) -> list[JSON]:
        """OpenShift's cluster objects of `kind`, watched once listed; none (logged once) while
        the cluster lacks their CRD or this process the right to read them."""
        group, version, plural = CLUSTER_RESOURCES[kind]
        res = self._cluster_res[kind]
        if time.monotonic() < self._absent.get(kind, 0.0):
            return []
        try:
            items = self._call(f"list {plural}.{group}", lambda: list(self.client.list(res)))
        except (NotFoundError, ForbiddenError) as e:
            if kind not in self._absent:
                log.info("kube: no %s.%s read (%s): treated as none, asked again every %.0f s",
                         plural, group, e, ABSENT_RECHECK_SECONDS)
            self._absent[kind] = time.monotonic() + ABSENT_RECHECK_SECONDS
            return []
        if self._absent.pop(kind, None) is not None:
            log.info("kube: %s.%s readable now", plural, group)
        self._watch(WatchTarget(f"{plural}.{group}", res))
        return _listed(items, f"{group}/{version}", kind)

    def node_controller_config(self) -> JSON | None:
        """For a daemon's certificate writer: the ControllerConfig MCO uses (watched by name, so
        a CA rotation wakes the daemon), with its resourceVersion; None when there is none."""
        res = self._resource(CONTROLLER_CONFIG)
        if time.monotonic() < self._absent.get(CONTROLLER_CONFIG, 0.0):
            return None
        try:
            obj = _to_dict(self._call(f"get controllerconfigs {CONTROLLER_CONFIG_NAME}",
                                      lambda: self.client.get(res, CONTROLLER_CONFIG_NAME)))
        except (NotFoundError, ForbiddenError) as e:
            # none yet, or a daemon whose credentials may not read it: no certificate writer
            if CONTROLLER_CONFIG not in self._absent:
                log.info("kube: ControllerConfig %s not read (%s): certificate writer idle, "
                         "asked again every %.0f s", CONTROLLER_CONFIG_NAME, e,
                         ABSENT_RECHECK_SECONDS)
            self._absent[CONTROLLER_CONFIG] = time.monotonic() + ABSENT_RECHECK_SECONDS
            return None
        self._absent.pop(CONTROLLER_CONFIG, None)
        self._watch(WatchTarget(f"controllerconfig {CONTROLLER_CONFIG_NAME}", res,
                                fields={"metadata.name": CONTROLLER_CONFIG_NAME}))
        return obj

    def node_kubeconfig_ca(self) -> bytes | None:
        """For a daemon's service-CA rotation: `ca-bundle.crt` of the ConfigMap
        openshift-machine-config-operator/kubeconfig-data (binaryData, else data: base64 when it
        decodes, as MCO reads it); None when there is none or this daemon may not read it."""
        import base64
        import binascii

        from lightkube.resources.core_v1 import ConfigMap
        name, key = KUBECONFIG_DATA_CONFIGMAP
        try:
            cm = _to_dict(self._call(f"get configmap {MCO_NAMESPACE}/{name}",
                                     lambda: self.client.get(ConfigMap, name,
                                                             namespace=MCO_NAMESPACE)))
        except (NotFoundError, ForbiddenError) as e:
            log.info("kube: configmap %s/%s not read (%s)", MCO_NAMESPACE, name, e)
            return None
        binary, data = cm.get("binaryData") or {}, cm.get("data") or {}
        if isinstance(binary, dict) and isinstance(binary.get(key), str):
            try:
                return base64.b64decode(binary[key], validate=True)
            except (binascii.Error, ValueError):
                return None
        if isinstance(data, dict) and isinstance(data.get(key), str):
            try:
                return base64.b64decode(data[key], validate=True)
            except (binascii.Error, ValueError):
                return str(data[key]).encode()
        return None

    def cluster_disruption_policies(self) -> tuple[int | None, int | None, JSON] | None:
        """For a daemon: MachineConfiguration `cluster`'s (generation, status.observedGeneration,
        status.nodeDisruptionPolicyStatus.clusterPolicies), None when the cluster has none."""
        group, _, plural = CLUSTER_RESOURCES[MACHINE_CONFIGURATION]
        res = self._cluster_res[MACHINE_CONFIGURATION]
        try:
            obj = _to_dict(self._call(f"get {plural}.{group} cluster",
                                      lambda: self.client.get(res, "cluster")))
        except (NotFoundError, ForbiddenError):
            return None
        meta, status = obj.get("metadata") or {}, obj.get("status") or {}
        policies = (status.get("nodeDisruptionPolicyStatus") or {}).get("clusterPolicies")
        generation, observed = meta.get("generation"), status.get("observedGeneration")
        return (generation if isinstance(generation, int) else None,
                observed if isinstance(observed, int) else None,
                dict(policies) if isinstance(policies, dict) else {})

    def list_objects(self, kind: str) -> list[JSON]:
        self._controller_only("list objects")
        if kind in CLUSTER_CONFIG_KINDS:
            return self._list_cluster(kind)
        if kind == USER_TEMPLATE:
            return []  # templates with controller values exist only in a local input directory
        if kind == SECRET:
            out = []
            self._secrets_used = True
            for namespace, name in self._pull_secret_refs():
                self._watch(self._secret_target((namespace, name), self._secret_res))
                try:
                    secret = self._call(f"get secret {namespace}/{name}",
                                        lambda: self.client.get(self._secret_res, name,
                                                                namespace=namespace))
                except NotFoundError:
                    continue
                obj = _clean(_to_dict(secret))
                obj.setdefault("apiVersion", "v1")
                obj.setdefault("kind", SECRET)
                out.append(obj)
            return out
        objects = self._list_custom(kind)
        if kind == MACHINE_CONFIG:
            objects = [o for o in objects
                       if not str(o["metadata"].get("name")).startswith(RENDERED_PREFIX)]
        return objects

    def _get_custom(self, kind: str, name: str) -> JSON:
        res = self._resource(kind)
        try:
            if self.node is None:
                self._watch(self._target(kind))
            obj = _to_dict(self._call(f"get {CUSTOM_KINDS[kind]} {name}",
                                      lambda: self.client.get(res, name)))
        except NotFoundError as e:
            raise self._crd_hint(kind, e) from e
        obj.setdefault("apiVersion", f"{GROUP}/v1")
        obj.setdefault("kind", kind)
        return obj

    def get_object(self, kind: str, name: str) -> JSON:
        self._controller_only("read objects")
        if kind == SECRET:
            for obj in self.list_objects(SECRET):
                if obj["metadata"].get("name") == name:
                    return obj
            raise NotFoundError(f"kube: Secret {name!r} is not a pull secret any "
                                "ControllerConfig names")
        return _clean(self._get_custom(kind, name))

    @staticmethod
    def _desired(obj: Mapping[str, Any], kind: str) -> JSON:
        body = copy.deepcopy(dict(obj))
        body["apiVersion"] = f"{GROUP}/v1"
        body["kind"] = kind
        meta = body.setdefault("metadata", {})
        for key in (*VOLATILE_METADATA, "uid", "creationTimestamp", "generation",
                    "namespace"):
            meta.pop(key, None)
        body.pop("status", None)
        return body

    @staticmethod
    def _same(current: JSON, desired: JSON) -> bool:
        """Does the object already say what `desired` says (spec and the metadata we set)?"""
        cur_meta, want_meta = current.get("metadata") or {}, desired.get("metadata") or {}
        for key in ("labels", "annotations", "ownerReferences"):
            if (cur_meta.get(key) or None) != (want_meta.get(key) or None):
                return False
        skip = ("metadata", "status", "apiVersion", "kind")
        return {k: v for k, v in current.items() if k not in skip} == \
            {k: v for k, v in desired.items() if k not in skip}

    def _put(self, kind: str, obj: Mapping[str, Any]) -> None:
        res = self._resource(kind)
        desired = self._desired(obj, kind)
        name = str(desired["metadata"].get("name") or "")
        if not name:
            raise StoreError(f"put {kind}: metadata.name is required")
        def attempt() -> None:
            try:
                current = self._get_custom(kind, name)
            except NotFoundError:
                # 409 AlreadyExists when created meanwhile: the next attempt reads and compares.
                self._call(f"create {CUSTOM_KINDS[kind]} {name}",
                           lambda: self.client.create(res(desired)))
                return
            if self._same(current, desired):
                return
            body = copy.deepcopy(desired)
            body["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
            self._call(f"replace {CUSTOM_KINDS[kind]} {name}",
                       lambda: self.client.replace(res(body)))

        _retry_on_conflict(f"{kind} {name}", attempt)

    def put_object(self, obj: Mapping[str, Any]) -> None:
        self._controller_only("write objects")
        kind = obj.get("kind")
        if kind not in CUSTOM_KINDS:
            raise StoreError(f"put_object: kind {kind!r} is not stored in kube by this store")
        self._put(str(kind), obj)

    def delete_object(self, kind: str, name: str) -> None:
        self._controller_only("delete objects")
        res = self._resource(kind)
        try:
            self._call(f"delete {CUSTOM_KINDS[kind]} {name}",
                       lambda: self.client.delete(res, name))
        except NotFoundError:
            pass

    def set_pool_configuration(self, pool: str, name: str,
                               source: list[dict[str, str]]) -> None:
        self._controller_only("write pools")
        from lightkube.types import PatchType

        res = self._resource(MACHINE_CONFIG_POOL)
        patch = {"spec": {"configuration": {"name": name, "source": [dict(s) for s in source]}}}
        self._call(f"patch machineconfigpools {pool}",
                   lambda: self.client.patch(res, pool, patch, patch_type=PatchType.MERGE))

    def update_status(self, kind: str, name: str, status: Mapping[str, Any]) -> None:
        """Replace `status` through the status subresource, retrying on conflict."""
        self._controller_only("write status")
        if kind in CLUSTER_RESOURCES:
            group, _, plural = CLUSTER_RESOURCES[kind]
            res, what = self._cluster_res[kind], f"{plural}.{group}"

            def read() -> JSON:
                return _to_dict(self._call(f"get {what} {name}",
                                           lambda: self.client.get(res, name)))
        else:
            res, what = self._resource(kind), CUSTOM_KINDS[kind]

            def read() -> JSON:
                return self._get_custom(kind, name)
        want = copy.deepcopy(dict(status))

        def attempt() -> None:
            current = read()
            if (current.get("status") or {}) == want:
                return
            current["status"] = want
            self._call(f"update {what}/{name}/status",
                       lambda: self.client.replace(res.Status(current), name))

        _retry_on_conflict(f"status of {kind} {name}", attempt)

    # ----- rendered configs

    def put_rendered(self, rendered: RenderedConfig) -> None:
        self._controller_only("write rendered configs")
        self._put(MACHINE_CONFIG, rendered.to_dict())

    def get_rendered(self, name: str) -> RenderedConfig:
        return rendered_config(_clean(self._get_custom(MACHINE_CONFIG, name)),
                               f"kube: machineconfigs {name}")

    def list_rendered(self) -> list[str]:
        self._controller_only("list rendered configs")
        return [str(o["metadata"]["name"]) for o in self._list_custom(MACHINE_CONFIG)
                if str(o["metadata"].get("name")).startswith(RENDERED_PREFIX)]

    def delete_rendered(self, name: str) -> None:
        self.delete_object(MACHINE_CONFIG, name)

    # ----- nodes

    def get_node(self, name: str) -> NodeRecord:
        self._own_node(name)
        self._watch(self._target("Node"))
        node = self._call(f"get node {name}", lambda: self.client.get(self._node_res, name))
        return node_record(_to_dict(node))

    def list_nodes(self) -> list[NodeRecord]:
        self._controller_only("list nodes")
        self._watch(self._target("Node"))
        nodes = self._call("list nodes", lambda: list(self.client.list(self._node_res)))
        return sorted((node_record(_to_dict(n)) for n in nodes), key=lambda r: r.name)

    def _patch_node(self, name: str, patch: JSON, what: str) -> NodeRecord:
        from lightkube.types import PatchType

        self._own_node(name)
        node = self._call(f"patch node {name} ({what})",
                          lambda: self.client.patch(self._node_res, name, patch,
                                                    patch_type=PatchType.MERGE))
        return node_record(_to_dict(node))

    def patch_node_annotations(self, name: str, changes: Mapping[str, str | None]) -> NodeRecord:
        _check_changes(changes, "annotation")
        if not changes:
            return self.get_node(name)
        return self._patch_node(name, {"metadata": {"annotations": dict(changes)}}, "annotations")

    def set_node_labels(self, name: str, changes: Mapping[str, str | None]) -> NodeRecord:
        self._controller_only("change node labels")
        _check_changes(changes, "label")
        if not changes:
            return self.get_node(name)
        return self._patch_node(name, {"metadata": {"labels": dict(changes)}}, "labels")

    def set_unschedulable(self, name: str, value: bool) -> NodeRecord:
        self._controller_only("cordon nodes")
        return self._patch_node(name, {"spec": {"unschedulable": True if value else None}},
                                "cordon" if value else "uncordon")

    def set_node_taint(self, name: str, key: str, effect: str, present: bool) -> NodeRecord:
        """spec.taints is replaced whole by a patch: read it, change one taint and write it back
        with the resourceVersion read as precondition (a 409 reads again), as MCO's two-way
        merge patch does; the other taints (value, timeAdded) are written back as they were."""
        self._controller_only("taint nodes")
        done: list[NodeRecord] = []

        def attempt() -> None:
            raw = _to_dict(self._call(f"get node {name}",
                                      lambda: self.client.get(self._node_res, name)))
            taints = [t for t in (raw.get("spec") or {}).get("taints") or []
                      if isinstance(t, dict)]
            matches = [t for t in taints if t.get("key") == key and t.get("effect") == effect]
            if bool(matches) == present:
                done.append(node_record(raw))
                return
            kept = [t for t in taints if t not in matches]
            new = [*kept, {"key": key, "effect": effect}] if present else kept
            rv = str((raw.get("metadata") or {}).get("resourceVersion") or "")
            done.append(self._patch_node(name, {"metadata": {"resourceVersion": rv},
                                                "spec": {"taints": new or None}},
                                         "taint" if present else "untaint"))

        _retry_on_conflict(f"taint node {name}", attempt)
        return done[-1]

    def set_node_ready(self, name: str, value: bool) -> NodeRecord:
        """Set the node's Ready condition (the kubelet's job on a real cluster: for simulations)."""
        from lightkube.types import PatchType

        self._controller_only("set node conditions")
        stamp = now_rfc3339()
        condition = {"type": "Ready", "status": "True" if value else "False",
                     "reason": "KubeletReady" if value else "KubeletNotReady",
                     "message": "set by machine-config", "lastHeartbeatTime": stamp,
                     "lastTransitionTime": stamp}
        node = self._call(f"patch node {name} status",
                          lambda: self.client.patch(
                              self._node_res.Status, name, {"status": {"conditions": [condition]}},
                              patch_type=PatchType.STRATEGIC))
        return node_record(_to_dict(node))

    def register_node(self, name: str, labels: Mapping[str, str]) -> NodeRecord:
        """Merge `labels` into the Node; create it if missing.

        On a real cluster the kubelet creates its Node and this only adds labels. Creating one
        (Ready, as a kubelet would report it) is for simulations and tests against a fake.
        """
        from lightkube.models.meta_v1 import ObjectMeta

        self._controller_only("register nodes")
        _check_changes(labels, "label")
        try:
            record = self.get_node(name)
        except NotFoundError:
            stamp = now_rfc3339()
            body = self._node_res(
                metadata=ObjectMeta(name=name, labels=dict(labels)))
            try:
                self._call(f"create node {name}", lambda: self.client.create(body))
            except ConflictError:
                pass  # registered meanwhile
            else:
                from lightkube.types import PatchType
                # Status (conditions) may not be set on create by every server: a status patch.
                condition = {"type": "Ready", "status": "True", "reason": "KubeletReady",
                             "message": "kubelet is posting ready status",
                             "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
                self._call(f"patch node {name} status", lambda: self.client.patch(
                    self._node_res.Status, name, {"status": {"conditions": [condition]}},
                    patch_type=PatchType.STRATEGIC))
            record = self.get_node(name)
        missing = {k: v for k, v in labels.items() if record.labels.get(k) != v}
        if missing:
            record = self._patch_node(name, {"metadata": {"labels": missing}}, "labels")
        return record

    # ----- MachineConfigNodes (base.MachineConfigNodes): never watched, so a daemon's status
    # write does not wake the controller; a daemon's store reads and writes its own only

    def _mcn_crd_hint(self, e: NotFoundError) -> NotFoundError:
        if "could not find the requested resource" in str(e):
            return NotFoundError(f"{e} (is the CustomResourceDefinition {MCN_PLURAL}.{GROUP} "
                                 "installed? kubectl apply -k manifests/)")
        return e

    def list_machine_config_nodes(self) -> list[JSON]:
        self._controller_only("list MachineConfigNodes")
        try:
            items = self._call(f"list {MCN_PLURAL}",
                               lambda: list(self.client.list(self._mcn_res)))
        except NotFoundError as e:
            raise self._mcn_crd_hint(e) from e
        return _listed(items, f"{GROUP}/v1", MCN_KIND)

    def get_machine_config_node(self, name: str) -> JSON:
        self._own_node(name)
        try:
            obj = _to_dict(self._call(f"get {MCN_PLURAL} {name}",
                                      lambda: self.client.get(self._mcn_res, name)))
        except NotFoundError as e:
            raise self._mcn_crd_hint(e) from e
        obj.setdefault("apiVersion", f"{GROUP}/v1")
        obj.setdefault("kind", MCN_KIND)
        return _clean(obj)

    def put_machine_config_node(self, obj: Mapping[str, Any]) -> None:
        """Create it, or merge-patch its ownerReferences and spec (the status is the daemon's)."""
        from lightkube.types import PatchType

        self._controller_only("write MachineConfigNodes")
        body = self._desired(obj, MCN_KIND)
        name = str(body["metadata"]["name"])
        try:
            self._call(f"create {MCN_PLURAL} {name}",
                       lambda: self.client.create(self._mcn_res(body)))
            return
        except ConflictError:
            pass  # it exists: its spec and owner
        except NotFoundError as e:
            raise self._mcn_crd_hint(e) from e
        patch: JSON = {"spec": body.get("spec")}
        if "ownerReferences" in body["metadata"]:
            patch["metadata"] = {"ownerReferences": body["metadata"]["ownerReferences"]}
        self._call(f"patch {MCN_PLURAL} {name}", lambda: self.client.patch(
            self._mcn_res, name, patch, patch_type=PatchType.MERGE))

    def set_machine_config_node_status(self, name: str, status: Mapping[str, Any]) -> None:
        """A merge patch of the status subresource with the whole status: lists (conditions)
        are replaced whole, and no resourceVersion is needed (only this node's daemon writes
        it)."""
        from lightkube.types import PatchType

        self._own_node(name)
        patch = {"status": copy.deepcopy(dict(status))}
        try:
            self._call(f"patch {MCN_PLURAL}/{name}/status", lambda: self.client.patch(
                self._mcn_res.Status, name, patch, patch_type=PatchType.MERGE))
        except NotFoundError as e:
            raise self._mcn_crd_hint(e) from e

    def delete_machine_config_node(self, name: str) -> None:
        self._controller_only("delete MachineConfigNodes")
        try:
            self._call(f"delete {MCN_PLURAL} {name}",
                       lambda: self.client.delete(self._mcn_res, name))
        except NotFoundError:
            pass

    # ----- drain (the Eviction API, machineconfig/store/kube_drain.py)

    def evict_pods(self, node: str) -> DrainProgress:
        self._controller_only("evict pods")
        if self._drainer is None:
            from machineconfig.store.kube_drain import KubeApi, KubeDrainer

            self._drainer = KubeDrainer(KubeApi(self.client))
        progress: DrainProgress = self._drainer.evict_pods(node)
        return progress

    # ----- events

    def record_event(self, kind: str, name: str, reason: str, message: str,
                     type: str = "Normal") -> None:
        """A core v1 Event about `kind`/`name`; a repeat bumps the existing Event's count."""
        from lightkube.types import PatchType

        if kind == "Node":
            self._own_node(name)
        elif self.node is not None:
            raise ForbiddenError(f"kube: a daemon's store records events about its node only, "
                                 f"not {kind} {name}")
        key = (kind, name, reason, message, type)
        stamp = now_rfc3339()
        with self._event_lock:
            seen = self._events.get(key)
            if seen is not None:
                event_name, count = seen
                try:
                    self._call(f"patch event {event_name}", lambda: self.client.patch(
                        self._event_res, event_name,
                        {"count": count + 1, "lastTimestamp": stamp},
                        namespace=EVENT_NAMESPACE, patch_type=PatchType.MERGE))
                    del self._events[key]  # re-inserted last: the cache keeps recent ones
                    self._events[key] = (event_name, count + 1)
                    return
                except NotFoundError:
                    pass  # expired or deleted: a new Event
            event_name = f"{name}.{time.time_ns():x}"
            involved: JSON = {"kind": kind, "name": name,
                              "apiVersion": API_VERSIONS.get(kind, f"{GROUP}/v1")}
            body = self._event_res.from_dict({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": event_name, "namespace": EVENT_NAMESPACE},
                "involvedObject": involved, "reason": reason, "message": message, "type": type,
                "count": 1, "firstTimestamp": stamp, "lastTimestamp": stamp,
                "source": {"component": self.component,
                           **({"host": self.node} if self.node else {})},
                "reportingComponent": self.component, "reportingInstance": self._host})
            try:
                self._call(f"create event {event_name}", lambda: self.client.create(body))
            except StoreError as e:
                # Events are best effort, as in client-go: never fail the caller's work.
                log.warning("event %s %s %s not recorded: %s", kind, name, reason, e)
                return
            self._events[key] = (event_name, 1)
            while len(self._events) > EVENT_CACHE_SIZE:
                del self._events[next(iter(self._events))]  # the oldest

    def list_events(self, kind: str | None = None, name: str | None = None,
                    since_seq: int = 0) -> list[StoreEvent]:
        """Our events (source component machine-config*), oldest last change first; `seq` is the
        Event's resourceVersion, so a repeated event moves to the end with its new count."""
        self._controller_only("list events")
        fields = {}
        if kind is not None:
            fields["involvedObject.kind"] = kind
        if name is not None:
            fields["involvedObject.name"] = name
        items = self._call("list events", lambda: list(self.client.list(
            self._event_res, namespace=EVENT_NAMESPACE, fields=fields or None)))
        out = []
        for item in items:
            ev = _to_dict(item)
            source = str((ev.get("source") or {}).get("component") or
                         ev.get("reportingComponent") or "")
            if not source.startswith(COMPONENT_PREFIX):
                continue
            meta = ev.get("metadata") or {}
            seq = int(meta.get("resourceVersion") or 0)
            if seq <= since_seq:
                continue
            involved = ev.get("involvedObject") or {}
            out.append(StoreEvent(seq=seq, time=str(ev.get("lastTimestamp") or ""),
                                  kind=str(involved.get("kind") or ""),
                                  name=str(involved.get("name") or ""),
                                  reason=str(ev.get("reason") or ""),
                                  message=str(ev.get("message") or ""),
                                  type=str(ev.get("type") or "Normal"),
                                  count=int(ev.get("count") or 1)))
        return sorted(out, key=lambda e: e.seq)


def open_kube(path: str, node: str | None = None) -> KubeStore:
    """A KubeStore from a kubeconfig file, or (`path` empty) the in-cluster service account,
    else $KUBECONFIG, else ~/.kube/config."""
    try:
        from lightkube import Client, KubeConfig
        from lightkube.core.exceptions import ConfigError
    except ImportError as e:
        raise StoreError("the kube store needs lightkube (pip install 'machine-config[kube]')") \
            from e
    try:
        if path:
            if not os.path.isfile(path):
                raise StoreError(f"{path}: kubeconfig file not found")
            config = KubeConfig.from_file(path)
        else:
            config = KubeConfig.from_env()
        client = Client(config=config, field_manager=FIELD_MANAGER)
        # lightkube's HTTP library logs every request at INFO: the programs log at INFO.
        http_log = logging.getLogger("httpx2")
        if http_log.level == logging.NOTSET:
            http_log.setLevel(logging.WARNING)
    except StoreError:
        raise
    except (ConfigError, OSError, ValueError, KeyError, TypeError) as e:
        where = path or "in-cluster config / $KUBECONFIG / ~/.kube/config"
        raise StoreError(f"{where}: cannot load the kubeconfig: {e}") from e
    return KubeStore(client, node=node)
