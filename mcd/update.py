"""One update from config A to config B as a transaction: diff, decide, write, record, act.

Any failure before the current config is recorded rolls every file, unit and key back to A;
after that point the node only reloads, restarts or reboots.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from machineconfig import constants as C
from machineconfig.ignition.dataurl import decoded_once
from machineconfig.reconcile import AnyConfig, NotReconcilableError, check_reconcilable
from machineconfig.rendered_config import RenderedConfig
from mcd import state as node_state
from machineconfig.disruption import (DEFAULT_POLICY, Action, ActionType, MachineConfigDiff,
                                      NodeDisruptionPolicy, compute_diff, describe,
                                      drain_required, files_by_path, post_config_actions,
                                      units_by_name)
from mcd import grub
from mcd.file_writers import FileWriter, Journal, PriorState, check_unit_name
from mcd.kubelet_health import KUBELET_UNIT, KubeletHealth, kubelet_enabled
from mcd.noderoot import NodeRoot
from mcd.on_disk_validation import (CmdlineReader, OnDiskValidationError, validate_booted,
                                    validate_on_disk)
from mcd.passwd import SSH_SERVICES, apply_passwd
from mcd.rpm_ostree import (OSTREE_BOOTED, OSUpdateError, Runner, apply_os_changes,
                            ostree_booted, rollback_os_changes, run_rpm_ostree)
from mcd.systemd import SystemdApi, SystemdError, unit_file_states

if TYPE_CHECKING:  # the daemon's progress reports (cluster store) are no part of `mcd apply`
    from mcd.node_progress import NodeProgress

log = logging.getLogger(__name__)

FIPS_ENABLED = Path("/proc/sys/crypto/fips_enabled")
# state.json: the kubelet answered healthy just before the last reboot or kubelet restart, so it
# must come back (a node whose kubelet never answered, as a host without one, is not waited for)
KUBELET_HEALTHY_BEFORE = "kubeletHealthyBefore"


@dataclass
class UpdatePlan:
    """What an update will do, computed without touching anything."""

    old_name: str
    new_name: str
    diff: MachineConfigDiff
    actions: list[Action]
    drain: bool
    force: bool = False

    @property
    def reboot(self) -> bool:
        return any(a.type is ActionType.REBOOT for a in self.actions)

    def summary(self) -> str:
        return describe(self.actions, self.drain)


@dataclass
class UpdateOutcome:
    state: str
    reason: str = ""
    plan: UpdatePlan | None = None
    rebooting: bool = False
    log: list[str] = field(default_factory=list)
    pivot_error: bool = False  # the OS update (rpm-ostree) failed: MCO's mcd_pivot_errors_total
    kubelet_unhealthy: bool = False  # Degraded because the kubelet did not come back


def _fips_reason(new_mc: RenderedConfig) -> str | None:
    try:
        node_fips = FIPS_ENABLED.read_text().strip() == "1"
    except OSError:
        node_fips = False
    if new_mc.spec.fips != node_fips:
        return "detected change to FIPS flag; refusing to modify FIPS on a running cluster"
    return None


def _unreconcilable(old_mc: RenderedConfig, new_mc: RenderedConfig, reason: str
                    ) -> NotReconcilableError:
    """The node cannot move to `new_mc` in place: the daemon's text names both configs."""
    return NotReconcilableError(old_mc.name, new_mc.name, reason, message=(
        f"can't reconcile config {old_mc.name} with {new_mc.name}: {reason}"))


def _check_without_ostree(os_diff: MachineConfigDiff, old_mc: RenderedConfig,
                          new_mc: RenderedConfig, root: Path) -> None:
    """Off rpm-ostree only kernel arguments can change, and only on a GRUB host."""
    not_grub = grub.not_grub_host(root) if os_diff.kargs else None
    fields = [label for flag, label in (
        (os_diff.os_update, "osImageURL"), (bool(not_grub), "kernelArguments"),
        (os_diff.kernel_type, "kernelType"), (os_diff.extensions, "extensions")) if flag]
    if fields == ["kernelArguments"]:
        raise _unreconcilable(old_mc, new_mc,
            "changes to kernelArguments need rpm-ostree or GRUB, and this node has "
            f"neither ({OSTREE_BOOTED} is absent; {not_grub})")
    if fields:
        raise _unreconcilable(old_mc, new_mc,
            f"changes to {', '.join(fields)} need rpm-ostree, and this node is not "
            f"rpm-ostree based ({OSTREE_BOOTED} is absent)")
    try:
        grub.checked_arguments(new_mc)
    except grub.GrubError as err:
        raise _unreconcilable(old_mc, new_mc, str(err)) from err


def plan_update(old: AnyConfig, new: AnyConfig, *, root: Path = Path("/"),
                policy: NodeDisruptionPolicy = DEFAULT_POLICY, check_node: bool = True
                ) -> UpdatePlan:
    """Diff, reconcilability and the post-config action; raises NotReconcilableError."""
    old_mc, new_mc = RenderedConfig.of(old), RenderedConfig.of(new)
    old_name, new_name = old_mc.name, new_mc.name
    try:
        # first: it also parses both configs, so nothing below sees one that does not parse
        check_reconcilable(old_mc, new_mc)
    except NotReconcilableError as err:
        raise _unreconcilable(old_mc, new_mc, f"configs {old_name}, {new_name} are not "
                                              f"reconcilable: {err}") from err
    force = node_state.force_file_present(root)
    diff = compute_diff(old_mc, new_mc, force=force)
    if check_node:
        fips_reason = _fips_reason(new_mc)
        if fips_reason:
            raise _unreconcilable(old_mc, new_mc, fips_reason)
        # the forcefile's forced OS update means nothing without rpm-ostree, so it is not refused
        os_diff = compute_diff(old_mc, new_mc) if force else diff
        if os_diff.os_level and not ostree_booted(root):
            _check_without_ostree(os_diff, old_mc, new_mc, root)
        if os_diff.extensions:
            raise _unreconcilable(old_mc, new_mc, "extensions need the OS extensions container, "
                                                  "which this daemon does not install yet")
    actions = post_config_actions(diff, policy, force=force)
    drain = drain_required(actions, old_mc.ignition, new_mc.ignition)
    plan = UpdatePlan(old_name, new_name, diff, actions, drain, force)
    log.info("update %s -> %s: %s", old_name, new_name, plan.summary())
    return plan


class _UnitOps:
    """Unit-file enablement done through systemd, with the prior states needed to undo it.

    Unit file states are asked once per unit and remembered until something that changes them
    (an enable, disable or preset of that unit, or a unit file write: `forget()`)."""

    def __init__(self, systemd: SystemdApi) -> None:
        self.systemd = systemd
        self.prior: dict[str, str] = {}
        self.touched = False
        self._states: dict[str, str] = {}
        # the earliest state seen of each unit: before this update changed it, when asked then
        self._first_seen: dict[str, str] = {}

    def state(self, name: str) -> str:
        """GetUnitFileState, answered from memory while nothing changed the unit."""
        known = self._states.get(name)
        if known is None:
            known = self._states[name] = self.systemd.unit_file_state(name)
            self._first_seen.setdefault(name, known)
        return known

    def ask(self, names: list[str]) -> None:
        """The states of `names` not known yet, in one call where systemd offers it (one
        ListUnitFilesByPatterns, not a GetUnitFileState per unit)."""
        unknown = [name for name in dict.fromkeys(names) if name not in self._states]
        if unknown:
            for name, known in unit_file_states(self.systemd, unknown).items():
                self._states[name] = known
                self._first_seen.setdefault(name, known)

    def forget(self, names: list[str] | None = None) -> None:
        if names is None:
            self._states.clear()
        else:
            for name in names:
                self._states.pop(name, None)

    def _remember(self, names: list[str]) -> None:
        for name in names:
            if name not in self.prior:
                self.prior[name] = self._first_seen.get(name) or self.state(name)

    def enable(self, names: list[str]) -> None:
        if names:
            self._remember(names)
            self.forget(names)
            self.systemd.enable(names)
            self.touched = True

    def disable(self, names: list[str]) -> None:
        if names:
            self._remember(names)
            self.forget(names)
            self.systemd.disable(names)
            self.touched = True

    def preset(self, names: list[str]) -> None:
        if names:
            self._remember(names)
            self.forget(names)
            try:
                self.systemd.preset(names)
                self.touched = True
            except SystemdError as err:
                log.info("preset of %s failed, ignored as MCO does: %s", names, err)

    def rollback(self) -> None:
        for name, prior in self.prior.items():
            try:
                if prior in ("enabled", "enabled-runtime"):
                    self.systemd.enable([name])
                elif prior in ("disabled", "not-found"):
                    self.systemd.disable([name])
            except SystemdError as err:
                log.error("rollback of unit %s to %s failed: %s", name, prior, err)


def _write_everything(plan: UpdatePlan, old_ign: Mapping[str, Any], new_ign: Mapping[str, Any],
                      writer: FileWriter, units: _UnitOps) -> tuple[bool, bool]:
    """All file, unit and passwd writes of the update: (unit files changed, sshd must reload)."""
    old_files, new_files = files_by_path(old_ign), files_by_path(new_ign)
    old_units, new_units = units_by_name(old_ign), units_by_name(new_ign)
    for unit in [*old_units.values(), *new_units.values()]:
        # before anything is written: a unit name with a "/" would leave the unit directory
        check_unit_name(str(unit["name"]))
        for dropin in unit.get("dropins") or []:
            check_unit_name(str(dropin["name"]), f"drop-in of {unit['name']}")
    # every file of B is written, not just the changed ones: a crashed run then converges
    writer.write_files(new_files.values())
    dropin_paths = {f"/etc/systemd/system/{u}.d/{d['name']}" for u, unit in new_units.items()
                    for d in unit.get("dropins") or []}
    for path in plan.diff.files_removed:
        if path in dropin_paths:
            log.info("stale %s is now a systemd drop-in: kept", path)
            continue
        writer.remove_stale(path)
    to_write = sorted(new_units) if plan.force else [*plan.diff.units_added,
                                                      *plan.diff.units_changed]
    # an enabled unit whose contents change is disabled first so a changed [Install] is honoured
    units.ask([n for n in to_write if new_units[n].get("contents") and n in old_units])
    units.disable([n for n in to_write if new_units[n].get("contents") and n in old_units
                   and units.state(n) == "enabled"])
    unit_files_changed = False
    with writer.batched():  # unit files and drop-ins: one batch of atomic writes
        for name in to_write:
            unit_files_changed |= writer.write_unit(new_units[name])
    for name in plan.diff.units_removed:
        old_unit = old_units[name]
        if old_unit.get("contents"):
            units.disable([name])
        else:
            units.preset([name])
        unit_files_changed |= writer.remove_stale_unit(old_unit, None)
    for name in plan.diff.units_changed:
        unit_files_changed |= writer.remove_stale_unit(old_units[name], new_units[name])
    if unit_files_changed:
        units.forget()  # written, masked or removed unit files have new states
    # asked in two calls, each just before its use: enabling a unit can change another's
    # state (an `Also=` in its [Install]), which the disabling below must see
    units.ask(sorted(n for n, u in new_units.items() if u.get("enabled") is True))
    units.enable(sorted(n for n, u in new_units.items() if u.get("enabled") is True
                        and not u.get("mask")
                        and units.state(n) != "not-found"))
    if units.touched:
        units.forget()
    units.ask(sorted(n for n, u in new_units.items() if u.get("enabled") is False))
    units.disable(sorted(n for n, u in new_units.items() if u.get("enabled") is False
                         and units.state(n) not in ("not-found", "masked")))
    units.preset(sorted(n for n in to_write if "enabled" not in new_units[n]
                        and new_units[n].get("contents") and not new_units[n].get("mask")))
    reload_sshd = bool(plan.diff.passwd) and apply_passwd(writer, old_ign, new_ign)
    return unit_files_changed, reload_sshd


def _reload_sshd(systemd: SystemdApi) -> None:
    """sshd reads the key drop-in passwd.py just installed; a failure leaves the keys written
    and is logged (the next sshd restart reads them), it does not fail the update."""
    for name in SSH_SERVICES:
        try:
            if systemd.unit_file_state(name) in ("not-found", ""):
                continue
            systemd.reload_unit(name)
            log.info("reloaded %s: it reads core's SSH keys from authorized_keys.d", name)
            return
        except SystemdError as err:
            log.warning("reloading %s failed: %s", name, err)
            return


def _perform(action: Action, systemd: SystemdApi) -> None:
    try:
        if action.type is ActionType.RELOAD:
            systemd.reload_unit(action.service)
        elif action.type is ActionType.SPECIAL:
            systemd.reload_unit("crio.service")
        elif action.type is ActionType.RESTART:
            systemd.restart_unit(action.service)
    except SystemdError as err:
        verb = "restarting {} service" if action.type is ActionType.RESTART else \
            "reloading {} configuration"
        service = action.service or "crio.service"
        raise RuntimeError(f"could not apply update: {verb.format(service)} failed. "
                           f"Error: {err}") from err


def _kubelet_before(plan: UpdatePlan, kubelet: KubeletHealth | None) -> bool | None:
    """Before a reboot or a kubelet restart: whether the kubelet answers (None: not asked)."""
    restarts_kubelet = any(a.type is ActionType.RESTART and a.service == KUBELET_UNIT
                           for a in plan.actions)
    if kubelet is None or not (plan.reboot or restarts_kubelet):
        return None
    result = kubelet.check()
    healthy = bool(result and result.healthy)
    log.info("kubelet before the %s: %s", "reboot" if plan.reboot else "restart",
             result or "healthz disabled")
    return healthy


def apply_update(old: AnyConfig, new: AnyConfig, systemd: SystemdApi, *,
                 root: Path = Path("/"), policy: NodeDisruptionPolicy = DEFAULT_POLICY,
                 request_drain: Callable[[str], None] | None = None,
                 os_runner: Runner = run_rpm_ostree,
                 kubelet: KubeletHealth | None = None,
                 progress: NodeProgress | None = None,
                 update_grub: grub.UpdateGrub = grub.run_update_grub,
                 reboot: Callable[[str], None] | None = None) -> UpdateOutcome:
    """Move the node from `old_mc` to `new_mc`; the state file says how it ended.

    With `kubelet`, a kubelet that answered before a restart of kubelet.service must answer
    again within its bound (else Degraded), and whether it answered before a reboot is recorded
    for `resume_after_boot` and the daemon. `progress` hears of each phase as it begins and
    ends (the node's MachineConfigNode). Kernel arguments go through rpm-ostree (`os_runner`)
    or, on a GRUB host, a drop-in and `update_grub`; the reboot goes through `reboot` (default:
    `systemd.reboot`)."""
    # each data URL is decoded once: parsing the configs decodes them to check them, and the
    # writes reuse those bytes (the memory is dropped when the update ends)
    with decoded_once():
        return _apply_update(old, new, systemd, root=root, policy=policy,
                             request_drain=request_drain, os_runner=os_runner, kubelet=kubelet,
                             progress=progress, update_grub=update_grub, reboot=reboot)


def _apply_update(old: AnyConfig, new: AnyConfig, systemd: SystemdApi, *, root: Path,
                  policy: NodeDisruptionPolicy, request_drain: Callable[[str], None] | None,
                  os_runner: Runner, kubelet: KubeletHealth | None,
                  progress: NodeProgress | None, update_grub: grub.UpdateGrub,
                  reboot: Callable[[str], None] | None) -> UpdateOutcome:
    old_mc, new_mc = RenderedConfig.of(old), RenderedConfig.of(new)
    new_name = new_mc.name

    def record(state: str, reason: str = "", **fields: Any) -> None:
        """The update's state in the state file; every record names the desired config."""
        node_state.write_state(root, state, reason, desiredConfig=new_name, **fields)

    if node_state.reports_working(node_state.read_state(root).get("state")):
        record(C.STATE_WORKING)
    try:
        plan = plan_update(old_mc, new_mc, root=root, policy=policy)
    except NotReconcilableError as err:
        record(C.STATE_UNRECONCILABLE, str(err))
        if progress is not None:
            progress.incompatible(old_mc.name, new_name, str(err))
        return UpdateOutcome(C.STATE_UNRECONCILABLE, str(err))
    if progress is not None:
        progress.prepared(plan.actions, plan.drain)
    if plan.force:
        with contextlib.suppress(FileNotFoundError):
            NodeRoot(root).unlink(C.FORCE_FILE_PATH)
    kubelet_before = _kubelet_before(plan, kubelet)
    # past the point of no return every record claims B (and the kubelet's health before it)
    claimed: dict[str, Any] = {"currentConfig": new_name} if kubelet_before is None else \
        {"currentConfig": new_name, KUBELET_HEALTHY_BEFORE: kubelet_before}
    if plan.drain:
        if request_drain is not None:
            request_drain(new_name)
        else:
            log.info("drain required, but offline there is no cluster to drain from: skipped")
    elif progress is not None:
        progress.drain_skipped()
    os_update = plan.diff.os_level
    if progress is not None:
        progress.files_applying(os_update, bool(plan.diff.passwd))
    journal = Journal()
    # the D-Bus manager acts on the running system: it may only mask units when root is "/"
    writer = FileWriter(root, journal, masker=systemd if root == Path("/") else None)
    units = _UnitOps(systemd)
    old_ign, new_ign = old_mc.ignition, new_mc.ignition
    os_staged = False
    pivot_error = False
    grub_prior: PriorState | None = None
    try:
        unit_files_changed, reload_sshd = _write_everything(plan, old_ign, new_ign, writer,
                                                            units)
        if plan.diff.os_level and ostree_booted(root):
            os_staged = True
            try:
                apply_os_changes(old_mc, new_mc, plan.diff, os_runner)
            except OSUpdateError:
                pivot_error = True
                raise
        elif (plan.diff.kargs or plan.force) and grub.is_grub_host(root):
            # restores the previous drop-in and grub.cfg itself when update-grub fails
            grub_prior = grub.apply_kernel_arguments(root, new_mc, update_grub)
        needs_reload = unit_files_changed or units.touched or any(
            a.type is ActionType.DAEMON_RELOAD for a in plan.actions)
        if needs_reload:
            # exactly one manager Reload per update, however many units changed
            systemd.daemon_reload()
        writer.write_text(C.CURRENT_CONFIG_PATH, node_state.current_config_bytes(new_mc),
                          node_state.STATE_FILE_MODE)
        journal.sync()
    except Exception as err:  # noqa: BLE001 - every failure before the point of no return rolls back
        log.error("update to %s failed, rolling back: %s", new_name, err)
        if os_staged:
            rollback_os_changes(os_runner)
        units.rollback()
        journal.rollback()
        if grub_prior is not None:
            grub.rollback_kernel_arguments(root, grub_prior, update_grub)
        try:
            systemd.daemon_reload()
        except SystemdError as reload_err:
            log.error("systemd Reload after rollback failed: %s", reload_err)
        reason = f"failed to apply {new_name}, rolled back to {plan.old_name}: {err}"
        record(C.STATE_DEGRADED, reason)
        return UpdateOutcome(C.STATE_DEGRADED, reason, plan, pivot_error=pivot_error)
    # point of no return: the node now claims to be in B
    if progress is not None:
        progress.files_applied(os_update, bool(plan.diff.passwd))
    if plan.reboot:
        rationale = f"Node will reboot into config {new_name}"
        record(C.STATE_WORKING, postConfigAction=node_state.REBOOTING, **claimed)
        if progress is not None:
            progress.rebooting()
        (reboot or systemd.reboot)(rationale)
        return UpdateOutcome(C.STATE_WORKING, plan=plan, rebooting=True)
    try:
        for action in plan.actions:
            if action.service in plan.diff.units_removed:
                # its unit file is gone with this update; there is nothing left to restart
                log.info("post-config action %s skipped: the unit was removed", action)
                continue
            log.info("post-config action: %s", action)
            _perform(action, systemd)
            if progress is not None:
                progress.post_action(action)
        if reload_sshd:  # the host's manager, whatever the root (the DaemonSet's is /rootfs)
            _reload_sshd(systemd)
        validate_on_disk(new_mc, root, systemd)
    except (RuntimeError, OnDiskValidationError) as err:
        record(C.STATE_DEGRADED, str(err), **claimed)
        return UpdateOutcome(C.STATE_DEGRADED, str(err), plan)
    if kubelet is not None and kubelet_before and kubelet_enabled(new_mc) and any(
            a.type is ActionType.RESTART and a.service == KUBELET_UNIT for a in plan.actions):
        unhealthy = kubelet.wait_healthy(f"after restarting {KUBELET_UNIT}")
        if unhealthy:
            record(C.STATE_DEGRADED, unhealthy, **claimed)
            return UpdateOutcome(C.STATE_DEGRADED, unhealthy, plan, kubelet_unhealthy=True)
    record(C.STATE_DONE, postConfigAction="", lastActions=[str(a) for a in plan.actions],
           **claimed)
    return UpdateOutcome(C.STATE_DONE, plan=plan)


def kubelet_expected(root: Path, mc: RenderedConfig) -> bool:
    """The config runs a kubelet and it answered before the last reboot or restart."""
    return kubelet_enabled(mc) and node_state.read_state(root).get(KUBELET_HEALTHY_BEFORE) is True


def resume_after_boot(systemd: SystemdApi | None, root: Path = Path("/"),
                      os_runner: Runner = run_rpm_ostree,
                      kubelet: KubeletHealth | None = None,
                      cmdline: CmdlineReader = grub.booted_cmdline) -> UpdateOutcome:
    """At boot: validate the disk against the recorded current config (and the booted kernel
    arguments: rpm-ostree's, or `cmdline` on a GRUB host), then (with `kubelet`) wait for a
    kubelet that answered before the reboot to answer again; Done or Degraded."""
    current = node_state.read_current_config(root)
    if current is None:
        log.info("no current config recorded: nothing to validate")
        return UpdateOutcome(node_state.read_state(root).get("state") or "")
    name = current.name
    if node_state.force_file_present(root):
        log.info("forcefile present: boot validation skipped")
        reason = ""
    else:
        try:
            validate_on_disk(current, root, systemd)
            validate_booted(current, root, os_runner, cmdline)
            reason = ""
        except OnDiskValidationError as err:
            reason = str(err)
    recorded = node_state.read_state(root)
    if not reason and recorded.get("desiredConfig", name) != name and recorded.get("state") in (
            C.STATE_DEGRADED, C.STATE_UNRECONCILABLE):
        # the disk matches the current config, but the failed move to the desired one still stands
        log.info("disk matches %s; %s towards %s kept", name, recorded["state"],
                 recorded["desiredConfig"])
        return UpdateOutcome(str(recorded["state"]), str(recorded.get("reason", "")))
    kubelet_unhealthy = False
    if not reason and kubelet is not None and kubelet_expected(root, current):
        reason = kubelet.wait_healthy(f"after the reboot into {name}") or ""
        kubelet_unhealthy = bool(reason)
    result = C.STATE_DEGRADED if reason else C.STATE_DONE
    node_state.write_state(root, result, reason, currentConfig=name, postConfigAction="")
    return UpdateOutcome(result, reason, kubelet_unhealthy=kubelet_unhealthy)
