"""The fake API server's state: registered resource types, objects, a global resourceVersion
counter, the retained event history that watches resume from, and the watchers.

Thread-safe: the aiohttp handlers run on the server's event loop, tests may call these methods
from their own thread; every mutation holds `lock` and hands its watch event to each watcher's
queue through `loop.call_soon_threadsafe`, so a watcher sees events (and bookmarks) in
resourceVersion order.
"""
from __future__ import annotations

import asyncio
import copy
import importlib
import re
import threading
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tests.kube.fakeapi.selectors import parse_fields, parse_labels

JSON = dict[str, Any]

# A subresource handler: (state, request, resource type, namespace or "", name) -> response.
SubresourceHandler = Callable[..., Awaitable[Any]]

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class APIError(Exception):
    """Answered as a `kind: Status` body with this code, reason and message."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> JSON:
        body: JSON = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def _get(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, Mapping) else None
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


@dataclass
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    status_subresource: bool = False
    # Field selectors beyond metadata.name / metadata.namespace.
    fields: tuple[str, ...] = ()
    # Status may be set on create (Nodes: yes; custom resources with a status subresource: no).
    status_on_create: bool = False
    # PUT without metadata.resourceVersion is allowed (built-in kinds) or 422 (custom resources).
    unconditional_update: bool = True
    # metadata.generation is kept (custom resources, most apps kinds) or absent (Node, Pod, ...).
    generation: bool = False
    strategic_merge: bool = True  # custom resources answer 415 to strategic merge patches
    crd: JSON | None = None  # the CustomResourceDefinition serving this type
    # What status a new object starts with when it may not bring its own (Pods: Pending).
    initial_status: JSON | None = None
    # DELETE answers the deleted object (Pod, Namespace, CRD...) or a Success Status (most kinds,
    # custom resources included), as the real registry's ReturnDeletedObject decides.
    return_deleted_object: bool = False
    # Kind-specific validation beyond metadata and CRD schemas: the Status causes it finds.
    validator: Callable[[JSON], list[JSON]] | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)

    @property
    def qualified(self) -> str:
        """`nodes`, `machineconfigs.machineconfiguration.openshift.io` (NotFound messages)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def kind_qualified(self) -> str:
        """`Node`, `MachineConfig.machineconfiguration.openshift.io` (Invalid messages)."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def field_getters(self) -> dict[str, Callable[[Mapping[str, Any]], str]]:
        names = ["metadata.name"] + (["metadata.namespace"] if self.namespaced else []) + \
            list(self.fields)
        return {n: (lambda obj, p=n: _get(obj, p)) for n in names}

    def details(self, name: str) -> JSON:
        d: JSON = {"name": name, "kind": self.plural}
        if self.group:
            d["group"] = self.group
        return d


@dataclass(eq=False)
class Watcher:
    rtype: ResourceType
    namespace: str
    labels: list[Callable[[Mapping[str, str]], bool]]
    fields: list[Callable[[Mapping[str, Any]], bool]]
    queue: asyncio.Queue[JSON | None]
    loop: asyncio.AbstractEventLoop

    def matches(self, obj: JSON | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        return all(r(labels) for r in self.labels) and all(r(obj) for r in self.fields)


@dataclass
class HistoryEvent:
    rv: int
    key: tuple[str, str, str]
    type: str  # ADDED, MODIFIED, DELETED
    old: JSON | None
    new: JSON


def _strip_status(obj: JSON) -> None:
    obj.pop("status", None)


class State:
    """Everything the fake serves. `history_limit` is how many events (of all types, like an
    etcd compaction window) a watch can resume across; `compact()` drops them all."""

    def __init__(self, history_limit: int = 10_000, bookmark_interval: float = 1.0) -> None:
        self.lock = threading.RLock()
        self.rv = 1
        self.history_limit = history_limit
        self.bookmark_interval = bookmark_interval
        self.history: deque[HistoryEvent] = deque()
        self.compacted = 0  # events with rv <= compacted are gone
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.objects: dict[tuple[str, str, str], dict[tuple[str, str], JSON]] = {}
        self.watchers: list[Watcher] = []
        self.active_watches: set[Watcher] = set()  # open watch streams (closed on stop)
        # Paged lists: continue token -> (the remaining items, the list's resourceVersion).
        self.continued: dict[str, tuple[list[JSON], int]] = {}
        self.subresources: dict[tuple[str, str, str, str], SubresourceHandler] = {}
        # Every request seen, as (method, path, query string): tests assert on what was called.
        self.requests: list[tuple[str, str, str]] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    # ----- types

    def register_type(self, rtype: ResourceType) -> ResourceType:
        with self.lock:
            self.types[rtype.key] = rtype
            self.objects.setdefault(rtype.key, {})
        return rtype

    def unregister_type(self, key: tuple[str, str, str]) -> None:
        with self.lock:
            self.types.pop(key, None)
            self.objects.pop(key, None)

    def resource(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get((group, version, plural))

    def find_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for t in self.types.values():
            if t.api_version == api_version and t.kind == kind:
                return t
        return None

    def register_subresource(self, group: str, version: str, plural: str, name: str,
                             handler: SubresourceHandler) -> None:
        """Serve `.../<plural>/<name>/<subresource>` (any method) with `handler`:
        `async handler(state, request, rtype, namespace, name) -> aiohttp.web.StreamResponse`.
        Raise APIError for a Status answer."""
        self.subresources[(group, version, plural, name)] = handler

    # ----- objects

    def _store(self, rtype: ResourceType) -> dict[tuple[str, str], JSON]:
        store = self.objects.get(rtype.key)
        if store is None:
            raise APIError(404, "NotFound", "the server could not find the requested resource")
        return store

    def get(self, rtype: ResourceType, namespace: str, name: str) -> JSON:
        with self.lock:
            obj = self._store(rtype).get((namespace, name))
            if obj is None:
                raise APIError(404, "NotFound", f'{rtype.qualified} "{name}" not found',
                               rtype.details(name))
            return copy.deepcopy(obj)

    def list(self, rtype: ResourceType, namespace: str = "", label_selector: str = "",
             field_selector: str = "") -> tuple[list[JSON], int]:
        labels = parse_labels(label_selector)
        fields = parse_fields(field_selector, rtype.field_getters())
        with self.lock:
            items = []
            for (ns, _), obj in sorted(self._store(rtype).items()):
                if namespace and ns != namespace:
                    continue
                obj_labels = (obj.get("metadata") or {}).get("labels") or {}
                if all(r(obj_labels) for r in labels) and all(r(obj) for r in fields):
                    items.append(copy.deepcopy(obj))
            return items, self.rv

    def _check_namespace(self, rtype: ResourceType, namespace: str) -> None:
        if not rtype.namespaced:
            return
        ns_type = self.types.get(("", "v1", "namespaces"))
        if ns_type is not None and ("", namespace) not in self.objects[ns_type.key]:
            raise APIError(404, "NotFound", f'namespaces "{namespace}" not found',
                           {"name": namespace, "kind": "namespaces"})

    def _validate_meta(self, rtype: ResourceType, obj: JSON, name: str) -> None:
        if not name or not DNS_SUBDOMAIN.match(name) or len(name) > 253:
            cause = {"reason": "FieldValueInvalid",
                     "message": f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must '
                                "consist of lower case alphanumeric characters, '-' or '.', and "
                                "must start and end with an alphanumeric character",
                     "field": "metadata.name"}
            if not name:
                cause = {"reason": "FieldValueRequired", "message": "Required value: name or "
                         "generateName is required", "field": "metadata.name"}
            raise self.invalid(rtype, name, [cause])
        self.validate_custom(rtype, obj, name)
        if rtype.validator is not None:
            causes = rtype.validator(obj)
            if causes:
                raise self.invalid(rtype, name, causes)

    def invalid(self, rtype: ResourceType, name: str, causes: list[JSON]) -> APIError:
        text = ", ".join(f"{c.get('field')}: {c.get('message')}" if c.get("field")
                         else str(c.get("message")) for c in causes)
        details = {"name": name, "kind": rtype.kind, "causes": causes}
        if rtype.group:
            details["group"] = rtype.group
        module = crdschema() if rtype.crd is not None else None
        if module is not None and hasattr(module, "invalid_message"):
            return APIError(422, "Invalid", module.invalid_message(rtype.crd, name, causes), details)
        return APIError(422, "Invalid", f'{rtype.kind_qualified} "{name}" is invalid: [{text}]'
                        if len(causes) > 1 else f'{rtype.kind_qualified} "{name}" is invalid: {text}',
                        details)

    def validate_custom(self, rtype: ResourceType, obj: JSON, name: str) -> None:
        """Custom resources against their CRD's schema, when tests/kube/crdschema.py exists."""
        if rtype.crd is None:
            return
        module = crdschema()
        if module is None:
            return
        causes = module.validate(rtype.crd, obj)
        if causes:
            raise self.invalid(rtype, name, list(causes))

    def _commit(self, rtype: ResourceType, etype: str, old: JSON | None, new: JSON) -> None:
        """Record one change (lock held): history, then each matching watcher's queue."""
        event = HistoryEvent(self.rv, rtype.key, etype, copy.deepcopy(old), copy.deepcopy(new))
        self.history.append(event)
        while len(self.history) > self.history_limit:
            self.compacted = self.history.popleft().rv
        for w in self.watchers:
            if w.rtype.key == rtype.key:
                out = watch_event(w, event)
                if out is not None:
                    w.loop.call_soon_threadsafe(w.queue.put_nowait, out)

    def create(self, rtype: ResourceType, namespace: str, obj: JSON) -> JSON:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise APIError(400, "BadRequest", "metadata must be an object")
        with self.lock:
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
            name = str(meta.get("name") or "")
            if rtype.namespaced:
                meta["namespace"] = namespace
            self._validate_meta(rtype, obj, name)
            self._check_namespace(rtype, namespace)
            store = self._store(rtype)
            if (namespace, name) in store:
                raise APIError(409, "AlreadyExists", f'{rtype.qualified} "{name}" already exists',
                               rtype.details(name))
            if rtype.status_subresource and not rtype.status_on_create:
                _strip_status(obj)
            if rtype.initial_status is not None:
                obj["status"] = copy.deepcopy(rtype.initial_status)
            self.rv += 1
            obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), resourceVersion=str(self.rv))
            meta.pop("deletionTimestamp", None)
            if rtype.namespaced:
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            if rtype.generation:
                meta["generation"] = 1
            else:
                meta.pop("generation", None)
            store[(namespace, name)] = obj
            self._commit(rtype, "ADDED", None, obj)
            return copy.deepcopy(obj)

    def update(self, rtype: ResourceType, namespace: str, name: str, obj: JSON,
               subresource: str = "") -> JSON:
        """PUT semantics: optimistic concurrency on metadata.resourceVersion, status only through
        the status subresource, system metadata kept."""
        obj = copy.deepcopy(obj)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            raise APIError(400, "BadRequest", "metadata must be an object")
        if meta.get("name") not in (None, name):
            raise APIError(400, "BadRequest", f"the name of the object ({meta.get('name')}) does "
                           f"not match the name on the URL ({name})")
        with self.lock:
            store = self._store(rtype)
            old = store.get((namespace, name))
            if old is None:
                raise APIError(404, "NotFound", f'{rtype.qualified} "{name}" not found',
                               rtype.details(name))
            given = meta.get("resourceVersion")
            if given in (None, ""):
                if not rtype.unconditional_update:
                    raise self.invalid(rtype, name, [{
                        "reason": "FieldValueInvalid",
                        "message": "Invalid value: 0x0: must be specified for an update",
                        "field": "metadata.resourceVersion"}])
            elif str(given) != old["metadata"]["resourceVersion"]:
                raise APIError(409, "Conflict", f'Operation cannot be fulfilled on {rtype.qualified} '
                               f'"{name}": the object has been modified; please apply your changes '
                               "to the latest version and try again", rtype.details(name))
            new = copy.deepcopy(old)
            if subresource == "status":
                new["status"] = copy.deepcopy(obj.get("status"))
                if new["status"] is None:
                    new.pop("status")
            else:
                for key, value in obj.items():
                    if key in ("metadata", "apiVersion", "kind"):
                        continue
                    if key == "status" and rtype.status_subresource:
                        continue
                    new[key] = copy.deepcopy(value)
                for key in list(new):
                    if key not in obj and key not in ("metadata", "apiVersion", "kind") and not (
                            key == "status" and rtype.status_subresource):
                        del new[key]
                for key in ("labels", "annotations", "finalizers", "ownerReferences"):
                    if key in meta:
                        new["metadata"][key] = copy.deepcopy(meta[key])
                    else:
                        new["metadata"].pop(key, None)
            self._validate_meta(rtype, new, name)
            if _without_rv(new) == _without_rv(old):
                return copy.deepcopy(old)  # a no-op write keeps the resourceVersion, as the real one
            if rtype.generation and subresource != "status" and _spec_changed(old, new):
                new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1
            self.rv += 1
            new["metadata"]["resourceVersion"] = str(self.rv)
            store[(namespace, name)] = new
            self._commit(rtype, "MODIFIED", old, new)
            return copy.deepcopy(new)

    def delete(self, rtype: ResourceType, namespace: str, name: str) -> JSON:
        with self.lock:
            store = self._store(rtype)
            old = store.pop((namespace, name), None)
            if old is None:
                raise APIError(404, "NotFound", f'{rtype.qualified} "{name}" not found',
                               rtype.details(name))
            self.rv += 1
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(self.rv)
            self._commit(rtype, "DELETED", old, gone)
            return gone

    # ----- watch

    def compact(self) -> None:
        """Forget every retained event: a watch from any older resourceVersion gets 410 Expired."""
        with self.lock:
            self.history.clear()
            self.compacted = self.rv

    def add_watcher(self, watcher: Watcher, since: int | None) -> None:
        """Register `watcher`, first queuing what it must see: everything after `since`, or
        (since None) an ADDED event per existing object. Raises APIError 410 when `since` is
        older than the retained history."""
        with self.lock:
            if since is None:
                for (ns, _), obj in sorted(self._store(watcher.rtype).items()):
                    if watcher.matches(obj):
                        watcher.queue.put_nowait({"type": "ADDED", "object": copy.deepcopy(obj)})
            else:
                if since < self.compacted:
                    raise APIError(410, "Expired", f"too old resource version: {since} "
                                   f"({self.compacted + 1})")
                for event in self.history:
                    if event.rv > since and event.key == watcher.rtype.key:
                        out = watch_event(watcher, event)
                        if out is not None:
                            watcher.queue.put_nowait(out)
            self.watchers.append(watcher)

    def remove_watcher(self, watcher: Watcher) -> None:
        with self.lock:
            if watcher in self.watchers:
                self.watchers.remove(watcher)

    def bookmark(self, watcher: Watcher) -> None:
        """Queue a BOOKMARK at the current resourceVersion behind every event already queued."""
        with self.lock:
            rt = watcher.rtype
            event = {"type": "BOOKMARK", "object": {
                "kind": rt.kind, "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self.rv)}}}
            watcher.loop.call_soon_threadsafe(watcher.queue.put_nowait, event)


def watch_event(watcher: Watcher, event: HistoryEvent) -> JSON | None:
    """What `watcher` sees of `event`: objects entering its selection are ADDED, leaving it
    DELETED, staying MODIFIED; None when it sees nothing."""
    was = watcher.matches(event.old) if event.type != "ADDED" else False
    now_ = watcher.matches(event.new) if event.type != "DELETED" else False
    if event.type == "DELETED":
        return {"type": "DELETED", "object": copy.deepcopy(event.new)} if was else None
    if was and now_:
        return {"type": "MODIFIED", "object": copy.deepcopy(event.new)}
    if now_:
        return {"type": "ADDED", "object": copy.deepcopy(event.new)}
    if was:
        # Like the watch cache: the previous content, at the event's resourceVersion.
        gone = copy.deepcopy(event.old)
        assert gone is not None
        gone["metadata"]["resourceVersion"] = str(event.rv)
        return {"type": "DELETED", "object": gone}
    return None


def _without_rv(obj: JSON) -> JSON:
    out = copy.deepcopy(obj)
    out["metadata"].pop("resourceVersion", None)
    return out


def _spec_changed(old: JSON, new: JSON) -> bool:
    skip = ("metadata", "status", "apiVersion", "kind")
    return {k: v for k, v in old.items() if k not in skip} != \
        {k: v for k, v in new.items() if k not in skip}


def crdschema() -> Any:
    """tests/kube/crdschema.py (another helper's structural-schema validator), or None."""
    try:
        return importlib.import_module("tests.kube.crdschema")
    except ModuleNotFoundError as e:
        if e.name != "tests.kube.crdschema":
            raise
        return None


def validate_event(event: JSON) -> list[JSON]:
    """core/v1 Events without eventTime (the legacy recorder's): an event about a cluster-scoped
    object lives in `default`, one about a namespaced object in that object's namespace."""
    if event.get("eventTime"):
        return []
    involved = event.get("involvedObject") or {}
    namespace = (event.get("metadata") or {}).get("namespace", "")
    want = involved.get("namespace") or ""
    if (not want and namespace not in ("", "default")) or (want and namespace != want):
        return [{"reason": "FieldValueInvalid", "field": "involvedObject.namespace",
                 "message": f'Invalid value: "{want}": does not match event.namespace'}]
    return []


def builtin_types() -> list[ResourceType]:
    return [
        ResourceType("", "v1", "Namespace", "namespaces", False, status_subresource=True,
                     fields=("status.phase",), status_on_create=True, return_deleted_object=True),
        ResourceType("", "v1", "Node", "nodes", False, status_subresource=True,
                     fields=("spec.unschedulable",), status_on_create=True),
        ResourceType("", "v1", "Pod", "pods", True, status_subresource=True,
                     fields=("spec.nodeName", "status.phase", "spec.schedulerName",
                             "spec.serviceAccountName", "status.podIP", "status.nominatedNodeName"),
                     initial_status={"phase": "Pending", "qosClass": "BestEffort"},
                     return_deleted_object=True),
        ResourceType("", "v1", "Secret", "secrets", True, fields=("type",)),
        ResourceType("", "v1", "ConfigMap", "configmaps", True),
        ResourceType("", "v1", "Event", "events", True,
                     fields=("involvedObject.kind", "involvedObject.namespace",
                             "involvedObject.name", "involvedObject.uid",
                             "involvedObject.apiVersion", "involvedObject.resourceVersion",
                             "involvedObject.fieldPath", "reason", "reportingComponent", "source",
                             "type"), validator=validate_event),
        ResourceType("", "v1", "ServiceAccount", "serviceaccounts", True),
        ResourceType("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True,
                     status_subresource=True, generation=True),
        ResourceType("apps", "v1", "DaemonSet", "daemonsets", True, status_subresource=True,
                     generation=True),
        ResourceType("apiextensions.k8s.io", "v1", "CustomResourceDefinition",
                     "customresourcedefinitions", False, status_subresource=True, generation=True,
                     return_deleted_object=True),
    ]
