"""The `mcd` command line: `start` (the daemon), `firstboot`, and plan, apply, validate, resume
offline on one node (A and B are MachineConfig YAML or JSON files).
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml

from machineconfig import constants as C
from machineconfig import localdrain
from machineconfig.constants import NODE_CREDENTIALS_PATH
from machineconfig.errors import MachineConfigError
from machineconfig.reconcile import NotReconcilableError
from machineconfig.rendered_config import RenderedConfig
from machineconfig.yamlload import safe_load
from mcd import state as node_state
from machineconfig.disruption import DEFAULT_POLICY, NodeDisruptionPolicy, load_policy
from mcd.local_drain import LocalDrain, LocalDrainBlocked, LocalReturnError, UnitControl
from mcd.kubelet_health import WAIT_BOUND, KubeletHealth
from mcd.on_disk_validation import OnDiskValidationError, find_mismatches, validate_booted
from mcd.systemd import Systemd, SystemdApi
from mcd.update import apply_update, plan_update, resume_after_boot

if TYPE_CHECKING:  # the daemon's FleetLock client (http.client, ssl) is no part of `mcd apply`
    from mcd.reboot_lock import RebootLock

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNRECONCILABLE = 0, 1, 2, 3


def load_machine_config(path: Path) -> RenderedConfig:
    text = path.read_text()
    document: Any
    try:
        # rendered configs are JSON (a subset of YAML): the C JSON parser reads a 2 MB config in
        # ~20 ms, where the pure-Python YAML scanner needs seconds
        document = json.loads(text)
    except ValueError:
        document = safe_load(text, str(path))
    if not isinstance(document, dict) or "spec" not in document:
        raise ValueError(f"{path}: not a MachineConfig (no spec)")
    config = document["spec"].get("config")
    if isinstance(config, str):
        # some tools store the Ignition config as a JSON string
        document["spec"]["config"] = json.loads(config)
    meta = document.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        # a local file without a name is known by its path (as `mcd validate` always reported it)
        document["metadata"] = {**(meta if isinstance(meta, dict) else {}), "name": str(path)}
    return RenderedConfig(document)


def _policy(path: Path | None) -> NodeDisruptionPolicy:
    return load_policy(path) if path else DEFAULT_POLICY


def _systemd() -> SystemdApi:
    return Systemd()


def _kubelet(args: argparse.Namespace, systemd: SystemdApi) -> KubeletHealth:
    return KubeletHealth(args.root, args.kubelet_healthz_url or None, wait_bound=args.kubelet_wait,
                         unit_status=getattr(systemd, "unit_status", None))


def _add_kubelet_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubelet-healthz-url", metavar="URL",
                        help="the kubelet's health endpoint (default: from healthzBindAddress "
                        "and healthzPort of /etc/kubernetes/kubelet.conf, else "
                        "http://127.0.0.1:10248/healthz)")
    parser.add_argument("--kubelet-wait", type=float, default=WAIT_BOUND, metavar="SECONDS",
                        help="how long a kubelet that answered before a reboot or a kubelet "
                        "restart may take to answer again before the node is Degraded "
                        f"(default {WAIT_BOUND:g})")


def cmd_plan(args: argparse.Namespace) -> int:
    old, new = load_machine_config(args.current), load_machine_config(args.desired)
    try:
        plan = plan_update(old, new, root=args.root, policy=_policy(args.policy),
                           check_node=args.node_checks)
    except NotReconcilableError as err:
        print(f"unreconcilable: {err}")
        return EXIT_UNRECONCILABLE
    diff = plan.diff
    for label, items in (("file added", diff.files_added), ("file changed", diff.files_changed),
                         ("file removed", diff.files_removed), ("unit added", diff.units_added),
                         ("unit changed", diff.units_changed), ("unit removed", diff.units_removed)):
        for item in items:
            print(f"{label}: {item}")
    for flag, label in ((diff.passwd, "users: passwd (SSH keys, password hash)"),
                        (diff.kargs, "kernel arguments"), (diff.os_update, "OS image"),
                        (diff.kernel_type, "kernel type"), (diff.extensions, "extensions"),
                        (diff.fips, "FIPS")):
        if flag:
            print(f"changed: {label}")
    print(f"action: {plan.summary()}")
    return EXIT_OK


def _local_drain(args: argparse.Namespace, systemd: SystemdApi) -> LocalDrain:
    units = cast(UnitControl, systemd) if callable(getattr(systemd, "stop_unit", None)) else None
    return LocalDrain(args.root, units, socket.gethostname())


def _local_return(args: argparse.Namespace, systemd: SystemdApi, state: str,
                  reason: str) -> tuple[str, str]:
    """Offline, once the node is Done: what a local drain stopped is started again."""
    if state != C.STATE_DONE:
        return state, reason
    try:
        _local_drain(args, systemd).back(str(node_state.read_state(args.root).get(
            "currentConfig") or ""))
    except LocalReturnError as err:
        node_state.write_state(args.root, C.STATE_DEGRADED, str(err))
        return C.STATE_DEGRADED, str(err)
    return state, reason


def cmd_apply(args: argparse.Namespace) -> int:
    if args.root.resolve() != Path("/"):
        # systemd's Manager API only acts on the running system, never on another root
        print("mcd: apply works on the running system only (--root /)", file=sys.stderr)
        return EXIT_USAGE
    old, new = load_machine_config(args.current), load_machine_config(args.desired)
    systemd = _systemd()
    request_drain = None
    if args.local_drain:
        # the pool annotation's YAML: this host's entry under `nodes`, else the pool's
        policy = localdrain.parse(args.local_drain.read_text(), str(args.local_drain)).for_node(
            socket.gethostname())
        drainer = _local_drain(args, systemd)

        def request_drain(desired: str) -> None:
            drainer.drain(policy, desired)
    try:
        outcome = apply_update(old, new, systemd, root=args.root, policy=_policy(args.policy),
                               request_drain=request_drain, kubelet=_kubelet(args, systemd))
    except LocalDrainBlocked as err:
        # before any write: the node stays in A, nothing reboots
        node_state.write_state(args.root, C.STATE_DEGRADED, str(err))
        print(json.dumps({"state": C.STATE_DEGRADED, "reason": str(err), "rebooting": False,
                          "actions": []}))
        return EXIT_FAILED
    state, reason = outcome.state, outcome.reason
    if not outcome.rebooting:
        state, reason = _local_return(args, systemd, state, reason)
    print(json.dumps({"state": state, "reason": reason,
                      "rebooting": outcome.rebooting,
                      "actions": [str(a) for a in outcome.plan.actions] if outcome.plan else []}))
    if state == C.STATE_UNRECONCILABLE:
        return EXIT_UNRECONCILABLE
    return EXIT_FAILED if state == C.STATE_DEGRADED else EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    mc = load_machine_config(args.config)
    name = mc.name
    # every mismatch, not just the first: a person fixing a node wants the whole list
    mismatches = [str(OnDiskValidationError(name, detail)) for detail in
                  find_mismatches(mc, args.root, None if args.no_systemd else _systemd())]
    try:
        validate_booted(mc, args.root)
    except OnDiskValidationError as err:
        mismatches.append(str(err))
    if mismatches:
        print("\n".join(mismatches))
        return EXIT_FAILED
    print(f"on-disk state matches {name}")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace) -> int:
    systemd = _systemd()
    outcome = resume_after_boot(systemd, args.root, kubelet=_kubelet(args, systemd))
    state, reason = _local_return(args, systemd, outcome.state, outcome.reason)
    print(json.dumps({"state": state, "reason": reason}))
    return EXIT_FAILED if state == C.STATE_DEGRADED else EXIT_OK


def _labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        labels[key] = value
    return labels


def cmd_start(args: argparse.Namespace) -> int:
    from machineconfig.store import StoreError, close_store, store_url
    from mcd.cluster import connect
    from mcd.daemon import Daemon, Timeouts
    from mcd.metrics import DaemonMetrics, serve

    try:
        reboot_lock = _reboot_lock(args, args.node or socket.gethostname())
    except (ValueError, OSError) as err:
        print(f"mcd: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.root.resolve() != Path("/"):
        # In a container (the kube DaemonSet) the host's / is mounted at --root: files are
        # written under it, systemd is the host's (DBUS_SYSTEM_BUS_ADDRESS names its bus socket
        # under --root) and rpm-ostree runs chrooted into it.
        if not (args.root / "run/systemd/system").is_dir():
            print(f"mcd: --root {args.root} is not a running systemd host's root "
                  f"(no {args.root / 'run/systemd/system'}); start drives that host's systemd",
                  file=sys.stderr)
            return EXIT_USAGE
        from mcd import rpm_ostree
        rpm_ostree.set_host_root(args.root)
    try:
        url = store_url(args.store or "", args.kubeconfig) or None
    except StoreError as err:
        print(f"mcd: {err}", file=sys.stderr)
        return EXIT_USAGE
    node = args.node or socket.gethostname()
    metrics = DaemonMetrics()
    if args.metrics_listen:
        serve(metrics, args.metrics_listen)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    delay = 1.0
    while True:
        try:
            api = connect(url, args.state, node, args.root, credentials_path(args),
                          _labels(args.label))
            break
        except (StoreError, OSError, ValueError) as err:
            log.warning("store not reachable (%s), retrying in %.0fs", err, delay)
            if stop.wait(delay):
                return EXIT_OK
            delay = min(delay * 2, 60.0)
    if stop.is_set():  # SIGTERM while connecting (a blocking call): stop now, not at SIGKILL
        log.info("daemon stopped before it started")
        close_store(api)
        return EXIT_OK
    timeouts = Timeouts(kubelet_wait=args.kubelet_wait) if args.drift_poll is None else \
        Timeouts(drift_poll=args.drift_poll, drift_inotify=False, kubelet_wait=args.kubelet_wait)
    daemon = Daemon(api, node, _systemd(), root=args.root, metrics=metrics,
                    policy=_policy(args.policy), timeouts=timeouts,
                    kubelet_url=args.kubelet_healthz_url or None,
                    reboot_lock=reboot_lock)
    daemon.install_signal_handlers()
    if stop.is_set():  # SIGTERM after the check above went to the first handler: not lost
        daemon.stop_requested.set()
    daemon.run()
    return EXIT_FAILED if daemon.token_rejected else EXIT_OK


def _reboot_lock(args: argparse.Namespace, node: str) -> RebootLock | None:
    """`--fleetlock URL`: the FleetLock client the daemon takes reboot slots with."""
    if not args.fleetlock:
        return None
    from mcd.reboot_lock import RebootLock

    ca = args.fleetlock_ca.read_bytes() if args.fleetlock_ca else None
    return RebootLock(args.fleetlock, args.fleetlock_id or node, args.fleetlock_group, ca)


def _reboot(rationale: str) -> None:
    try:
        _systemd().reboot(rationale)
    except Exception as err:  # noqa: BLE001 - no D-Bus here: systemctl does the same
        log.info("reboot through D-Bus failed (%s): systemctl reboot", err)
        subprocess.run(["systemctl", "reboot"], check=True, timeout=60)


def cmd_firstboot(args: argparse.Namespace) -> int:
    from mcd import firstboot

    if not (args.url or args.pointer):
        try:
            reboot = firstboot.complete_encapsulated(args.root)
        except firstboot.FirstbootError as err:
            print(f"mcd: {err}", file=sys.stderr)
            return EXIT_FAILED
        if reboot and not args.no_reboot and args.root.resolve() == Path("/"):
            _reboot("Completing firstboot: the kernel arguments need a reboot")
        return EXIT_OK
    if args.pointer:
        source = firstboot.source_from_pointer(json.loads(args.pointer.read_text()))
    else:
        source = firstboot.Source(args.url)
    if args.ca:
        source.ca_pem = args.ca.read_bytes()
    token = args.token or (args.token_file.read_text().strip() if args.token_file else "")
    if token:
        source.headers["Authorization"] = f"Bearer {token}"
    try:
        config = firstboot.fetch(source, retry_for=args.retry_for)
        firstboot.apply_config(config, args.root)
        # on a GRUB host, before the reboot below: the first boot of the daemon checks them
        firstboot.apply_first_kernel_arguments(args.root)
    except firstboot.FirstbootError as err:
        print(f"mcd: {err}", file=sys.stderr)
        return EXIT_FAILED
    name = firstboot.config_name(args.root)
    firstboot.mark_done(args.root, name)
    if args.no_reboot or args.root.resolve() != Path("/"):
        print(json.dumps({"config": name, "rebooting": False}))
        return EXIT_OK
    _reboot(f"Completing firstboot provisioning to {name}")
    return EXIT_OK


def credentials_path(args: argparse.Namespace) -> Path:
    """--credentials, else the host's node-credentials.json under --root: in a container the
    host's file is at /rootfs/etc/..., not in the container's own /etc."""
    if args.credentials is not None:
        return Path(args.credentials)
    return Path(args.root) / NODE_CREDENTIALS_PATH.lstrip("/")


def _add_start(sub: Any) -> None:
    start = sub.add_parser("start", help="run the daemon: follow this node's desired config")
    start.add_argument("--node", help="node name (default: the hostname)")
    start.add_argument("--store", help="https://HOST:PORT (node API; default: the server in "
                       "--credentials), local:DIR with --state (same host), or kube / "
                       "kube:KUBECONFIG (the Kubernetes API; in-cluster config by default)")
    start.add_argument("--state", help="state directory of a local: store")
    start.add_argument("--kubeconfig", help="kubeconfig of --store kube")
    start.add_argument("--credentials", type=Path,
                       help=f"node credentials (default: {NODE_CREDENTIALS_PATH} under --root)")
    start.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                       help="node label at registration (default: the pool's role label)")
    start.add_argument("--metrics-listen", default="127.0.0.1:8797",
                       help="HOST:PORT of /metrics; empty to disable")
    start.add_argument("--policy", type=Path)
    start.add_argument("--root", type=Path, default=Path("/"))
    start.add_argument("--drift-poll", type=float, metavar="SECONDS",
                       help="poll the managed paths this often instead of watching them with "
                       "inotify (default: inotify)")
    start.add_argument("--fleetlock", metavar="URL",
                       help="a FleetLock server (https; e.g. mcs's https://HOST:22623/fleetlock): "
                       "a reboot slot is taken before a drain or reboot, given back once Done")
    start.add_argument("--fleetlock-group", default="default",
                       help="FleetLock group (default: default, mcs's worker pool)")
    start.add_argument("--fleetlock-id", help="FleetLock client id (default: the node name)")
    start.add_argument("--fleetlock-ca", type=Path, help="PEM CA of the FleetLock server "
                       "(default: the system's trust store)")
    _add_kubelet_options(start)
    start.set_defaults(func=cmd_start)
    first = sub.add_parser("firstboot", help="fetch and apply the full config a pointer names "
                           "(with --url or --pointer), or complete the encapsulated config")
    first.add_argument("--url", help="https://HOST:22623/config/<pool>")
    first.add_argument("--pointer", type=Path, help="an Ignition pointer config (URL, CA, token)")
    first.add_argument("--ca", type=Path, help="PEM file of the server's CA")
    first.add_argument("--token", help="bearer token of the pool")
    first.add_argument("--token-file", type=Path)
    first.add_argument("--retry-for", type=float, default=0.0,
                       help="give up fetching after this many seconds (default: never)")
    first.add_argument("--root", type=Path, default=Path("/"))
    first.add_argument("--no-reboot", action="store_true")
    first.set_defaults(func=cmd_firstboot)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcd", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="what an update from A to B changes and costs")
    plan.add_argument("current", type=Path)
    plan.add_argument("desired", type=Path)
    plan.add_argument("--policy", type=Path, help="MachineConfiguration with nodeDisruptionPolicy")
    plan.add_argument("--root", type=Path, default=Path("/"))
    plan.add_argument("--no-node-checks", dest="node_checks", action="store_false",
                      help="skip the FIPS and rpm-ostree checks of this host")
    plan.set_defaults(func=cmd_plan)
    apply = sub.add_parser("apply", help="apply B over A on this node")
    apply.add_argument("--current", type=Path, required=True)
    apply.add_argument("--desired", type=Path, required=True)
    apply.add_argument("--policy", type=Path)
    apply.add_argument("--local-drain", type=Path, metavar="FILE",
                       help="what a drain stops and runs on this host: the YAML of a pool's "
                       f"{localdrain.POOL_ANNOTATION} annotation")
    apply.add_argument("--root", type=Path, default=Path("/"))
    _add_kubelet_options(apply)
    apply.set_defaults(func=cmd_apply)
    validate = sub.add_parser("validate", help="check the disk against a config")
    validate.add_argument("--config", type=Path, required=True)
    validate.add_argument("--root", type=Path, default=Path("/"))
    validate.add_argument("--no-systemd", action="store_true", help="skip unit enablement checks")
    validate.set_defaults(func=cmd_validate)
    resume = sub.add_parser("resume", help="at boot: validate the current config, report state")
    resume.add_argument("--root", type=Path, default=Path("/"))
    _add_kubelet_options(resume)
    resume.set_defaults(func=cmd_resume)
    _add_start(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="mcd: %(name)s: %(message)s", stream=sys.stderr)
    try:
        result: int = args.func(args)
    except (OSError, ValueError, yaml.YAMLError, MachineConfigError,
            subprocess.SubprocessError) as err:
        print(f"mcd: {err}", file=sys.stderr)
        return EXIT_USAGE
    return result


if __name__ == "__main__":
    sys.exit(main())
