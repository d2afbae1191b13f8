"""The daemon loop (MCO's syncNode): reads its node's annotations, moves the node from its current
to its desired rendered config through the update engine, asks for drain and uncordon, reports
Working/Done/Degraded/Unreconcilable, resumes after a reboot (waiting for a kubelet that answered
before it), watches the kubelet's healthz at rest and heals once the cause is gone.
"""
from __future__ import annotations

import contextlib
import json
import logging
import select
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, cast

from machineconfig.errors import MachineConfigError
from machineconfig import constants as C
from machineconfig import localdrain
from machineconfig.reconcile import NotReconcilableError
from machineconfig.rendered_config import RenderedConfig
from machineconfig.store.base import (ForbiddenError, NodeAPI, NodeRecord, NotFoundError,
                                       StoreError)
from mcd import state as node_state
from mcd.state import Phase
from mcd.certificate_writer import CertificateError, rotate_kubeconfig_ca, sync_certificates
from machineconfig.disruption import (DEFAULT_POLICY, NodeDisruptionPolicy, PolicyError,
                                      parse_policy)
from mcd.drain import DrainClient, DrainError
from mcd.local_drain import LocalDrain, LocalDrainBlocked, LocalReturnError, UnitControl
from mcd.drift_monitor import FULL_CHECK_INTERVAL, POLL_INTERVAL, DriftMonitor
from mcd.kubelet_health import (KUBELET_UNIT, MONITOR_INTERVAL, PROBE_TIMEOUT, WAIT_BOUND,
                                KubeletHealth, WaitInterrupted, kubelet_enabled)
from mcd.metrics import DaemonMetrics
from mcd.reboot_lock import RebootLock, RebootLockError
from mcd.node_progress import NodeProgress
from mcd.noderoot import NodeRoot
from mcd.grub import booted_cmdline
from mcd.on_disk_validation import (CmdlineReader, OnDiskValidationError, validate_booted,
                                    validate_on_disk)
from mcd.rpm_ostree import Runner, run_rpm_ostree
from mcd.store_watch import StoreWatch
from machineconfig.sdnotify import notify
from mcd.systemd import SystemdApi, SystemdError
from mcd.update import apply_update, kubelet_expected, plan_update

log = logging.getLogger(__name__)

IGNITION_PRESET = "/etc/systemd/system-preset/20-ignition.preset"
EVENT_KIND = "Node"


# MCO's daemon waits this long for the published node disruption policies to be current
POLICY_WAIT, POLICY_POLL = 120.0, 5.0


class DaemonError(MachineConfigError):
    """The sync failed; the node is Degraded with `str()` as the reason and the sync retried."""


class _Stopped(BaseException):
    """SIGTERM arrived while the daemon was only waiting."""


@dataclass
class Timeouts:
    drain: float = 3600.0  # MCO: 1 hour
    uncordon: float = 600.0  # MCO: 10 minutes
    watch: float = 600.0  # longest single wait for a store change (the loop sleeps that long)
    backoff_min: float = 1.0
    backoff_max: float = 60.0
    drift_poll: float = POLL_INTERVAL  # lstat poll of the managed paths, without inotify
    drift_full: float = FULL_CHECK_INTERVAL  # full validation even when nothing was seen
    drift_inotify: bool = True  # False: poll (as where inotify is unavailable)
    kubelet_wait: float = WAIT_BOUND  # a kubelet that answered before must answer again within
    kubelet_monitor: float = MONITOR_INTERVAL  # at rest, between probes of a kubelet that answered
    kubelet_probe: float = PROBE_TIMEOUT  # one healthz request


class Daemon:
    """One node's daemon against a NodeAPI; `run()` loops until SIGTERM (outside an update)."""

    def __init__(self, api: NodeAPI, node: str, systemd: SystemdApi, *, root: Path = Path("/"),
                 metrics: DaemonMetrics | None = None, policy: NodeDisruptionPolicy = DEFAULT_POLICY,
                 timeouts: Timeouts | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 kubelet_url: str | None = None, os_runner: Runner = run_rpm_ostree,
                 reboot_lock: RebootLock | None = None,
                 cmdline: CmdlineReader = booted_cmdline) -> None:
        self.api, self.node_name, self.systemd, self.root = api, node, systemd, root
        self.reboot_lock = reboot_lock  # FleetLock: a slot before a drain or reboot
        self.slot_release_pending = reboot_lock is not None  # steady-state once Done (Zincati's)
        self.metrics = metrics or DaemonMetrics()
        self.policy = policy
        self.os_runner = os_runner
        self.cmdline = cmdline  # the running kernel's command line (GRUB hosts' kernel arguments)
        self.timeouts = timeouts or Timeouts()
        self.clock = clock
        self.node: NodeRecord | None = None
        self.phase = Phase.BOOTING
        self.waiting = False
        self.sigterm_during_update = False
        self.token_rejected = False
        self.stop_requested = threading.Event()
        self.revision = 0
        self.drift: DriftMonitor | None = None
        self.store_watch: StoreWatch | None = None  # while run() runs
        self.drainer = DrainClient(api, node, self._wait, clock, self.event, self.timeouts.watch)
        self.progress = NodeProgress(api, node)  # the node's MachineConfigNode
        # units and hooks of a drain on a host without Kubernetes (the pool's local drain)
        units = cast(UnitControl, systemd) if callable(getattr(systemd, "stop_unit", None)) \
            else None
        self.local_drain = LocalDrain(root, units, node, event=self.event)
        self.kubelet = KubeletHealth(root, kubelet_url, self.timeouts.kubelet_probe,
                                     self.timeouts.kubelet_wait,
                                     unit_status=getattr(systemd, "unit_status", None),
                                     gauge=self.metrics.kubelet_state, stop=self.stop_requested,
                                     clock=clock)
        self.kubelet_failed = False  # Degraded because the kubelet did not come back: a retry
        # probes once instead of waiting the whole bound again
        self.kubelet_next: float | None = None  # next probe at rest; None: not monitored

    # ---- the store ------------------------------------------------------------------------
    def patch(self, changes: Mapping[str, str | None]) -> NodeRecord:
        self.node = self.api.patch_node_annotations(self.node_name, changes)
        return self.node

    def update_policy(self) -> NodeDisruptionPolicy:
        """The node disruption policies for the next update: on a store that publishes the
        cluster's (kube: MachineConfiguration `cluster`, status.nodeDisruptionPolicyStatus),
        those, once the controller has observed the object's latest generation (polled every
        POLICY_POLL s for up to POLICY_WAIT s, as MCO's daemon waits); otherwise this daemon's
        own (`--policy`, else MCO's defaults)."""
        source = getattr(self.api, "cluster_disruption_policies", None)
        if not callable(source):
            return self.policy
        deadline = self.clock() + POLICY_WAIT
        while True:
            found = source()
            if found is None:
                return self.policy  # the cluster has no MachineConfiguration: the defaults
            generation, observed, policies = found
            if generation is None or generation == observed:
                try:
                    return parse_policy(policies, "status.nodeDisruptionPolicyStatus."
                                                  "clusterPolicies")
                except PolicyError as err:
                    raise DaemonError(f"NodeDisruptionPolicyStatus was not ready: {err}") from err
            if self.clock() >= deadline or self.stop_requested.wait(POLICY_POLL):
                raise DaemonError(
                    f"NodeDisruptionPolicyStatus was not ready: MachineConfiguration cluster "
                    f"generation {generation}, status observedGeneration {observed}")

    def event(self, reason: str, message: str, type: str = "Normal") -> None:
        try:
            self.api.record_event(EVENT_KIND, self.node_name, reason, message, type)
        except StoreError as err:
            log.warning("event %s not recorded: %s", reason, err)

    def _annotations(self) -> dict[str, str]:
        self.node = self.api.get_node(self.node_name)
        return self.node.annotations

    def _config(self, name: str, on_disk: RenderedConfig | None) -> RenderedConfig:
        """The rendered config `name`: the on-disk currentconfig when it is that one, else the
        store's (the one place the daemon gets a config from its node API)."""
        if on_disk is not None and on_disk.name == name:
            return on_disk
        try:
            return self.api.get_rendered(name)
        except NotFoundError as err:
            raise DaemonError(f'machineconfig.{C.GROUP} "{name}" not found') from err

    def _wait(self, timeout: float) -> bool:
        """Wait for a store change (True), the timeout, or (while run() runs) a change the
        drift monitor's inotify fd announces; SIGTERM may cut a wait short."""
        self.waiting = True
        try:
            if self.store_watch is None:
                revision = self.api.wait_for_change(self.revision, max(timeout, 0.0))
            else:
                waiter = select.poll()
                waiter.register(self.store_watch.fileno(), select.POLLIN)
                # the loop takes the monitor's events only while no reboot is queued
                disk = self.drift.fileno() if self.drift and self.phase is not Phase.REBOOTING \
                    else None
                if disk is not None:
                    waiter.register(disk, select.POLLIN)
                waiter.poll(max(timeout, 0.0) * 1000)
                revision = self.store_watch.take()
        finally:
            self.waiting = False
        changed = revision != self.revision
        self.revision = revision
        return changed

    # ---- states ---------------------------------------------------------------------------
    def _enter(self, phase: Phase) -> None:
        if phase not in node_state.PHASE_MOVES[self.phase]:
            raise RuntimeError(f"daemon phase {self.phase.value} -> {phase.value} is not a move")
        self.phase = phase

    def report(self, state: str, reason: str | None = "",
               annotations: Mapping[str, str] | None = None, **record: Any) -> None:
        """The node's state, everywhere at once: its state annotation (with the reason, unless
        None: Working leaves it as it is) and `annotations`, the metric, and the state file
        (with `record`; Working's is written by the update itself, with its desired config)."""
        reason_text = (reason or "")[:node_state.MAX_REASON]
        changes = {C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: state}
        if reason is not None:
            changes[C.MACHINE_CONFIG_DAEMON_REASON_ANNOTATION] = reason_text
        self.patch({**changes, **(annotations or {})})
        self.metrics.set_state(state, reason_text)
        if state != C.STATE_WORKING:
            node_state.write_state(self.root, state, reason_text, **record)

    def report_error(self, err: BaseException) -> None:
        state = C.STATE_UNRECONCILABLE if isinstance(err, NotReconcilableError) \
            else C.STATE_DEGRADED
        log.error("sync failed, node %s: %s", state, err)
        try:
            self.report(state, str(err))
        except (StoreError, OSError) as store_err:
            log.error("could not report %s: %s", state, store_err)
        self.progress.degraded(str(err))

    def _on_drift(self, reason: str) -> None:
        self.metrics.drift_detected()
        self.event("ConfigDriftDetected", reason, "Warning")
        self.report_error(DaemonError(reason))

    def _start_drift(self, mc: RenderedConfig, known_drift: str | None = None) -> None:
        if self.drift is not None and self.drift.name == mc.name:
            self.drift.drift = known_drift or self.drift.drift
            return
        self._stop_drift()
        self.drift = DriftMonitor(mc, self.root, self.systemd, self._on_drift,
                                  self.timeouts.drift_poll, self.timeouts.drift_full, self.clock,
                                  use_inotify=self.timeouts.drift_inotify)
        # a drift already reported is remembered, so the monitor notices when it is fixed
        self.drift.drift = known_drift
        self.event("ConfigDriftMonitorStarted",
                   f"Config Drift Monitor started, watching against {self.drift.name}")

    def _stop_drift(self) -> None:
        if self.drift is not None:
            self.drift.stop()
            self.event("ConfigDriftMonitorStopped", "Config Drift Monitor stopped")
            self.drift = None

    # ---- drain handshake ------------------------------------------------------------------
    def request_drain(self, desired: str) -> None:
        """The controller's drain (cordon; pods on kube), then the node's local drain: the
        units and hooks its pool's policy names (published on the node by the controller)."""
        request = f"drain-{desired}"
        applied = self._annotations().get(C.LAST_APPLIED_DRAIN_ANNOTATION, "")
        if applied != request:
            self.progress.draining(request, applied)
        try:
            self.drainer.drain(desired, self.timeouts.drain)
            policy = localdrain.from_node_annotation(
                self.api.get_node(self.node_name).annotations.get(localdrain.NODE_ANNOTATION))
            try:
                self.local_drain.drain(policy, desired)
            except LocalDrainBlocked as blocked:
                raise DrainError(str(blocked)) from blocked
        except DrainError as err:
            self.metrics.drain_err.set(1)
            self.progress.drain_failed(request, str(err))
            raise
        self.metrics.drain_err.set(0)
        self.progress.drained(request, self.api.get_node(self.node_name).unschedulable)

    def _kubelet_back(self, current_mc: RenderedConfig, after: str | None) -> None:
        """Before Done: a kubelet that answered before the reboot (or before the daemon's last
        failed wait) must answer again; Degraded with what was seen when it does not.
        Then the monitor: every `kubelet_monitor` seconds while the config runs a kubelet that
        has answered; a kubelet that never did (no kubelet binary) is only probed here."""
        self.kubelet_next = None
        if not kubelet_enabled(current_mc):
            self.kubelet_failed = False
            return
        if (after is not None or self.kubelet_failed) and kubelet_expected(self.root, current_mc):
            context = after or f"in {current_mc.name}"
            try:
                reason = self.kubelet.wait_healthy(context, once=self.kubelet_failed)
            except WaitInterrupted:
                raise _Stopped() from None
            if reason:
                self.kubelet_failed = True
                self._start_drift(current_mc)
                raise DaemonError(reason)
        else:
            self.kubelet.check()
        self.kubelet_failed = False
        if kubelet_expected(self.root, current_mc) or (
                self.kubelet.last is not None and self.kubelet.last.healthy):
            self.kubelet_next = self.clock() + self.timeouts.kubelet_monitor

    def _finish(self, current: str, current_mc: RenderedConfig,
                after: str | None = None, updated: bool = False) -> None:
        """MCO's updateConfigAndState when current == desired: (the kubelet back,) uncordon,
        (the units a local drain stopped started again, its afterReturn hooks,) then Done.
        `after` names the reboot or start the kubelet is waited for after;
        `updated`: an update (rebootless, or the reboot of one) ends here, so the
        MachineConfigNode goes through Resumed, UpdateComplete and Uncordoned to Updated."""
        self._kubelet_back(current_mc, after)
        if updated:
            self.progress.resumed(current)
        self.drainer.uncordon(current, self.timeouts.uncordon)
        if updated:
            self.progress.uncordoned(self.api.get_node(self.node_name).unschedulable)
        try:
            # before Done: the rollout takes the next node only once this one's workload runs
            self.local_drain.back(current)
        except LocalReturnError as err:
            self._start_drift(current_mc)
            raise DaemonError(str(err)) from err
        self.report(C.STATE_DONE, annotations={C.CURRENT_CONFIG_ANNOTATION: current},
                    currentConfig=current, desiredConfig=current, postConfigAction="")
        self.progress.not_degraded()
        self.progress.updated(current)
        log.info("node %s is Done in %s", self.node_name, current)
        self._start_drift(current_mc)
        self.slot_release_pending = self.reboot_lock is not None
        self._release_reboot_slot()

    # ---- sync -----------------------------------------------------------------------------
    def sync(self) -> None:
        """One pass over the node's annotations (MCO's syncNode)."""
        if self.phase is Phase.REBOOTING:
            return
        annotations = self._annotations()
        self._sync_certificates(annotations)
        if self.reboot_lock is not None and self.slot_release_pending and \
                self.phase is not Phase.BOOTING and \
                annotations.get(C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION) == C.STATE_DONE:
            self._release_reboot_slot()
        from_reboot = annotations.get(C.POST_CONFIG_ACTION_ANNOTATION) == node_state.REBOOTING
        if from_reboot:
            log.info("back from the reboot: post-config-action cleared")
            self.patch({C.POST_CONFIG_ACTION_ANNOTATION: ""})
            self.progress.rebooted()
        if self.phase is Phase.BOOTING:
            self._first_run(annotations, from_reboot)
            if self.phase is Phase.BOOTING:
                self._enter(Phase.FOLLOWING)
            return
        drain = annotations.get(C.DESIRED_DRAIN_ANNOTATION)
        if drain and drain != annotations.get(C.LAST_APPLIED_DRAIN_ANNOTATION):
            log.info("waiting for the controller to apply %s", drain)
            return
        current = annotations.get(C.CURRENT_CONFIG_ANNOTATION, "")
        on_disk = node_state.read_current_config(self.root)
        if on_disk is not None and on_disk.name != current:
            log.info("on-disk currentconfig %s overrides annotation %s", on_disk.name, current)
            current = on_disk.name
        desired = annotations.get(C.DESIRED_CONFIG_ANNOTATION) or current
        state = annotations.get(C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION)
        if current == desired and state == C.STATE_DONE:
            if self.drift is None and current:
                self._start_drift(self._config(current, on_disk))
            return
        log.info("update needed: %s -> %s (state %s)", current, desired, state)
        self._update(current, desired, on_disk, state)

    def _sync_certificates(self, annotations: dict[str, str]) -> None:
        """MCO's certificate writer (mcd.certificate_writer), on a store that gives daemons the
        ControllerConfig (kube): its CA bundles are written whenever its resourceVersion is not
        the one this node last synced, whatever the pool's rollout does (a paused pool too);
        a `service-ca-rotate: "true"` this node has not observed yet rotates the kubeconfig's CA."""
        source = getattr(self.api, "node_controller_config", None)
        if not callable(source):
            return
        cc = source()
        if cc is None:
            return
        version = str((cc.get("metadata") or {}).get("resourceVersion") or "")
        rotate = str(((cc.get("metadata") or {}).get("annotations") or {}).get(
            C.SERVICE_CA_ROTATE_ANNOTATION, ""))
        observed = annotations.get(C.LAST_OBSERVED_SERVER_CA_ANNOTATION, "")
        rotation_due = rotate == "true" and observed != rotate
        if not version or (annotations.get(C.LAST_SYNCED_CONTROLLER_CONFIG_ANNOTATION) == version
                           and not rotation_due):
            return
        try:
            written = sync_certificates(self.root, cc)
            if rotation_due and not self._rotate_kubeconfig_ca():
                rotate = observed  # the bundle could not be read: asked again on the next pass
        except (CertificateError, OSError, SystemdError) as err:
            log.error("certificate writer: %s", err)
            self.event("CertificateSyncFailed", f"could not write the ControllerConfig's CA "
                                                f"bundles: {err}", "Warning")
            return
        patch = {C.LAST_SYNCED_CONTROLLER_CONFIG_ANNOTATION: version}
        if rotate != observed:
            patch[C.LAST_OBSERVED_SERVER_CA_ANNOTATION] = rotate
        self.patch(patch)
        annotations.update(patch)
        log.info("Certificate was synced from controllerconfig resourceVersion %s (%d paths)",
                 version, len(written))

    def _rotate_kubeconfig_ca(self) -> bool:
        """The service-CA rotation: False when the store has no CA bundle to give."""
        source = getattr(self.api, "node_kubeconfig_ca", None)
        bundle = source() if callable(source) else None
        if bundle is None:
            log.error("service-CA rotation requested, but kubeconfig-data's ca-bundle.crt "
                      "could not be read")
            return False
        rotation = rotate_kubeconfig_ca(self.root, bundle)
        if rotation.restart_kubelet:
            log.info("restarting kubelet due to server-ca rotation")
            self.systemd.restart_unit(KUBELET_UNIT)
        return True

    def _first_run(self, annotations: dict[str, str], from_reboot: bool = False) -> None:
        """MCO's checkStateOnFirstRun: bootstrap annotations, disk validation, Done or update."""
        self._housekeeping()
        fs = NodeRoot(self.root)
        from_file: dict[str, str] = {}
        if fs.lexists(C.NODE_ANNOTATIONS_PATH):
            from_file = {str(k): str(v) for k, v in
                         json.loads(fs.read_text(C.NODE_ANNOTATIONS_PATH, follow=False)).items()}
            if C.CURRENT_CONFIG_ANNOTATION not in annotations:
                annotations = self._bootstrap_annotations(annotations, from_file)
            fs.rename(C.NODE_ANNOTATIONS_PATH, C.NODE_ANNOTATIONS_BACKUP_PATH)
        current = annotations.get(C.CURRENT_CONFIG_ANNOTATION, "")
        on_disk = node_state.read_current_config(self.root)
        if on_disk is not None:
            if on_disk.name != current:
                log.info("on-disk currentconfig %s overrides annotation %r", on_disk.name,
                         current)
            current = on_disk.name
        if not current:
            raise DaemonError("node has no currentConfig annotation, no "
                              f"{C.NODE_ANNOTATIONS_PATH} and no on-disk currentconfig")
        desired = annotations.get(C.DESIRED_CONFIG_ANNOTATION) or \
            from_file.get(C.DESIRED_CONFIG_ANNOTATION) or current
        current_mc = self._config(current, on_disk)
        if node_state.force_file_present(self.root):
            log.info("forcefile present: validation skipped, updating %s -> %s", current, desired)
            self._enter(Phase.FOLLOWING)  # from here on a retry is an ordinary sync
            self._update(current, desired, on_disk, annotations.get(
                C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION))
            return
        try:
            validate_on_disk(current_mc, self.root, self.systemd)
            validate_booted(current_mc, self.root, self.os_runner, self.cmdline)
        except OnDiskValidationError as err:
            self.event("OnDiskStateValidationFailed", str(err), "Warning")
            self._start_drift(current_mc, str(err))  # started anyway: it notices the fix
            raise DaemonError(str(err)) from err
        if current == desired:
            rebooted = node_state.read_state(self.root).get("postConfigAction") == \
                node_state.REBOOTING or from_reboot
            self._finish(current, current_mc, f"after the reboot into {current}" if rebooted
                         else f"after the daemon started in {current}", updated=rebooted)
            return
        self.event("BootResync", f"Booting node {self.node_name}, currentConfig {current}, "
                                 f"desiredConfig {desired}")
        self._enter(Phase.FOLLOWING)
        self._update(current, desired, on_disk, annotations.get(
            C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION))

    def _bootstrap_annotations(self, annotations: dict[str, str], from_file: dict[str, str]
                               ) -> dict[str, str]:
        """MCO writes every annotation of the file once, desiredConfig included, so the node
        controller sees a Done node; a node API that refuses desiredConfig gets the rest."""
        keys = (C.CURRENT_CONFIG_ANNOTATION, C.FIRST_PIVOT_CONFIG_ANNOTATION)
        wanted: dict[str, str | None] = {k: from_file[k] for k in keys if k in from_file}
        desired = from_file.get(C.DESIRED_CONFIG_ANNOTATION)
        log.info("bootstrapping: annotations from %s", C.NODE_ANNOTATIONS_PATH)
        if desired and C.DESIRED_CONFIG_ANNOTATION not in annotations:
            try:
                return self.patch({**wanted, C.DESIRED_CONFIG_ANNOTATION: desired}).annotations
            except ForbiddenError as err:
                log.warning("desiredConfig refused at bootstrap (%s): left to the controller", err)
        return self.patch(wanted).annotations

    def _housekeeping(self) -> None:
        fs = NodeRoot(self.root)
        if fs.lexists(C.ENCAPSULATED_CONFIG_PATH):
            log.info("firstboot leftover %s renamed to .bak", C.ENCAPSULATED_CONFIG_PATH)
            fs.rename(C.ENCAPSULATED_CONFIG_PATH, C.ENCAPSULATED_CONFIG_PATH + ".bak")
        # Ignition's presets did their work at first boot; later they would fight our units
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            fs.unlink(IGNITION_PRESET)

    def _reboot_slot(self, current_mc: RenderedConfig, desired_mc: RenderedConfig,
                     desired: str, policy: NodeDisruptionPolicy) -> bool:
        """With a FleetLock server (`--fleetlock`): before an update that drains or reboots,
        a reboot slot, waited for (as Zincati waits) while SIGTERM may still stop the daemon.
        False when the wait ended without one (stopping, or desiredConfig moved)."""
        if self.reboot_lock is None:
            return True
        try:
            plan = plan_update(current_mc, desired_mc, root=self.root, policy=policy)
        except NotReconcilableError:
            return True  # the update refuses it without touching anything
        if not (plan.drain or plan.reboot):
            return True
        delay, told = self.timeouts.backoff_min, False
        while True:
            try:
                self.reboot_lock.acquire()
                self.slot_release_pending = False
                return True
            except RebootLockError as err:
                status = f"waiting for a reboot slot before the update to {desired}: {err}"
                log.info("%s; asking again in %.0fs", status, delay)
                notify(f"STATUS={status}")
                if not told:
                    self.event("WaitingForRebootSlot", status)
                    told = True
            if self.stop_requested.wait(delay):
                return False
            delay = min(delay * 2, self.timeouts.backoff_max)
            if self._annotations().get(C.DESIRED_CONFIG_ANNOTATION) != desired:
                log.info("desiredConfig moved while waiting for a reboot slot")
                return False

    def _release_reboot_slot(self) -> None:
        """Steady state reported to the FleetLock server; a failure is tried again on the next
        pass (the slot stays held meanwhile, as with Zincati)."""
        if self.reboot_lock is None or not self.slot_release_pending:
            return
        try:
            self.reboot_lock.release()
            self.slot_release_pending = False
        except RebootLockError as err:
            log.warning("reboot slot not given back yet: %s", err)

    def _update(self, current: str, desired: str, on_disk: RenderedConfig | None,
                state: str | None) -> None:
        current_mc = self._config(current, on_disk)
        desired_mc = self._config(desired, on_disk)
        if not node_state.force_file_present(self.root):
            try:
                validate_on_disk(current_mc, self.root, self.systemd)
            except OnDiskValidationError as err:
                self.event("PreflightConfigDriftCheckFailed", str(err), "Warning")
                self._start_drift(current_mc, str(err))
                raise DaemonError(str(err)) from err
        policy = self.update_policy()  # before anything changes: a wait or error leaves all
        if not self._reboot_slot(current_mc, desired_mc, desired, policy):
            return  # stopping, or the target moved while waiting: the next pass decides
        self._stop_drift()
        self.kubelet_next = None  # the update probes the kubelet itself where it matters
        if node_state.reports_working(state):
            self.report(C.STATE_WORKING, None)
        self._enter(Phase.UPDATING)  # SIGTERM is ignored from here until the update ends
        rebooting = False
        try:
            outcome = apply_update(current_mc, desired_mc, self.systemd, reboot=self._reboot,
                                   root=self.root, policy=policy,
                                   request_drain=self.request_drain, kubelet=self.kubelet,
                                   os_runner=self.os_runner, progress=self.progress)
            rebooting = outcome.rebooting
        finally:
            self._enter(Phase.REBOOTING if rebooting else Phase.FOLLOWING)
            if self.sigterm_during_update:
                self.event("GotSigtermDuringUpdate", "Got SIGTERM, but actively updating")
                self.stop_requested.set()
        if outcome.state == C.STATE_UNRECONCILABLE:
            self.event("FailedToReconcile", outcome.reason, "Warning")
            self.metrics.update_done(desired, outcome.reason)
            raise NotReconcilableError(current, desired, outcome.reason, message=outcome.reason)
        if outcome.pivot_error:
            self.metrics.pivot_errors.inc()
        if outcome.state == C.STATE_DEGRADED:
            self.kubelet_failed = outcome.kubelet_unhealthy
            self.metrics.update_done(desired, outcome.reason)
            # rolled back: the disk is in `current`; past the point of no return: in `desired`
            self._start_drift(node_state.read_current_config(self.root) or current_mc)
            raise DaemonError(outcome.reason)
        self.metrics.update_done(desired)
        if rebooting:
            log.info("reboot queued into %s: further syncs ignored", desired)
            return
        self._finish(desired, desired_mc, updated=True)

    def _reboot(self, rationale: str) -> None:
        """The update's reboot: recorded first (event, post-config-action=Rebooting)."""
        self.event("Reboot", rationale)
        self.patch({C.POST_CONFIG_ACTION_ANNOTATION: node_state.REBOOTING})
        try:
            self.systemd.reboot(rationale)
        except Exception as err:  # noqa: BLE001 - any failure to reboot is reported the same way
            self.metrics.reboots_failed.inc()
            log.error("reboot failed: %s", err)
            raise DaemonError("reboot command failed, something is seriously wrong") from err

    # ---- the loop -------------------------------------------------------------------------
    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        if self.phase is Phase.UPDATING:
            # a half-applied update is worse than a late stop: finish, then stop
            log.warning("Got SIGTERM, but actively updating")
            self.sigterm_during_update = True
            return
        self.stop_requested.set()
        if self.waiting:
            raise _Stopped()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigterm)

    def run(self, max_iterations: int | None = None) -> None:
        """Sync, then sleep until the store changes, a managed path changes (inotify), a retry
        or the drift monitor's next check is due; errors back off 1 s to 60 s."""
        self.store_watch = StoreWatch(self.api, self.revision, self.timeouts.watch,
                                      self.timeouts.backoff_min, self.timeouts.backoff_max)
        try:
            self._loop(max_iterations)
        finally:
            # a short wait (tests) is joined; a long poll ends with the process
            self.store_watch.stop(join=min(self.timeouts.watch, 0.5))
            self.store_watch = None

    def _loop(self, max_iterations: int | None) -> None:
        pending, next_try, backoff, iterations = True, 0.0, 0.0, 0
        # ready once connected: a first sync may wait an hour for a drain
        notify(f"READY=1\nSTATUS=following node {self.node_name}")
        while not self.stop_requested.is_set():
            if max_iterations is not None and iterations >= max_iterations:
                return
            iterations += 1
            try:
                if pending and self.clock() >= next_try:
                    try:
                        self.sync()
                        pending, backoff = False, 0.0
                    except ForbiddenError:
                        raise
                    except Exception as err:  # noqa: BLE001 - the daemon reports and retries
                        self.report_error(err)
                        backoff = min(max(backoff * 2, self.timeouts.backoff_min),
                                      self.timeouts.backoff_max)
                        next_try = self.clock() + backoff
                        log.info("next sync in %gs", backoff)
                if self.drift is not None and self.phase is not Phase.REBOOTING:
                    before = self.drift.drift
                    if self.drift.check() is None and before is not None:
                        pending, next_try = True, 0.0  # the disk is fixed: report it now
                if self.kubelet_next is not None and self.phase is not Phase.REBOOTING and \
                        self.clock() >= self.kubelet_next:
                    self.kubelet.check()
                    self.kubelet_next = self.clock() + self.timeouts.kubelet_monitor
                timeout = self.timeouts.watch
                if self.kubelet_next is not None and self.phase is not Phase.REBOOTING:
                    timeout = min(timeout, max(self.kubelet_next - self.clock(), 0.0))
                if pending:
                    timeout = min(timeout, max(next_try - self.clock(), 0.0))
                if self.drift is not None:
                    timeout = min(timeout, self.drift.due_in())
                if self._wait(timeout):
                    pending = True
            except _Stopped:
                break
            except ForbiddenError as err:
                # the node token is no longer valid (a new server state): exit, so the service
                # restarts and registers again with the pool token
                log.error("node API refused this node: %s", err)
                self.token_rejected = True
                break
            except StoreError as err:
                log.warning("store unreachable: %s", err)
                self.stop_requested.wait(self.timeouts.backoff_min)
                pending = True
        log.info("daemon stopped")
        notify("STOPPING=1")
