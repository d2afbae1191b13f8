"""The store port: what every program may ask of the place cluster state lives.

Two implementations: `local` (YAML input directory + SQLite state directory, the embedded default)
and `kube` (the Kubernetes API). The daemon reaches a local store through the server's node
API (`remote`), which implements the `NodeAPI` subset. Objects are plain dicts shaped like the
Kubernetes objects (apiVersion, kind, metadata, spec, status); rendered configs travel as
`RenderedConfig` (machineconfig.rendered_config).
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from machineconfig.errors import InputError, MachineConfigError
from machineconfig.rendered_config import RenderedConfig

# Kinds the store knows. Inputs come from the user; the controller writes the generated and
# rendered MachineConfigs and every object's status.
MACHINE_CONFIG = "MachineConfig"
MACHINE_CONFIG_POOL = "MachineConfigPool"
CONTROLLER_CONFIG = "ControllerConfig"
KUBELET_CONFIG = "KubeletConfig"
CONTAINER_RUNTIME_CONFIG = "ContainerRuntimeConfig"
SECRET = "Secret"
# A user MachineConfig written as a Jinja2 template (`*.yaml.j2` in the input directory). The
# store cannot render it (the template variables belong to the controller), so it hands the file
# over as {"kind": USER_TEMPLATE, "metadata": {"name": <path relative to the input dir>},
# "path": <absolute path>}; the controller renders it with its values.
USER_TEMPLATE = "UserTemplate"
# OpenShift's cluster-wide objects the controller reads besides its own kinds (kind -> the API
# groups they come from): kept as written, the controller interprets them.
CLUSTER_CONFIG_KINDS = {
    "Image": ("config.openshift.io",),
    "ImageContentSourcePolicy": ("operator.openshift.io",),
    "ImageDigestMirrorSet": ("config.openshift.io",),
    "ImageTagMirrorSet": ("config.openshift.io",),
    "FeatureGate": ("config.openshift.io",),
    "Node": ("config.openshift.io",),  # nodes.config.openshift.io, not the core Node
    # the operator's configuration (node disruption policies): read by the controller, which
    # publishes the merged policies in its status; no render input
    "MachineConfiguration": ("operator.openshift.io",),
}
MACHINE_CONFIGURATION = "MachineConfiguration"
KINDS = (MACHINE_CONFIG, MACHINE_CONFIG_POOL, CONTROLLER_CONFIG, KUBELET_CONFIG,
         CONTAINER_RUNTIME_CONFIG, SECRET, USER_TEMPLATE, *CLUSTER_CONFIG_KINDS)


def is_cluster_config(obj: Any) -> bool:
    """`obj` is one of CLUSTER_CONFIG_KINDS from its own API group (config.openshift.io's Node
    is not the core Node, so the group counts)."""
    if not isinstance(obj, Mapping):
        return False
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    groups = CLUSTER_CONFIG_KINDS.get(kind, ()) if isinstance(kind, str) else ()
    return isinstance(api_version, str) and api_version.split("/")[0] in groups


class StoreError(MachineConfigError):
    """The store could not do what was asked (I/O, corruption, remote failure). Permanent unless
    a subclass says otherwise."""


class UnavailableError(StoreError):
    """The store could not be reached or was too busy to answer (connection refused or cut, a
    timeout, HTTP 429 or 5xx): the same request may succeed later."""

    temporary = True


class NotFoundError(StoreError):
    """The named object or node does not exist."""


class ConflictError(StoreError):
    """A write carried a stale resource version (or met a concurrent one): read and try again."""

    temporary = True


class ForbiddenError(StoreError):
    """The caller may not do this (wrong token, another node's record, a key it does not own)."""


def rendered_config(obj: Mapping[str, Any], where: str) -> RenderedConfig:
    """The RenderedConfig of an object a store read; StoreError (naming `where`) when it is not
    a rendered MachineConfig."""
    try:
        return RenderedConfig(obj)
    except InputError as e:
        raise StoreError(f"{where}: corrupt rendered config: {e}") from None


@dataclass
class NodeRecord:
    """A node as the controllers see it: Kubernetes Node metadata plus schedulability."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    unschedulable: bool = False
    ready: bool = True
    creation_timestamp: str = ""  # RFC 3339, UTC
    resource_version: int = 0
    # Kubernetes taints, {"key", "effect"[, "value"]} (only the controller's are set off-kube)
    taints: list[dict[str, str]] = field(default_factory=list)
    uid: str = ""  # metadata.uid on the kube store (owner references); "" elsewhere

    def has_taint(self, key: str, effect: str) -> bool:
        return any(t.get("key") == key and t.get("effect") == effect for t in self.taints)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "labels": dict(self.labels),
                "annotations": dict(self.annotations), "unschedulable": self.unschedulable,
                "ready": self.ready, "creationTimestamp": self.creation_timestamp,
                "resourceVersion": self.resource_version,
                "taints": [dict(t) for t in self.taints],
                **({"uid": self.uid} if self.uid else {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NodeRecord:
        return cls(name=str(d["name"]), labels=dict(d.get("labels") or {}),
                   annotations=dict(d.get("annotations") or {}),
                   unschedulable=bool(d.get("unschedulable", False)),
                   ready=bool(d.get("ready", True)),
                   creation_timestamp=str(d.get("creationTimestamp", "")),
                   resource_version=int(d.get("resourceVersion", 0)),
                   taints=[{str(k): str(v) for k, v in t.items()}
                           for t in d.get("taints") or [] if isinstance(t, Mapping)],
                   uid=str(d.get("uid") or ""))


def with_taint(taints: list[dict[str, str]], key: str, effect: str, present: bool
               ) -> list[dict[str, str]]:
    """`taints` with the (key, effect) taint added at the end or removed; the others unchanged."""
    kept = [dict(t) for t in taints if not (t.get("key") == key and t.get("effect") == effect)]
    return [*kept, {"key": key, "effect": effect}] if present else kept


@dataclass(frozen=True)
class StoreEvent:
    """A recorded event, like a Kubernetes Event: about one object, with a reason and message."""

    seq: int
    time: str  # RFC 3339, UTC
    kind: str  # "Node", "MachineConfigPool", ...
    name: str
    reason: str
    message: str
    type: str = "Normal"  # or "Warning"
    count: int = 1  # how many times it happened (the kube store aggregates repeats, as client-go)


class NodeAPI(Protocol):
    """What a daemon needs: its own node record, rendered configs, and change notification."""

    def get_node(self, name: str) -> NodeRecord:
        """Raises NotFoundError."""

    def patch_node_annotations(self, name: str, changes: Mapping[str, str | None]) -> NodeRecord:
        """Set (str) or delete (None) annotations atomically; returns the new record."""

    def get_rendered(self, name: str) -> RenderedConfig:
        """A rendered MachineConfig by name. Raises NotFoundError."""

    def record_event(self, kind: str, name: str, reason: str, message: str,
                     type: str = "Normal") -> None: ...

    def wait_for_change(self, since: int, timeout: float) -> int:
        """Block until the store revision is above `since` or `timeout` seconds pass.

        Returns the current revision (callers pass it back as `since`).
        """


@dataclass(frozen=True)
class Blocker:
    """A pod that keeps a node from draining, and why.

    `pod` is "namespace/name". When a PodDisruptionBudget refused the eviction, `budget` is the
    budget's "namespace/name" and `message` the API server's text for it ("The disruption budget
    web needs 2 healthy pods and has 2 currently"); otherwise `budget` is "" and `message` says
    what else holds the pod (the API's error, or that an accepted eviction has not finished yet).
    """

    pod: str
    budget: str = ""
    message: str = ""

    def __str__(self) -> str:
        if self.budget:
            return (f"pod {self.pod} blocked by PodDisruptionBudget {self.budget}"
                    + (f" ({self.message})" if self.message else ""))
        return f"pod {self.pod}" + (f": {self.message}" if self.message else "")


@dataclass(frozen=True)
class DrainProgress:
    """Where the eviction of a node's pods stands after one step of `PodEvictor.evict_pods`.

    `done`: no pod that a drain must move is left on the node. Otherwise `blocking` names the pods
    still there (with the budgets that refused them) and `retry_after` is how many seconds the
    caller should wait before the next step (a budget's Retry-After, or a short poll while
    accepted evictions finish).
    """

    done: bool
    blocking: tuple[Blocker, ...] = ()
    retry_after: float = 0.0
    evicted: tuple[str, ...] = ()  # "namespace/name" of the pods whose eviction this step started


@dataclass(frozen=True)
class RebootLock:
    """One FleetLock reboot slot held: by whom, in which group, since when (RFC 3339, UTC)."""

    group: str
    holder: str
    since: str


@runtime_checkable
class RebootLocks(Protocol):
    """Optional store capability (the local store): FleetLock's counting semaphores, one per
    group, with owned, recursive slots that survive restarts (mcs.fleetlock serves them)."""

    def acquire_reboot_lock(self, group: str, holder: str, limit: int,
                            busy: Collection[str] = ()) -> tuple[str, list[RebootLock]]:
        """RecursiveLock, atomically: "held" when `holder` held a slot of `group` already,
        "taken" when it took one now (fewer than `limit` were taken), "full" otherwise. `busy`
        names nodes that take a slot without a lock (updating now); a node in both counts once,
        `holder` never. Returns the group's holders after the attempt too."""

    def release_reboot_lock(self, group: str, holder: str) -> bool:
        """UnlockIfHeld: True when `holder` held a slot (now released)."""

    def list_reboot_locks(self, group: str | None = None) -> list[RebootLock]: ...


@runtime_checkable
class NodeProgressReports(Protocol):
    """Optional capability of a daemon's store: its node's MachineConfigNode
    (machineconfig.machine_config_node), read and its status written by the node's daemon only.
    The kube store, the local store and the embedded node API's client offer it."""

    def get_machine_config_node(self, name: str) -> dict[str, Any]:
        """Raises NotFoundError (the controller has not created it yet)."""

    def set_machine_config_node_status(self, name: str, status: Mapping[str, Any]) -> None:
        """Replace the object's status (its spec is the controller's). Raises NotFoundError."""


@runtime_checkable
class MachineConfigNodes(NodeProgressReports, Protocol):
    """Optional store capability of the controller's store: the MachineConfigNode objects,
    one per node of a pool (spec and owner reference by the controller). Writing them does
    not wake the controller (like events, they report; the nodes they follow are watched)."""

    def list_machine_config_nodes(self) -> list[dict[str, Any]]: ...

    def put_machine_config_node(self, obj: Mapping[str, Any]) -> None:
        """Create the object, or set its metadata.ownerReferences and spec (status kept)."""

    def delete_machine_config_node(self, name: str) -> None:
        """No-op when absent."""


@runtime_checkable
class PodEvictor(Protocol):
    """Optional store capability: evict a cordoned node's pods through the Eviction API.

    Only a store with a scheduler and pods offers it (kube). The local store does not: there a
    drain is a cordon mark. `evict_pods` is one step and never sleeps: it lists the node's pods,
    asks the API to evict those that are due and reports what is left; the caller (the drain
    controller) calls it again after `retry_after` seconds and owns the attempt deadline and the
    retry schedule. Raises StoreError when the API cannot be reached.
    """

    def evict_pods(self, node: str) -> DrainProgress: ...


class Store(NodeAPI, Protocol):
    """The whole port, used by the controller and the server."""

    # Objects (inputs merged with controller-written metadata/status).
    def list_objects(self, kind: str) -> list[dict[str, Any]]: ...

    def get_object(self, kind: str, name: str) -> dict[str, Any]:
        """Raises NotFoundError."""

    def put_object(self, obj: Mapping[str, Any]) -> None:
        """Create or replace a controller-owned object (generated MachineConfigs)."""

    def delete_object(self, kind: str, name: str) -> None: ...

    def set_pool_configuration(self, pool: str, name: str,
                               source: list[dict[str, str]]) -> None:
        """Set the pool's `spec.configuration` (the controller's output for the pool)."""

    def update_status(self, kind: str, name: str, status: Mapping[str, Any]) -> None:
        """Replace an object's `status` (pools, KubeletConfigs, ContainerRuntimeConfigs)."""

    # Rendered MachineConfigs.
    def put_rendered(self, rendered: RenderedConfig) -> None: ...

    def list_rendered(self) -> list[str]: ...

    def delete_rendered(self, name: str) -> None: ...

    # Nodes.
    def list_nodes(self) -> list[NodeRecord]: ...

    def register_node(self, name: str, labels: Mapping[str, str]) -> NodeRecord:
        """Create the record if missing (labels merged if present); returns it."""

    def set_node_labels(self, name: str, changes: Mapping[str, str | None]) -> NodeRecord: ...

    def set_unschedulable(self, name: str, value: bool) -> NodeRecord: ...

    def set_node_taint(self, name: str, key: str, effect: str, present: bool) -> NodeRecord:
        """Add (present) or remove the taint `key` with `effect`; other taints stay."""

    def set_node_ready(self, name: str, value: bool) -> NodeRecord: ...

    def list_events(self, kind: str | None = None, name: str | None = None,
                    since_seq: int = 0) -> list[StoreEvent]: ...

    def revision(self) -> int:
        """A counter that increases on every change (inputs on disk included)."""
