"""Evicting a cordoned node's pods through the Kubernetes Eviction API (policy/v1), one step at a time.

What a drain moves, as MCO's drain helper does it (Force, IgnoreAllDaemonSets, DeleteEmptyDirData,
the pod's own grace period): every pod bound to the node (`fieldSelector=spec.nodeName=<node>`)
except

- pods whose controller is a DaemonSet (the DaemonSet would put them straight back, and they
  tolerate the cordon),
- mirror pods (annotation `kubernetes.io/config.mirror`: static pods the kubelet runs from files;
  the API copy cannot be evicted),
- pods that already finished (phase Succeeded or Failed: they hold nothing a reboot could disrupt).

Pods with emptyDir volumes and pods without a controller are evicted too. Each eviction is a
`POST /api/v1/namespaces/<ns>/pods/<name>/eviction`; the API server answers

- 201: accepted; the pod is deleted (at once, or after its grace period: we wait until it is gone,
  or until a pod of the same name with another UID shows that the old one went);
- 404: the pod is gone already;
- 429 TooManyRequests: a PodDisruptionBudget does not allow the disruption now. The budget is named
  in the Status's `details.causes` (reason `DisruptionBudget`); we try that pod again after the
  response's Retry-After header, or after 5 s when there is none;
- anything else (500 for a pod under two budgets, 403 for a budget with a negative allowance):
  the pod is reported with the API's message and tried again after 5 s.

Why a step function and not a blocking loop or a thread per node: the controller drives every node
from one loop, and a drain can take an hour. `KubeDrainer.evict_pods(node)` never sleeps; it makes
one list call plus one POST per pod that is due (up to 8 in flight at once, as kubectl
evicts in parallel), remembers per pod when it may be tried again (and which evictions were
accepted), and returns a `DrainProgress` saying what still blocks
the node and after how many seconds the next step is worth taking. So a blocked node costs the
loop two short requests per step and never delays another node's drain; there is no locking
around the drain state (the eviction threads only make requests; the step itself updates the
state when they are back); a restarted controller loses nothing that matters (the cordon
and the pods are in the API, the per-pod retry times are only an optimisation); and tests drive
time through the injected clock instead of sleeping. The attempt deadline (90 s) and MCO's retry
schedule belong to the caller, `mcc.drain_controller`, which owns the drain request.
"""
from __future__ import annotations

import email.utils
import logging
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from machineconfig.store.base import Blocker, DrainProgress, StoreError

log = logging.getLogger(__name__)

MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
DISRUPTION_BUDGET_CAUSE = "DisruptionBudget"
# kubectl drain's EvictErrorRetryDelay, and MCO's: a refused eviction is tried again after this
# many seconds when the response carries no Retry-After.
DEFAULT_RETRY_AFTER = 5.0
# How often to look again while accepted evictions finish (kubectl's wait-for-delete interval).
DELETE_POLL_INTERVAL = 1.0
# Eviction requests in flight at once within one step.
EVICTION_CONCURRENCY = 8
WAITING_FOR_DELETION = "eviction accepted, waiting for the pod to go"
BEING_DELETED = "being deleted"

_BUDGET_NAME = re.compile(r"^The disruption budget (\S+) ")

JSON = dict[str, Any]


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def skip_reason(pod: Mapping[str, Any]) -> str:
    """Why a drain leaves this pod where it is ("" when it must be evicted)."""
    meta = pod.get("metadata") or {}
    if MIRROR_POD_ANNOTATION in (meta.get("annotations") or {}):
        return "mirror pod"
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "DaemonSet":
            return "DaemonSet-managed"
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        return f"finished ({phase})"
    return ""


def parse_retry_after(value: str | None, now_wall: Callable[[], float] = time.time) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or
    unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_wall())


def refusal_blocker(pod: str, status: Mapping[str, Any]) -> Blocker:
    """The Blocker for a refused eviction, from the API's Status: the DisruptionBudget cause names
    the budget (in the pod's namespace: the Eviction API only weighs budgets there)."""
    namespace = pod.split("/", 1)[0]
    details = status.get("details") or {}
    for cause in details.get("causes") or []:
        if cause.get("reason") != DISRUPTION_BUDGET_CAUSE:
            continue
        message = str(cause.get("message") or "")
        found = _BUDGET_NAME.match(message)
        budget = f"{namespace}/{found.group(1)}" if found else ""
        return Blocker(pod, budget, message or str(status.get("message") or ""))
    return Blocker(pod, "", str(status.get("message") or f"HTTP {status.get('code')}"))


@dataclass
class _NodeState:
    not_before: dict[str, float] = field(default_factory=dict)  # pod -> next eviction try
    refused: dict[str, Blocker] = field(default_factory=dict)  # pod -> why it was refused
    evicted: dict[str, str] = field(default_factory=dict)  # pod -> UID whose eviction was accepted


@dataclass(frozen=True)
class EvictionResult:
    """One POST .../eviction: accepted, gone (404), or refused with a Blocker and a delay."""

    accepted: bool = False
    gone: bool = False
    blocker: Blocker | None = None
    retry_after: float = DEFAULT_RETRY_AFTER


class KubeApi:
    """The two calls a drain needs, over a lightkube Client (kept apart so the step logic reads
    plainly and the client's version differences stay here)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def list_node_pods(self, node: str) -> list[JSON]:
        from lightkube.resources.core_v1 import Pod
        try:
            return [_to_dict(p) for p in self.client.list(
                Pod, namespace="*", fields={"spec.nodeName": node})]
        except Exception as e:  # noqa: BLE001 - lightkube raises httpx errors; translated here
            raise _store_error(f"list pods on node {node}", e) from e

    def evict(self, namespace: str, name: str) -> EvictionResult:
        from lightkube.core.exceptions import ApiError
        from lightkube.models.meta_v1 import ObjectMeta
        from lightkube.resources.core_v1 import Pod
        eviction = Pod.Eviction(metadata=ObjectMeta(name=name, namespace=namespace))
        key = f"{namespace}/{name}"
        try:
            answer = self._post(eviction, name, namespace)
        except ApiError as e:
            status = _status_dict(e)
            code = int(status.get("code") or e.response.status_code)
            if code == 404:
                return EvictionResult(gone=True)
            delay = parse_retry_after(e.response.headers.get("Retry-After"))
            if delay is None and code == 429:
                seconds = (status.get("details") or {}).get("retryAfterSeconds") or 0
                delay = float(seconds) if seconds > 0 else None
            return EvictionResult(blocker=refusal_blocker(key, status),
                                  retry_after=DEFAULT_RETRY_AFTER if delay is None else delay)
        except Exception as e:  # noqa: BLE001 - transport errors
            raise _store_error(f"evict pod {key}", e) from e
        if answer.get("kind") == "Status" and answer.get("status") == "Failure":
            # kube-apiserver answers a pod under two budgets with 201 and a Failure Status
            # (code 500) in the body; client-go turns that into an error, and so do we.
            return EvictionResult(blocker=refusal_blocker(key, answer))
        return EvictionResult(accepted=True)

    def _post(self, eviction: Any, name: str, namespace: str) -> JSON:
        """POST the Eviction; the response body as a dict. lightkube's `create` would decode a
        2xx body as an Eviction and drop a Failure Status, so the request goes through the
        client's own request pipeline (same auth, TLS and error translation) and the body is
        read as JSON. Raises lightkube's ApiError for 4xx/5xx."""
        inner = getattr(self.client, "_client", None)
        if inner is None or not all(hasattr(inner, a) for a in (
                "prepare_request", "build_adapter_request", "send", "raise_for_status")):
            self.client.create(eviction, name, namespace=namespace)  # older lightkube
            return {}
        request = inner.prepare_request("post", obj=eviction, name=name, namespace=namespace)
        response = inner.send(inner.build_adapter_request(request))
        inner.raise_for_status(response)
        try:
            body = response.json()
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}


class KubeDrainer:
    """Per-node eviction state machine; `evict_pods` is one non-blocking step (see the module doc).

    `api` is a `KubeApi` (or anything with its two methods); `clock` is monotonic seconds.
    """

    def __init__(self, api: KubeApi, clock: Callable[[], float] = time.monotonic,
                 poll_interval: float = DELETE_POLL_INTERVAL,
                 concurrency: int = EVICTION_CONCURRENCY) -> None:
        self.api = api
        self.clock = clock
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        self._nodes: dict[str, _NodeState] = {}

    def evict_pods(self, node: str) -> DrainProgress:
        pods = self.api.list_node_pods(node)
        now = self.clock()
        state = self._nodes.setdefault(node, _NodeState())
        blocking: list[Blocker] = []
        waits: list[float] = []
        evicted: list[str] = []
        present: set[str] = set()
        due: list[tuple[str, str]] = []  # (pod, uid) to evict in this step
        for pod in pods:
            reason = skip_reason(pod)
            key = pod_key(pod)
            if reason:
                log.debug("node %s: pod %s stays (%s)", node, key, reason)
                continue
            present.add(key)
            meta = pod.get("metadata") or {}
            uid = str(meta.get("uid") or "")
            if state.evicted.get(key) == uid:
                blocking.append(Blocker(key, "", WAITING_FOR_DELETION))
                waits.append(self.poll_interval)
            elif meta.get("deletionTimestamp"):
                blocking.append(Blocker(key, "", BEING_DELETED))
                waits.append(self.poll_interval)
            elif now < state.not_before.get(key, 0.0):
                blocking.append(state.refused[key])
                waits.append(state.not_before[key] - now)
            else:
                due.append((key, uid))
        for (key, uid), result in zip(due, self._evict_all([k for k, _ in due])):
            if result.gone:
                continue
            if result.accepted:
                log.info("node %s: evicted pod %s", node, key)
                state.evicted[key] = uid
                state.not_before.pop(key, None)
                state.refused.pop(key, None)
                evicted.append(key)
                blocking.append(Blocker(key, "", WAITING_FOR_DELETION))
                waits.append(self.poll_interval)
                continue
            assert result.blocker is not None
            log.info("node %s: eviction of pod %s refused (will retry after %gs): %s", node, key,
                     result.retry_after, result.blocker)
            state.not_before[key] = now + result.retry_after
            state.refused[key] = result.blocker
            blocking.append(result.blocker)
            waits.append(result.retry_after)
        for table in (state.not_before, state.refused, state.evicted):
            for key in [k for k in table if k not in present]:
                del table[key]
        if not blocking:
            del self._nodes[node]
            return DrainProgress(done=True, evicted=tuple(evicted))
        return DrainProgress(done=False, blocking=tuple(blocking), retry_after=min(waits),
                             evicted=tuple(evicted))

    def _evict_all(self, pods: list[str]) -> list[EvictionResult]:
        """One eviction request per pod, up to `concurrency` at a time (as kubectl drain sends
        them in parallel): a node with a hundred pods is not a hundred round trips in a row.
        Results in the order of `pods`; the first StoreError is raised."""
        def evict(key: str) -> EvictionResult:
            namespace, name = key.split("/", 1)
            return self.api.evict(namespace, name)

        if len(pods) <= 1 or self.concurrency <= 1:
            return [evict(key) for key in pods]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(pods)),
                                thread_name_prefix="evict") as pool:
            return list(pool.map(evict, pods))

    def forget(self, node: str) -> None:
        """Drop a node's per-pod state (its drain request was withdrawn)."""
        self._nodes.pop(node, None)


def _to_dict(obj: Any) -> JSON:
    if isinstance(obj, dict):
        return obj
    out: JSON = obj.to_dict()
    return out


def _status_dict(error: Any) -> JSON:
    """The Status body of an API error as a dict (the raw JSON; falls back to lightkube's model)."""
    try:
        body = error.response.json()
    except Exception:  # noqa: BLE001 - not JSON: use what lightkube decoded
        body = None
    if isinstance(body, dict):
        return body
    status = getattr(error, "status", None)
    return _to_dict(status) if status is not None else {"code": error.response.status_code}


def _store_error(what: str, error: Exception) -> StoreError:
    status = getattr(error, "status", None)
    message = getattr(status, "message", None) or str(error) or type(error).__name__
    return StoreError(f"kube: {what}: {message}")
