"""Nodes that join the embedded cluster: nspawn nodes of tests/node whose only cluster input is
a pointer config, a supervisor that boots them again when they reboot, and the `scripts/nodes`
command line.

    python -m tests.e2e.nodes N [--state DIR]   # N nodes join the cluster scripts/cluster runs
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.leaks import owned_by_fixture
from tests.node.harness import Node, NodeFactory, reap_stale
from tests.node.rootfs import REBOOT_EXIT_STATUS, ensure_rootfs, missing_prerequisites

log = logging.getLogger(__name__)

RUNS_DIR = Path("/var/tmp/machine-config-tests")
REPO_ROOT = Path(__file__).resolve().parents[2]
# The project's own first-boot unit: `mcd firstboot --pointer` on the pointer config it finds here.
FIRSTBOOT_UNIT_NAME = "machine-config-daemon-pointer.service"
POINTER_PATH = "/etc/machine-config-daemon/pointer.ign"


def prepare_pointer_node(node: Node, pointer: bytes) -> None:
    """After `node.create()`, before the first boot: the node knows the cluster only through
    the pointer config; no daemon runs until `mcd firstboot` installed it from the server."""
    root = node.root
    # the node harness installs a boot-time `mcd resume` unit; a machine that has not joined
    # has no daemon (the served config brings machine-config-daemon.service)
    (root / "etc/systemd/system/multi-user.target.wants/machine-config-daemon.service").unlink(
        missing_ok=True)
    (root / "usr/lib/systemd/system/machine-config-daemon.service").unlink(missing_ok=True)
    target = root / POINTER_PATH.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(pointer)
    target.chmod(0o600)  # it carries the pool's bootstrap token
    unit = root / "usr/lib/systemd/system" / FIRSTBOOT_UNIT_NAME
    unit.write_text((REPO_ROOT / "contrib/systemd" / FIRSTBOOT_UNIT_NAME).read_text())
    wants = root / "etc/systemd/system/multi-user.target.wants" / FIRSTBOOT_UNIT_NAME
    wants.parent.mkdir(parents=True, exist_ok=True)
    wants.unlink(missing_ok=True)
    wants.symlink_to(f"/usr/lib/systemd/system/{FIRSTBOOT_UNIT_NAME}")


def add_pointer_nodes(factory: NodeFactory, names: Iterable[str], pointer: bytes) -> list[Node]:
    """Create and boot pointer-only nodes (not waiting: they reboot during their first boot)."""
    nodes = []
    for name in names:
        node = Node(name, factory.base, factory.workroot / name, factory.ssh_key)
        factory.nodes.append(node)  # the factory removes it whatever happens next
        node.create()
        prepare_pointer_node(node, pointer)
        node.boot()
        nodes.append(node)
    return nodes


@dataclass
class Reboot:
    node: str
    exited: float  # monotonic time nspawn was seen gone (status 133)
    booted: float  # monotonic time it was started again


@dataclass
class RebootSupervisor:
    """Boots a node again when nspawn ends with 133 (a reboot inside it), as a machine would.

    Any other exit is a crash: recorded in `failures`, not restarted.
    """

    nodes: list[Node]
    interval: float = 0.1
    reboots: list[Reboot] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _dead: set[str] = field(default_factory=set)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reboot-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Before nodes are powered off: their exits are then no reboots."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def reboots_of(self, name: str) -> list[Reboot]:
        return [r for r in self.reboots if r.node == name]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for node in list(self.nodes):
                proc = node.proc
                if node.name in self._dead or proc is None or proc.poll() is None:
                    continue
                exited = time.monotonic()
                node.exit_statuses.append(proc.returncode)
                if proc.returncode != REBOOT_EXIT_STATUS:
                    self._dead.add(node.name)
                    self.failures.append(f"{node.name}: nspawn exited {proc.returncode}:\n"
                                         f"{node.console_tail()}")
                    log.error("node %s crashed (nspawn exit %d)", node.name, proc.returncode)
                    continue
                try:
                    node.boot()
                    if node.proc is not None:  # the fixture's node, not the running test's
                        owned_by_fixture(node.proc.pid)
                except Exception as err:  # noqa: BLE001 - recorded, the test reports it
                    self._dead.add(node.name)
                    self.failures.append(f"{node.name}: boot after reboot failed: {err}")
                    continue
                self.reboots.append(Reboot(node.name, exited, time.monotonic()))
                log.info("node %s rebooted (boot %d)", node.name, node.boots)


# ---- scripts/nodes ----------------------------------------------------------------------------

def _cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/nodes",
        description="Boot N systemd-nspawn nodes that join the cluster scripts/cluster runs "
                    "(pointer config + mcd firstboot), wait until each is Done, keep them "
                    "running until Ctrl-C, then power them off and delete them.")
    parser.add_argument("count", type=int, help="number of nodes")
    parser.add_argument("--state", type=Path, default=Path("/var/lib/machine-config"),
                        help="the cluster's state dir (holds cluster.json; default "
                             "/var/lib/machine-config, as scripts/cluster run by root)")
    parser.add_argument("--pool", default="worker")
    parser.add_argument("--prefix", default="node", help="node names: PREFIX-1 ... PREFIX-N")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for Done")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from tests.e2e.cluster import (DESIRED, STATE, CURRENT, node_summary, open_local_store,
                                   pointer_config, pool_token, wait_until)

    missing = missing_prerequisites()
    if missing:
        print(f"scripts/nodes: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        info = json.loads((args.state / "cluster.json").read_text())
    except OSError as err:
        print(f"scripts/nodes: no running cluster ({err}); start scripts/cluster first",
              file=sys.stderr)
        return 2
    state = Path(info["state"])
    pointer = pointer_config(info["url"], Path(info["ca"]), pool_token(state, args.pool),
                             args.pool)
    reap_stale(RUNS_DIR)
    factory = NodeFactory(ensure_rootfs(), RUNS_DIR / f"nodes-{os.getpid()}")
    supervisor = RebootSupervisor([])
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        names = [f"{args.prefix}-{i}" for i in range(1, args.count + 1)]
        supervisor.nodes.extend(add_pointer_nodes(factory, names, pointer))
        supervisor.start()
        store = open_local_store(Path(info["input"]), state)

        def all_done() -> bool:
            if stop.is_set():
                raise KeyboardInterrupt
            nodes = {n.name: n.annotations for n in store.list_nodes()}
            return all(nodes.get(name, {}).get(STATE) == "Done" and
                       nodes[name].get(CURRENT) == nodes[name].get(DESIRED) for name in names)

        wait_until(all_done, args.timeout, f"{names} to join and reach Done",
                   lambda: node_summary(store.list_nodes()) + "\n" + "\n".join(supervisor.failures))
        print(f"\n{args.count} node(s) joined pool {args.pool} and are Done:")
        for node in supervisor.nodes:
            print(f"  ssh -F {node.ssh_config} {node.name}      (console: {node.console_log})")
        print("Ctrl-C (or kill -TERM %d) powers them off and deletes them." % os.getpid())
        sys.stdout.flush()
        while not stop.wait(1):
            pass
        return 0
    except AssertionError as err:
        print(f"scripts/nodes: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        supervisor.stop()
        factory.close()


if __name__ == "__main__":
    sys.exit(_cli())
