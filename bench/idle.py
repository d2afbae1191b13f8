"""Benchmark: the daemon at rest on a real node, its wake-ups and memory, against baselines
measured on the same node in the same run.

The e2e harness runs the embedded cluster on the host (`mcc start` + `mcs start` over a copy of
examples/cluster, HTTPS on loopback) and boots one systemd-nspawn node that has only the worker
pool's pointer config: it joins through `mcd firstboot`, reboots, and runs `mcd start` as
machine-config-daemon.service against the server's node API, with its metrics listener on a free
port. Once the node is Done and a settling pause has passed, the bench samples, every 50 ms for
--quiet seconds (default 120), /proc/PID/task/*/status and /proc/PID/stat of:

- the daemon as built (inotify drift monitor),
- the same daemon restarted with `--drift-poll 2` (the old 2 s lstat poll, forced by its option;
  skipped when the daemon has no such option, as on code from before it),
- `sleep infinity` started in the node beside it (the floor: a process that never wakes).

Per process it prints, per 30 s: wake-ups = voluntary + involuntary context switches summed over
all threads (a thread that blocks and is woken again counts once; one HTTPS long poll costs a few),
wake bursts = 50 ms sampling intervals in which any thread ran (a burst of switches for one
event counts once), CPU ms (utime + stime), and the RSS at the end (VmRSS). Targets (issue 18):
fewer than 1 wake-up per 30 s at rest, RSS at most 35 MB.

    sudo .venv/bin/python bench/idle.py [--quiet 120] [--settle 20]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DAEMON_UNIT = "machine-config-daemon.service"
SLEEP_UNIT = "bench-idle-sleep.service"
BENCH_ENV = "/etc/default/mcd-bench"
DROPIN = f"/etc/systemd/system/{DAEMON_UNIT}.d/50-bench-idle.conf"
SAMPLE_INTERVAL = 0.05
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- /proc --------------------------------------------------------------------------------------

def _switches(pid: int) -> dict[int, int]:
    """Context switches (voluntary + involuntary) per thread of `pid`."""
    counts = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as status:
                # voluntary_ctxt_switches and nonvoluntary_ctxt_switches
                counts[int(tid)] = sum(int(line.split()[1]) for line in status
                                       if "ctxt_switches:" in line)
        except OSError:
            continue  # the thread ended
    return counts


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


@dataclass
class Figures:
    """One process over one quiet window."""

    label: str
    pid: int
    seconds: float = 0.0
    switches: int = 0
    bursts: int = 0
    cpu_ticks: int = 0
    rss_kb: int = 0
    threads: int = 0
    by_thread: dict[int, int] = field(default_factory=dict)  # tid -> switches in the window
    _first: dict[int, int] = field(default_factory=dict)
    _last: dict[int, int] = field(default_factory=dict)
    _cpu0: int = 0

    def start(self) -> None:
        self._first = _switches(self.pid)
        self._last = dict(self._first)
        self._cpu0 = _cpu_ticks(self.pid)

    def sample(self) -> None:
        now = _switches(self.pid)
        if any(now.get(tid, 0) != self._last.get(tid) for tid in now):
            self.bursts += 1
        self._last.update(now)

    def finish(self, seconds: float) -> None:
        self.seconds = seconds
        # threads started inside the window count from 0
        self.by_thread = {tid: last - self._first.get(tid, 0) for tid, last in self._last.items()}
        self.switches = sum(self.by_thread.values())
        self.cpu_ticks = _cpu_ticks(self.pid) - self._cpu0
        self.rss_kb = _rss_kb(self.pid)
        self.threads = len(_switches(self.pid))

    def per_30s(self, value: float) -> float:
        return value * 30.0 / self.seconds if self.seconds else 0.0


def measure(processes: list[Figures], seconds: float) -> None:
    for proc in processes:
        proc.start()
    began = time.monotonic()
    next_at = began
    while True:
        next_at += SAMPLE_INTERVAL
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for proc in processes:
            proc.sample()
        if time.monotonic() - began >= seconds:
            break
    for proc in processes:
        proc.finish(time.monotonic() - began)


# ---- the node -----------------------------------------------------------------------------------

def host_pid(node: Any, unit: str) -> int:
    """The host's PID of a unit's main process in the node (nspawn has its own PID namespace)."""
    ns_pid = int(node.nsenter(["systemctl", "show", "-P", "MainPID", unit]).stdout.strip() or 0)
    if not ns_pid:
        raise SystemExit(f"{unit} is not running in {node.name}")
    pidns = os.readlink(f"/proc/{node.leader()}/ns/pid")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != pidns:
                continue
            with open(f"/proc/{entry}/status") as status:
                nspid = next(line for line in status if line.startswith("NSpid:")).split()
        except (OSError, StopIteration):
            continue
        if int(nspid[-1]) == ns_pid:
            return int(entry)
    raise SystemExit(f"no host process for {unit} (PID {ns_pid} in {node.name})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_node(node: Any, metrics_port: int) -> None:
    """Before the first boot: the daemon (installed later by firstboot) gets its metrics
    listener on a port of its own (nspawn nodes share the host's network) and the bench's
    extra arguments from BENCH_ENV."""
    node.put(DROPIN, "[Service]\nEnvironmentFile=-" + BENCH_ENV + "\nExecStart=\n"
             f"ExecStart=/usr/local/bin/mcd start --metrics-listen 127.0.0.1:{metrics_port} "
             "$BENCH_ARGS\n")
    node.put(BENCH_ENV, "BENCH_ARGS=\n")


def supports_drift_poll(node: Any) -> bool:
    proc = node.nsenter(["/usr/local/bin/mcd", "start", "--help"], check=False)
    return "--drift-poll" in proc.stdout


@contextmanager
def cluster_and_node(workdir: Path, timeout: float) -> Iterator[tuple[Any, Any, Any]]:
    """The embedded cluster on the host and one joined node (Done); everything is stopped and
    removed on the way out."""
    sys.path.insert(0, str(REPO))
    from tests.e2e.cluster import (CURRENT, DESIRED, STATE, Cluster, node_summary,
                                   open_local_store, pointer_config, reap_stale_clusters,
                                   wait_until)
    from tests.e2e.nodes import RUNS_DIR, RebootSupervisor, prepare_pointer_node
    from tests.node.harness import Node, NodeFactory, reap_stale
    from tests.node.rootfs import ensure_rootfs, missing_prerequisites

    missing = missing_prerequisites()
    if missing:
        raise SystemExit(f"bench/idle.py: missing {', '.join(missing)}")
    input_dir = workdir / "input"
    shutil.copytree(REPO / "examples/cluster", input_dir)
    base = ensure_rootfs()
    reap_stale(RUNS_DIR)
    reap_stale_clusters(RUNS_DIR)
    cluster = Cluster(input_dir, workdir / "state", workdir / "work",
                      pid_file=RUNS_DIR / f"cluster-{os.getpid()}.pids")
    factory = NodeFactory(base, RUNS_DIR / f"bench-idle-{os.getpid()}")
    supervisor = RebootSupervisor([])
    try:
        cluster.start()
        cluster.wait_serving("worker")
        assert cluster.ca is not None
        pointer = pointer_config(cluster.url, cluster.ca, cluster.token("worker"))
        name = f"bench-idle-{os.getpid()}"
        node = Node(name, factory.base, factory.workroot / name, factory.ssh_key)
        factory.nodes.append(node)
        node.create()
        prepare_pointer_node(node, pointer)
        prepare_node(node, free_port())
        node.boot()
        supervisor.nodes.append(node)
        supervisor.start()
        store = open_local_store(input_dir, cluster.state_dir)

        def done() -> bool:
            cluster.check_alive()
            if supervisor.failures:
                raise SystemExit("\n".join(supervisor.failures))
            ann = {n.name: n.annotations for n in store.list_nodes()}.get(name, {})
            return ann.get(STATE) == "Done" and ann.get(CURRENT) == ann.get(DESIRED)

        started = time.monotonic()
        wait_until(done, timeout, f"{name} to join and reach Done",
                   lambda: node_summary(store.list_nodes()) + "\n" + node.console_tail(30))
        print(f"node {name} joined and is Done after {time.monotonic() - started:.0f}s",
              flush=True)
        yield cluster, node, store
    finally:
        supervisor.stop()
        factory.close()
        cluster.stop()


def restart_daemon(node: Any, bench_args: str, wait_done: Any) -> None:
    node.put(BENCH_ENV, f"BENCH_ARGS={bench_args}\n")
    node.nsenter(["systemctl", "restart", DAEMON_UNIT])
    wait_done()


# ---- report -------------------------------------------------------------------------------------

def report(rows: list[Figures], load: tuple[float, float]) -> None:
    print(f"\nquiet window {rows[0].seconds:.0f}s, sampled every {SAMPLE_INTERVAL * 1000:.0f} ms; "
          f"load average {load[0]:.2f} before, {load[1]:.2f} after")
    header = (f"{'process':<34} {'wake-ups/30s':>12} {'bursts/30s':>10} {'CPU ms/30s':>10} "
              f"{'RSS MB':>7} {'threads':>7}")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row.label:<34} {row.per_30s(row.switches):>12.1f} "
              f"{row.per_30s(row.bursts):>10.1f} "
              f"{row.per_30s(row.cpu_ticks * 1000 / CLK_TCK):>10.1f} "
              f"{row.rss_kb / 1024:>7.1f} {row.threads:>7}")
    for row in rows:
        if len(row.by_thread) > 1:
            threads = ", ".join(f"{'main' if tid == row.pid else tid}: {n}"
                                for tid, n in sorted(row.by_thread.items()))
            print(f"  {row.label}: switches per thread in the window: {threads}")
    daemon = rows[0]
    polled = next((r for r in rows if "drift-poll" in r.label), None)
    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    verdict = (f"<1 per 30 s counted in switches {met(daemon.per_30s(daemon.switches) < 1)}, "
               f"in bursts {met(daemon.per_30s(daemon.bursts) < 1)}; "
               f"<=35 MB {met(daemon.rss_kb <= 35 * 1024)}")
    line = (f"\ndaemon at rest: {daemon.per_30s(daemon.switches):.1f} wake-ups per 30 s "
            f"({daemon.per_30s(daemon.bursts):.1f} bursts), RSS {daemon.rss_kb / 1024:.1f} MB")
    if polled is not None and daemon.switches:
        line += f"; the 2 s poll wakes {polled.switches / daemon.switches:.0f}x as often"
    print(line + f"\ntargets: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiet", type=float, default=120.0, help="seconds measured per variant")
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds of rest after Done before measuring")
    parser.add_argument("--join-timeout", type=float, default=600.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/idle.py boots an nspawn node: run it as root")
    # Ctrl-C and SIGTERM unwind through the cleanup of the cluster and the node
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    try:
        with cluster_and_node(workdir, args.join_timeout) as (cluster, node, store):
            from tests.e2e.cluster import CURRENT, DESIRED, STATE, wait_until

            def wait_done() -> None:
                def done() -> bool:
                    ann = {n.name: n.annotations for n in store.list_nodes()}.get(node.name, {})
                    return ann.get(STATE) == "Done" and ann.get(CURRENT) == ann.get(DESIRED)
                time.sleep(2)
                wait_until(done, 120, f"{node.name} to be Done again")

            node.nsenter(["systemd-run", "--unit", SLEEP_UNIT, "sleep", "infinity"])
            sleeper = Figures("sleep infinity (floor)", host_pid(node, SLEEP_UNIT))
            load0 = os.getloadavg()[0]
            time.sleep(args.settle)
            daemon = Figures("mcd start", host_pid(node, DAEMON_UNIT))
            print(f"measuring {daemon.label} and {sleeper.label} for {args.quiet:.0f}s",
                  flush=True)
            measure([daemon, sleeper], args.quiet)
            rows = [daemon]
            if supports_drift_poll(node):
                restart_daemon(node, "--drift-poll 2", wait_done)
                time.sleep(args.settle)
                polled = Figures("mcd start --drift-poll 2 (old poll)",
                                 host_pid(node, DAEMON_UNIT))
                print(f"measuring {polled.label} for {args.quiet:.0f}s", flush=True)
                measure([polled], args.quiet)
                rows.append(polled)
            else:
                print("this daemon has no --drift-poll: its own behaviour is the only variant")
            rows.append(sleeper)
            report(rows, (load0, os.getloadavg()[0]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
