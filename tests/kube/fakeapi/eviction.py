"""The Eviction subresource (`POST /api/v1/namespaces/<ns>/pods/<name>/eviction`) on the fake,
answered the way kube-apiserver's EvictionREST does, plus the part of the disruption controller
that keeps PodDisruptionBudget status current.

kube-apiserver, in order:

1. body: a policy/v1 (or v1beta1) Eviction whose metadata.name equals the pod in the URL
   (400 "name in URL does not match name in Eviction object" otherwise);
2. the pod: 404 `pods "<name>" not found` when missing;
3. a pod that is Pending, Succeeded, Failed or already being deleted is deleted without looking at
   budgets: 201;
4. the budgets in the pod's namespace whose (non-empty) selector matches the pod's labels: more
   than one → a Status with code 500 "This pod has more than one PodDisruptionBudget, which the
   eviction subresource does not support." - answered with HTTP 201 and that Failure Status in
   the body (the REST handler returns it as the created object; client-go makes it an error);
   none → delete, 201;
5. one budget: a pod that is not Ready is deleted without spending the allowance when the budget
   is satisfied without it, or always under `unhealthyPodEvictionPolicy: AlwaysAllow`; otherwise
   - `status.observedGeneration < metadata.generation` (the disruption controller has not seen
     the latest spec): 429 TooManyRequests, `Retry-After: 10`, cause DisruptionBudget "The
     disruption budget <name> is still being processed by the server.";
   - `status.disruptionsAllowed == 0`: 429 TooManyRequests "Cannot evict pod as it would violate
     the pod's disruption budget.", cause DisruptionBudget "The disruption budget <name> needs
     <desiredHealthy> healthy pods and has <currentHealthy> currently", and no Retry-After;
   - else the allowance is decremented (the pod recorded in `status.disruptedPods`), the pod
     deleted: 201 with a Status `{"status": "Success", "code": 201}`.

The disruption controller is modelled as instantaneous: before each eviction the matching
budget's status is recomputed from the pods (`reconcile_budget`), unless `Eviction.paused` is set,
in which case the stored status is used as is (a test can then write a stale status, e.g. an old
`observedGeneration`). expectedPods is the `spec.replicas` of the pods' controllers (ReplicaSet,
StatefulSet, ReplicationController objects in the fake) when a budget uses a percentage or
maxUnavailable, and the number of matching pods for an integer minAvailable, as upstream.

Test knobs: `retry_after` adds a `Retry-After` header (and details.retryAfterSeconds) to the
budget-exhausted 429, which kube-apiserver itself leaves out, so clients can be tested with and
without it; `graceful` makes an accepted eviction set `metadata.deletionTimestamp` and keep the pod
until `finish_deletions()` (a pod's termination grace period) instead of deleting it at once;
`latency` delays each answer (a remote API server, for bench/drain.py).
"""
from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.kube.fakeapi.app import json_response, read_body
from tests.kube.fakeapi.selectors import parse_labels
from tests.kube.fakeapi.state import JSON, APIError, ResourceType, State, now

DISRUPTION_BUDGET_CAUSE = "DisruptionBudget"
VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."
MULTIPLE_BUDGETS = ("This pod has more than one PodDisruptionBudget, which the eviction "
                    "subresource does not support.")
PENDING_RETRY_SECONDS = 10  # kube-apiserver's Retry-After while a budget is being processed

PODS = ("", "v1", "pods")
BUDGETS = ("policy", "v1", "poddisruptionbudgets")
SCALED = {"ReplicaSet": ("apps", "v1", "replicasets"),
          "StatefulSet": ("apps", "v1", "statefulsets"),
          "ReplicationController": ("", "v1", "replicationcontrollers")}


@dataclass
class Eviction:
    """The subresource's settings and what it answered (for assertions)."""

    retry_after: int | None = None
    graceful: bool = False
    paused: bool = False
    latency: float = 0.0  # seconds each eviction request takes (benchmarks: a remote API server)
    # (namespace/name, HTTP code) of every eviction request, in order.
    answered: list[tuple[str, int]] = field(default_factory=list)
    state: State | None = None

    def finish_deletions(self) -> list[str]:
        """Remove every pod that is being deleted (their grace periods ended); returns them."""
        assert self.state is not None
        rtype = _rtype(self.state, PODS)
        gone = []
        for pod in self.state.list(rtype)[0]:
            meta = pod["metadata"]
            if meta.get("deletionTimestamp"):
                self.state.delete(rtype, meta["namespace"], meta["name"])
                gone.append(f"{meta['namespace']}/{meta['name']}")
        return gone


def install(state: State, eviction: Eviction | None = None) -> Eviction:
    """Serve pods/<name>/eviction on `state`; registers the scaled kinds the budgets read."""
    ev = eviction or Eviction()
    ev.state = state
    for kind, (group, version, plural) in SCALED.items():
        if state.resource(group, version, plural) is None:
            state.register_type(ResourceType(group, version, kind, plural, True,
                                              status_subresource=True, generation=True))

    async def handler(state: State, request: web.Request, rtype: ResourceType, namespace: str,
                      name: str) -> web.StreamResponse:
        key = f"{namespace}/{name}"
        if ev.latency:
            await asyncio.sleep(ev.latency)
        try:
            response = await _evict(ev, state, request, rtype, namespace, name)
        except APIError as e:
            ev.answered.append((key, e.code))
            raise
        ev.answered.append((key, response.status))
        return response

    state.register_subresource(*PODS, "eviction", handler)
    return ev


def _rtype(state: State, key: tuple[str, str, str]) -> ResourceType:
    rtype = state.resource(*key)
    assert rtype is not None, f"the fake has no {key} type"
    return rtype


def _success() -> web.Response:
    return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                          "status": "Success", "code": 201}, 201)


def too_many_requests(message: str, cause: str, retry_after: int | None) -> web.Response:
    details: JSON = {"causes": [{"reason": DISRUPTION_BUDGET_CAUSE, "message": cause}]}
    headers = {}
    if retry_after:
        details["retryAfterSeconds"] = retry_after
        headers["Retry-After"] = str(retry_after)
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": "TooManyRequests", "details": details, "code": 429}
    return json_response(body, 429, headers)


async def _evict(ev: Eviction, state: State, request: web.Request, rtype: ResourceType,
                 namespace: str, name: str) -> web.Response:
    if request.method != "POST":
        raise APIError(405, "MethodNotAllowed",
                       "the server does not allow this method on the requested resource")
    body = await read_body(request)
    if not isinstance(body, dict):
        raise APIError(400, "BadRequest", "the object provided is not a JSON object")
    if body.get("kind") not in (None, "Eviction") or body.get("apiVersion") not in (
            None, "policy/v1", "policy/v1beta1"):
        raise APIError(400, "BadRequest", f"not a Eviction object: {body.get('apiVersion')}, "
                       f"Kind={body.get('kind')}")
    if (body.get("metadata") or {}).get("name") != name:
        raise APIError(400, "BadRequest", "name in URL does not match name in Eviction object")
    with state.lock:
        pod = state.get(rtype, namespace, name)  # 404 pods "<name>" not found
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Pending", "Succeeded", "Failed") or pod["metadata"].get("deletionTimestamp"):
            _delete_pod(ev, state, rtype, pod)
            return _success()
        budgets = matching_budgets(state, pod)
        if len(budgets) > 1:
            return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                  "status": "Failure", "message": MULTIPLE_BUDGETS, "code": 500},
                                 201)
        if not budgets:
            _delete_pod(ev, state, rtype, pod)
            return _success()
        pdb = budgets[0]
        if not ev.paused:
            pdb = reconcile_budget(state, pdb)
        pdb_name = pdb["metadata"]["name"]
        status = pdb.get("status") or {}
        if not is_ready(pod) and (
                (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy") == "AlwaysAllow" or (
                    status.get("currentHealthy", 0) >= status.get("desiredHealthy", 0)
                    and status.get("desiredHealthy", 0) > 0)):
            _delete_pod(ev, state, rtype, pod)
            return _success()
        if int(status.get("observedGeneration") or 0) < int(
                pdb["metadata"].get("generation") or 0):
            return too_many_requests(
                VIOLATION, f"The disruption budget {pdb_name} is still being processed by the "
                "server.", PENDING_RETRY_SECONDS)
        allowed = int(status.get("disruptionsAllowed") or 0)
        if allowed < 0:
            raise APIError(403, "Forbidden", f'poddisruptionbudgets.policy "{pdb_name}" is '
                           "forbidden: pdb disruptions allowed is negative",
                           {"name": pdb_name, "group": "policy", "kind": "poddisruptionbudgets"})
        if allowed == 0:
            return too_many_requests(
                VIOLATION, f"The disruption budget {pdb_name} needs "
                f"{status.get('desiredHealthy', 0)} healthy pods and has "
                f"{status.get('currentHealthy', 0)} currently", ev.retry_after)
        new_status = copy.deepcopy(status)
        new_status["disruptionsAllowed"] = allowed - 1
        new_status.setdefault("disruptedPods", {})[name] = now()
        pdb = copy.deepcopy(pdb)
        pdb["status"] = new_status
        state.update(_rtype(state, BUDGETS), namespace, pdb_name, pdb, subresource="status")
        _delete_pod(ev, state, rtype, pod)
        return _success()


def _delete_pod(ev: Eviction, state: State, rtype: ResourceType, pod: JSON) -> None:
    meta = pod["metadata"]
    if not ev.graceful:
        state.delete(rtype, meta["namespace"], meta["name"])
        return
    if meta.get("deletionTimestamp"):
        return
    # A graceful delete: the object stays, marked, until its grace period ends.
    with state.lock:
        store = state.objects[rtype.key]
        old = store[(meta["namespace"], meta["name"])]
        new = copy.deepcopy(old)
        new["metadata"]["deletionTimestamp"] = now()
        new["metadata"]["deletionGracePeriodSeconds"] = int(
            (pod.get("spec") or {}).get("terminationGracePeriodSeconds") or 30)
        state.rv += 1
        new["metadata"]["resourceVersion"] = str(state.rv)
        store[(meta["namespace"], meta["name"])] = new
        state._commit(rtype, "MODIFIED", old, new)


def is_ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _selector_text(selector: Mapping[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def selects(pdb: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    """The budget's selector matches the pod; an empty or missing selector matches nothing."""
    text = _selector_text((pdb.get("spec") or {}).get("selector") or {})
    if not text:
        return False
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return all(req(labels) for req in parse_labels(text))


def matching_budgets(state: State, pod: Mapping[str, Any]) -> list[JSON]:
    namespace = pod["metadata"]["namespace"]
    return [p for p in state.list(_rtype(state, BUDGETS), namespace)[0] if selects(p, pod)]


def _scaled(value: Any, total: int) -> int:
    """An IntOrString against `total` (percentages round up, as the disruption controller)."""
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * total / 100)
    return int(value)


def _expected_from_controllers(state: State, pods: list[JSON]) -> int | None:
    """Sum of the replicas of the pods' controllers; None when a pod has none the fake knows."""
    seen: dict[tuple[str, str, str], int] = {}
    for pod in pods:
        meta = pod["metadata"]
        ref = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
        if ref is None or ref.get("kind") not in SCALED:
            return None
        rtype = state.resource(*SCALED[ref["kind"]])
        if rtype is None:
            return None
        key = (ref["kind"], meta["namespace"], ref.get("name", ""))
        if key in seen:
            continue
        try:
            owner = state.get(rtype, meta["namespace"], ref.get("name", ""))
        except APIError:
            return None
        replicas = (owner.get("spec") or {}).get("replicas")
        seen[key] = 1 if replicas is None else int(replicas)
    return sum(seen.values())


def budget_status(state: State, pdb: Mapping[str, Any]) -> JSON:
    """What the disruption controller would write into the budget's status now."""
    namespace = pdb["metadata"]["namespace"]
    pods = [p for p in state.list(_rtype(state, PODS), namespace)[0] if selects(pdb, p)
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    healthy = sum(1 for p in pods if is_ready(p) and not p["metadata"].get("deletionTimestamp"))
    spec = pdb.get("spec") or {}
    min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")
    expected: int | None
    if isinstance(min_available, int):
        expected, desired = len(pods), min_available
    else:
        expected = _expected_from_controllers(state, pods) if pods else 0
        if expected is None:  # upstream: "found no controllers", nothing may be disrupted
            expected, desired = 0, 0
        elif min_available is not None:
            desired = _scaled(min_available, expected)
        elif max_unavailable is not None:
            desired = max(0, expected - _scaled(max_unavailable, expected))
        else:
            desired = 0
    allowed = healthy - desired
    if expected <= 0 or allowed <= 0:
        allowed = 0
    old = dict(pdb.get("status") or {})
    status: JSON = {"observedGeneration": int(pdb["metadata"].get("generation") or 1),
                    "disruptionsAllowed": allowed, "currentHealthy": healthy,
                    "desiredHealthy": desired, "expectedPods": expected}
    cond_status = "True" if allowed > 0 else "False"
    reason = "SufficientPods" if allowed > 0 else "InsufficientPods"
    previous = next((c for c in old.get("conditions") or [] if c.get("type") == "DisruptionAllowed"),
                    None)
    when = previous.get("lastTransitionTime") if previous and previous.get(
        "status") == cond_status else now()
    status["conditions"] = [{"type": "DisruptionAllowed", "status": cond_status, "reason": reason,
                             "message": "", "observedGeneration": status["observedGeneration"],
                             "lastTransitionTime": when}]
    return status


def reconcile_budget(state: State, pdb: JSON) -> JSON:
    """Write the budget's current status (like the disruption controller) and return the budget."""
    status = budget_status(state, pdb)
    if status == pdb.get("status"):
        return pdb
    new = copy.deepcopy(pdb)
    new["status"] = status
    return state.update(_rtype(state, BUDGETS), pdb["metadata"]["namespace"],
                        pdb["metadata"]["name"], new, subresource="status")


# ----- building a node's workload in tests (through State, like a scheduler and kubelet would)

def add_pod(state: State, name: str, node: str, namespace: str = "default",
            labels: Mapping[str, str] | None = None, owner: tuple[str, str] | None = None,
            annotations: Mapping[str, str] | None = None, phase: str = "Running",
            ready: bool = True, volumes: list[JSON] | None = None) -> JSON:
    """A pod bound to `node` whose kubelet reports `phase` (Ready when `ready`). `owner` is the
    controller (kind, name): ("ReplicaSet", "web"), ("DaemonSet", "agent"), ..."""
    pods = _rtype(state, PODS)
    meta: JSON = {"name": name, "labels": dict(labels or {})}
    if annotations:
        meta["annotations"] = dict(annotations)
    if owner is not None:
        kind, owner_name = owner
        api_version = "v1" if kind == "ReplicationController" else "apps/v1"
        meta["ownerReferences"] = [{"apiVersion": api_version, "kind": kind, "name": owner_name,
                                    "uid": f"uid-{kind.lower()}-{owner_name}",
                                    "controller": True, "blockOwnerDeletion": True}]
    spec: JSON = {"nodeName": node, "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}]}
    if volumes:
        spec["volumes"] = volumes
    pod = state.create(pods, namespace, {"metadata": meta, "spec": spec})
    pod["status"] = {"phase": phase, "conditions": [
        {"type": "Ready", "status": "True" if ready and phase == "Running" else "False"}]}
    return state.update(pods, namespace, name, pod, subresource="status")


def add_replicaset(state: State, name: str, replicas: int, namespace: str = "default") -> JSON:
    rtype = _rtype(state, SCALED["ReplicaSet"])
    return state.create(rtype, namespace, {"metadata": {"name": name},
                                           "spec": {"replicas": replicas}})


def add_budget(state: State, name: str, selector: Mapping[str, str], namespace: str = "default",
               min_available: int | str | None = None,
               max_unavailable: int | str | None = None,
               unhealthy_pod_eviction_policy: str | None = None) -> JSON:
    spec: JSON = {"selector": {"matchLabels": dict(selector)}}
    if unhealthy_pod_eviction_policy is not None:
        spec["unhealthyPodEvictionPolicy"] = unhealthy_pod_eviction_policy
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    pdb = state.create(_rtype(state, BUDGETS), namespace, {"metadata": {"name": name},
                                                          "spec": spec})
    return reconcile_budget(state, pdb)


def node_pods(state: State, node: str) -> list[str]:
    """namespace/name of the pods bound to `node`, sorted."""
    pods, _ = state.list(_rtype(state, PODS), field_selector=f"spec.nodeName={node}")
    return sorted(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods)
