"""MCO's drain controller: the desiredDrain/lastAppliedDrain handshake (spec/mco.md 5.7).

A daemon asks for a drain by setting desiredDrain (`drain-<config>` or `uncordon-<config>`); the
controller carries it out and echoes the value into lastAppliedDrain. An uncordon clears only a
cordon this controller made (recorded in the cordonedByMCC annotation), never an administrator's.

Two ways to drain, chosen by what the store offers:

- **local store** (no scheduler, no pods): a drain is a cordon mark, acknowledged at once
  (`apply`, stateless).
- **a store that offers `PodEvictor`** (kube): cordon, then evict the node's pods through the
  Eviction API, and write lastAppliedDrain only once the node is empty and still unschedulable.
  `DrainController` keeps one small state machine per draining node and drives it from the
  controller loop: each pass takes one non-blocking eviction step for every node that is due and
  says when it wants to be called again (`wake_in`), so a drain blocked by a PodDisruptionBudget
  for an hour never holds up another node's drain or the rest of the pass. Timing follows MCO: an
  attempt is given 90 s; a failed attempt is retried after 1 minute; once the drain has been
  failing for more than 10 minutes every 5 minutes with a `DrainThresholdExceeded` event; after
  an hour a `DrainFailed` event and the `mcc_drain_err{node}` metric, and it keeps trying. Where
  MCO only says "see the controller logs", a blocked attempt here names the pods and the budgets
  that refused them, in a Warning event and in the node's drainReason annotation.

The clock is injected (monotonic seconds), so tests step through an hour without sleeping.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge

from machineconfig.constants import (
    CORDONED_BY_MCC_ANNOTATION, DESIRED_DRAIN_ANNOTATION, DRAIN_REASON_ANNOTATION,
    LAST_APPLIED_DRAIN_ANNOTATION,
)
from machineconfig.errors import MachineConfigError
from machineconfig.store.base import Blocker, NodeRecord, PodEvictor, Store
from mcc.metrics import METRICS

log = logging.getLogger(__name__)

DRAIN, UNCORDON = "drain", "uncordon"

# MCO's drain controller configuration (spec/mco.md 5.7), in seconds.
ATTEMPT_TIMEOUT = 90.0  # the drain helper's Timeout per attempt
REQUEUE_DELAY = 60.0  # after a failed attempt
FAILING_THRESHOLD = 600.0  # failing longer than this: requeue every FAILING_DELAY, with an event
FAILING_DELAY = 300.0
DRAIN_TIMEOUT = 3600.0  # then DrainFailed + mcc_drain_err, and keep retrying
# Retry a step that failed on the store (API unreachable) after this many seconds.
STORE_ERROR_DELAY = 5.0
MAX_NAMED_BLOCKERS = 10
MAX_REASON_LENGTH = 2000  # like the daemon's reason annotation
EVENT_MESSAGE_LIMIT = 1024  # kube-apiserver's limit on an Event's note (the scheduler's truncation)



def drain_err_gauge(registry: CollectorRegistry) -> Gauge:
    return Gauge("mcc_drain_err", "1 while a node's drain has been failing for more than an hour",
                 ["node"], registry=registry)


DRAIN_ERR = drain_err_gauge(METRICS)


class DrainVerbError(MachineConfigError):
    """desiredDrain names neither a drain nor an uncordon."""


@dataclass(frozen=True)
class DrainRequest:
    node: str
    verb: str
    desired: str  # the full desiredDrain value, echoed into lastAppliedDrain when done


def pending_requests(nodes: Iterable[NodeRecord]) -> list[DrainRequest]:
    """Nodes whose desiredDrain has not been acknowledged yet."""
    out = []
    for node in nodes:
        desired = node.annotations.get(DESIRED_DRAIN_ANNOTATION, "")
        if desired and desired != node.annotations.get(LAST_APPLIED_DRAIN_ANNOTATION, ""):
            out.append(DrainRequest(node.name, desired.split("-", 1)[0], desired))
    return out


def verb_error(request: DrainRequest) -> str:
    return f"node {request.node}: non-recognized drain verb detected {request.verb}"


def go_duration(seconds: float) -> str:
    """A whole number of seconds the way Go prints a time.Duration: 1m30s, 10m0s, 1h0m0s."""
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def blocked_message(blocking: Sequence[Blocker], timeout: float = ATTEMPT_TIMEOUT) -> str:
    """What a timed-out attempt reports: every pod still there, with the budget that refused it."""
    named = "; ".join(str(b) for b in blocking[:MAX_NAMED_BLOCKERS])
    more = len(blocking) - MAX_NAMED_BLOCKERS
    if more > 0:
        named += f"; and {more} more pod{'s' if more > 1 else ''}"
    return f"drain did not complete within {go_duration(timeout)}: {named}"


def event_text(message: str) -> str:
    """A message cut to what an Event may carry, marked as cut."""
    if len(message) <= EVENT_MESSAGE_LIMIT:
        return message
    return message[:EVENT_MESSAGE_LIMIT - 4] + " ..."


def _cordon(store: Store, node: NodeRecord, why: str) -> NodeRecord:
    # Mark first: a crash between the two writes then leaves a mark without a cordon
    # (harmless) rather than a cordon nobody will lift.
    store.patch_node_annotations(node.name, {CORDONED_BY_MCC_ANNOTATION: "true"})
    node = store.set_unschedulable(node.name, True)
    log.info("node %s: cordoned (%s)", node.name, why)
    return node


def apply(store: Store, request: DrainRequest) -> None:
    """Carry out one request at once, as on the local store (a drain is a cordon mark).

    Raises DrainVerbError, StoreError."""
    if request.verb == DRAIN:
        node = store.get_node(request.node)
        if not node.unschedulable:
            node = _cordon(store, node, f"{request.desired}; no pods to evict on this store")
        else:
            log.info("node %s: already unschedulable, drain %s acknowledged", request.node,
                     request.desired)
        if node.unschedulable:
            store.patch_node_annotations(request.node,
                                         {LAST_APPLIED_DRAIN_ANNOTATION: request.desired})
        return
    if request.verb == UNCORDON:
        uncordon(store, request)
        return
    raise DrainVerbError(verb_error(request))


def uncordon(store: Store, request: DrainRequest) -> None:
    node = store.get_node(request.node)
    if CORDONED_BY_MCC_ANNOTATION in node.annotations:
        if node.unschedulable:
            store.set_unschedulable(request.node, False)
        log.info("node %s: uncordoned (%s)", request.node, request.desired)
    elif node.unschedulable:
        log.info("node %s: left cordoned, the cordon is not ours (%s)", request.node,
                 request.desired)
    changes: dict[str, str | None] = {CORDONED_BY_MCC_ANNOTATION: None,
                                      LAST_APPLIED_DRAIN_ANNOTATION: request.desired}
    if DRAIN_REASON_ANNOTATION in node.annotations:
        changes[DRAIN_REASON_ANNOTATION] = None
    store.patch_node_annotations(request.node, changes)


def sync(store: Store, nodes: Iterable[NodeRecord]) -> dict[str, str]:
    """Handle every pending request at once (the local store's way); returns the errors by node."""
    errors = {}
    for request in pending_requests(nodes):
        try:
            apply(store, request)
        except MachineConfigError as e:
            log.warning("node %s: drain request %s failed: %s", request.node, request.desired, e)
            errors[request.node] = str(e)
    return errors


@dataclass
class _Drain:
    """One node's drain in progress (MCO's ongoingDrains entry plus the retry bookkeeping)."""

    desired: str
    started: float  # when this drain request was first taken up
    attempt_started: float | None = None
    next_at: float = 0.0
    reason: str = ""  # the blocked message last published (annotation, errors)
    reported: set[str] = field(default_factory=set)  # DrainBlocked messages already sent


class DrainController:
    """The drain controller across passes; `sync` is called once per controller pass."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic,
                 drain_err: Gauge = DRAIN_ERR, attempt_timeout: float = ATTEMPT_TIMEOUT) -> None:
        self.store = store
        self.clock = clock
        self.drain_err = drain_err
        self.attempt_timeout = attempt_timeout
        self.evictor: PodEvictor | None = store if isinstance(store, PodEvictor) else None
        self._drains: dict[str, _Drain] = {}
        self._reported: set[tuple[str, str]] = set()  # (node, message) of one-off error events

    def sync(self, nodes: Iterable[NodeRecord]) -> dict[str, str]:
        """Take every pending request one step further; returns, by node, the errors and the
        reasons of drains that stay blocked (the controller's view of each node)."""
        requests = pending_requests(nodes)
        wanted = {r.node: r.desired for r in requests}
        for name in [n for n, d in self._drains.items() if wanted.get(n) != d.desired]:
            log.info("node %s: drain %s withdrawn", name, self._drains[name].desired)
            del self._drains[name]
            if self._has_metric(name):
                self.drain_err.remove(name)
        errors: dict[str, str] = {}
        for request in requests:
            try:
                if request.verb == DRAIN and self.evictor is not None:
                    blocked = self._drain_step(request, self.evictor)
                    if blocked:
                        errors[request.node] = blocked
                else:
                    apply(self.store, request)
            except MachineConfigError as e:
                log.warning("node %s: drain request %s failed: %s", request.node,
                            request.desired, e)
                errors[request.node] = str(e)
                drain = self._drains.get(request.node)
                if drain is not None:
                    drain.next_at = self.clock() + STORE_ERROR_DELAY
                self._event_once(request.node, "DrainFailed", str(e))
        return errors

    def wake_in(self) -> float | None:
        """Seconds until a draining node is due for its next step (None: nothing is draining)."""
        if not self._drains:
            return None
        return max(0.0, min(d.next_at for d in self._drains.values()) - self.clock())

    def _has_metric(self, node: str) -> bool:
        return any(s.labels.get("node") == node and s.name == "mcc_drain_err"
                   for m in self.drain_err.collect() for s in m.samples)

    def _event_once(self, node: str, reason: str, message: str) -> None:
        if (node, message) in self._reported:
            return
        self._reported.add((node, message))
        self.store.record_event("Node", node, reason, message, "Warning")

    def _drain_step(self, request: DrainRequest, evictor: PodEvictor) -> str:
        """One step of a drain; returns the node's blocked reason ("" when none)."""
        now = self.clock()
        name = request.node
        drain = self._drains.get(name)
        if drain is None:
            drain = self._drains[name] = _Drain(request.desired, started=now)
        if now < drain.next_at:
            return drain.reason
        elapsed = now - drain.started
        node = self.store.get_node(name)
        if drain.attempt_started is None:
            if elapsed > DRAIN_TIMEOUT:
                message = (f"node {name}: drain exceeded timeout: {go_duration(DRAIN_TIMEOUT)}. "
                           "Will continue to retry.")
                log.error("%s", message)
                self.store.record_event("Node", name, "DrainFailed", message, "Warning")
                self.drain_err.labels(node=name).set(1)
            drain.attempt_started = now
            log.info("node %s: initiating drain (%s)", name, request.desired)
        if not node.unschedulable:
            why = request.desired if now == drain.started else (
                f"{request.desired}, again: the node was uncordoned during the drain")
            node = _cordon(self.store, node, why)
        progress = evictor.evict_pods(name)
        if progress.done:
            node = self.store.get_node(name)
            if not node.unschedulable:
                # Uncordoned from outside while we evicted: pods may have come back. Cordon
                # again on the next step rather than tell the daemon the node is empty.
                log.info("node %s: uncordoned during the drain; not acknowledging it", name)
                drain.next_at = now
                return drain.reason
            changes: dict[str, str | None] = {LAST_APPLIED_DRAIN_ANNOTATION: request.desired}
            if DRAIN_REASON_ANNOTATION in node.annotations:
                changes[DRAIN_REASON_ANNOTATION] = None
            self.store.patch_node_annotations(name, changes)
            if self._has_metric(name):
                self.drain_err.remove(name)
            del self._drains[name]
            log.info("node %s: drained (%s) in %s", name, request.desired, go_duration(elapsed))
            return ""
        deadline = drain.attempt_started + self.attempt_timeout
        if now < deadline:
            drain.next_at = now + max(0.0, min(progress.retry_after, deadline - now))
            return drain.reason
        # The attempt timed out: name what blocks it and requeue as MCO does.
        drain.attempt_started = None
        message = blocked_message(progress.blocking, self.attempt_timeout)
        if elapsed > FAILING_THRESHOLD:
            text = (f"Drain failed. Drain has been failing for more than "
                    f"{int(FAILING_THRESHOLD // 60)} minutes. Waiting {int(FAILING_DELAY // 60)} "
                    f"minutes then retrying. Error message from drain: {message}")
            log.warning("node %s: %s", name, text)
            self.store.record_event("Node", name, "DrainThresholdExceeded", event_text(text),
                                    "Warning")
            drain.next_at = now + FAILING_DELAY
        else:
            log.warning("node %s: %s; retrying in %s", name, message,
                        go_duration(REQUEUE_DELAY))
            if message not in drain.reported:
                drain.reported.add(message)
                self.store.record_event("Node", name, "DrainBlocked", event_text(message),
                                        "Warning")
            drain.next_at = now + REQUEUE_DELAY
        if message != drain.reason:
            drain.reason = message
            self.store.patch_node_annotations(
                name, {DRAIN_REASON_ANNOTATION: message[:MAX_REASON_LENGTH]})
        return message
