"""mcd.local_drain: the hook runner on real processes (clean environment, no shell, output
captured, timeout kills the process group, chroot into the root), the drain/return state
machine against an in-memory systemd, and the daemon's drain with it (blocked, no reboot)."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from machineconfig import constants as C
from machineconfig import localdrain
from machineconfig.localdrain import DrainPolicy, Hook, parse
from mcd import state as node_state
from mcd.state import Phase
from mcd.local_drain import (STATE_KEY, HookResult, LocalDrain, LocalDrainBlocked,
                             LocalReturnError, run_hook)
from tests.unit.daemon.test_mcd_daemon import (A, B_RELOAD, B_REBOOT, NODE, ann, cluster, daemon,
                                        lay_down)
from tests.unit.daemon.test_mcd_update import FakeSystemd, root  # noqa: F401 - root is a fixture

ROOT = Path("/")


def hook(*argv: str, timeout: int = 10, phase: str = "beforeDrain", name: str = "h") -> Hook:
    return Hook(name, tuple(argv), timeout, phase)


# ---- the hook runner ----------------------------------------------------------------------
def test_hook_runs_with_a_clean_environment_and_no_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "s3cret")
    result = run_hook(hook("/usr/bin/env"), ROOT, {"PATH": "/usr/bin", "MCD_NODE": "n1"})
    assert result.ok
    assert result.output.decode().splitlines() == ["PATH=/usr/bin", "MCD_NODE=n1"]
    # argv is passed as is: `;` is no command separator without a shell
    result = run_hook(hook("/bin/echo", "a;", "rm", "-rf", "/x"), ROOT, {})
    assert result.ok and result.output == b"a; rm -rf /x\n"


def test_hook_failure_is_described_with_status_and_last_output() -> None:
    h = hook("/bin/sh", "-c", "echo starting; echo >&2 'db busy: 3 writers'; exit 3",
             name="quiesce")
    result = run_hook(h, ROOT, {})
    assert result.status == 3
    assert result.describe(h) == ("hook 'quiesce' (beforeDrain) exited with status 3; last "
                                  "output: 'db busy: 3 writers'")
    missing = run_hook(hook("/nonexistent/prog"), ROOT, {})
    assert missing.status == 127 and b"No such file" in missing.output


def test_hook_timeout_kills_its_process_group() -> None:
    h = hook("/bin/sh", "-c", "sleep 60 & echo $! > /dev/stdout; sleep 60", timeout=1,
             name="slow")
    started = time.monotonic()
    result = run_hook(h, ROOT, {"PATH": "/usr/bin:/bin"})
    assert time.monotonic() - started < 8
    assert result.status is None
    assert result.describe(h).startswith("hook 'slow' (beforeDrain) timed out after 1s")
    child = int(result.output.split()[0])
    time.sleep(0.2)
    # the background child went with the group (at most a zombie its new parent has not reaped)
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_hook_killed_by_a_signal_and_output_is_bounded() -> None:
    h = hook("/bin/sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x; kill -9 $$")
    result = run_hook(h, ROOT, {"PATH": "/usr/bin:/bin"})
    assert result.status == -9 and "was killed by SIGKILL" in result.describe(h)
    assert len(result.output) <= 16 * 1024


def test_hook_that_leaves_a_child_holding_its_output_returns() -> None:
    # the hook exits at once; a daemonized child keeps stdout open for a minute
    result = run_hook(hook("/bin/sh", "-c", "sleep 60 & echo done"), ROOT,
                      {"PATH": "/usr/bin:/bin"})
    assert result.ok and result.output == b"done\n" and result.seconds < 5
    subprocess.run(["pkill", "-f", "^sleep 60$"], check=False)  # noqa: S607 - test cleanup


def _copy_with_libs(binary: str, root: Path) -> None:
    """`binary` and the shared libraries ldd names, at the same paths under `root`."""
    paths = [binary]
    for line in subprocess.run(["ldd", binary], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        parts = [p for p in line.split() if p.startswith("/")]
        paths += parts[:1]
    for path in paths:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(path), target)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ldd"), reason="chroot needs root")
def test_hook_runs_inside_the_root(tmp_path: Path) -> None:
    node = tmp_path / "node"
    _copy_with_libs(os.path.realpath("/bin/sh"), node)
    shell = "/" + str(Path(os.path.realpath("/bin/sh")).relative_to("/"))
    result = run_hook(hook(shell, "-c", "echo inside > /marker; cd ..; echo $PWD"), node, {})
    assert result.ok and result.output == b"/\n"
    assert (node / "marker").read_text() == "inside\n" and not Path("/marker").exists()
    # the host's programs are not there: a hook cannot reach outside its root
    result = run_hook(hook("/usr/bin/env"), node, {})
    assert result.status == 127


# ---- the state machine ----------------------------------------------------------------------
class FakeUnits:
    def __init__(self, running: Sequence[str], fail_stop: Sequence[str] = (),
                 fail_start: Sequence[str] = ()) -> None:
        self.running = set(running)
        self.fail_stop, self.fail_start = set(fail_stop), set(fail_start)
        self.calls: list[tuple[str, str]] = []

    def active_units(self, patterns: Sequence[str]) -> list[str]:
        import fnmatch
        return sorted(u for u in self.running if any(fnmatch.fnmatch(u, p) for p in patterns))

    def stop_unit(self, name: str) -> str:
        self.calls.append(("stop", name))
        if name in self.fail_stop:
            return "deactivating"
        self.running.discard(name)
        return "inactive"

    def start_unit(self, name: str) -> str:
        self.calls.append(("start", name))
        if name in self.fail_start:
            return "failed"
        self.running.add(name)
        return "active"


class Hooks:
    """A hook runner that records what ran and answers from a table (by hook name)."""

    def __init__(self, results: Mapping[str, HookResult] | None = None) -> None:
        self.results = dict(results or {})
        self.ran: list[tuple[str, str, Mapping[str, str]]] = []

    def __call__(self, h: Hook, root: Path, env: Mapping[str, str]) -> HookResult:
        self.ran.append((h.name, h.phase, dict(env)))
        return self.results.get(h.name, HookResult(0, b"ok\n", 0.01))


POLICY = parse("""
stopUnits: ["web-*.service", db.service, machine-config-daemon.service]
hooks:
  - {name: deregister, command: [/usr/local/bin/lb, deregister], phase: beforeDrain}
  - {name: flush, command: [/bin/sync], phase: afterDrain}
  - {name: register, command: [/usr/local/bin/lb, register], phase: afterReturn}
""").default


def test_drain_stops_only_running_units_and_return_starts_exactly_those(root: Path) -> None:
    units = FakeUnits(["web-a.service", "web-b.service", "other.service",
                       "machine-config-daemon.service"])
    hooks = Hooks()
    drain = LocalDrain(root, units, NODE, run=hooks)
    drain.drain(POLICY, "rendered-worker-b")
    # db.service was not running: not stopped, not started later; the daemon's unit never
    assert units.calls == [("stop", "web-a.service"), ("stop", "web-b.service")]
    assert [(n, p) for n, p, _ in hooks.ran] == [("deregister", "beforeDrain"),
                                                 ("flush", "afterDrain")]
    assert hooks.ran[0][2]["MCD_CONFIG"] == "rendered-worker-b"
    record = node_state.read_state(root)[STATE_KEY]
    assert record["stopped"] == ["web-a.service", "web-b.service"]
    assert [h["name"] for h in record["afterReturn"]] == ["register"]
    # a new process (after the reboot) reads the record from the state file
    units.calls.clear()
    LocalDrain(root, units, NODE, run=hooks).back("rendered-worker-b")
    assert units.calls == [("start", "web-b.service"), ("start", "web-a.service")]
    assert hooks.ran[-1][:2] == ("register", "afterReturn")
    assert STATE_KEY not in node_state.read_state(root)
    LocalDrain(root, units, NODE, run=hooks).back("rendered-worker-b")  # nothing left to do
    assert len(units.calls) == 2


def test_failing_hook_blocks_before_anything_stops(root: Path) -> None:
    units = FakeUnits(["web-a.service"])
    events: list[tuple[str, str, str]] = []
    hooks = Hooks({"deregister": HookResult(2, b"lb unreachable\n", 0.1)})
    drain = LocalDrain(root, units, NODE, run=hooks, event=lambda *e: events.append(e))
    with pytest.raises(LocalDrainBlocked) as info:
        drain.drain(POLICY, "rendered-worker-b")
    assert str(info.value) == (f"local drain of node {NODE} blocked: hook 'deregister' "
                               "(beforeDrain) exited with status 2; last output: "
                               "'lb unreachable'")
    assert units.calls == [] and events == [("DrainBlocked", str(info.value), "Warning")]


def test_retry_after_a_blocked_after_drain_hook_keeps_what_was_stopped(root: Path) -> None:
    units = FakeUnits(["web-a.service"])
    hooks = Hooks({"flush": HookResult(None, b"", 10.0)})
    drain = LocalDrain(root, units, NODE, run=hooks)
    with pytest.raises(LocalDrainBlocked, match="hook 'flush' \\(afterDrain\\) timed out after "
                                                "60s"):
        drain.drain(POLICY, "rendered-worker-b")
    assert units.running == set()
    del hooks.results["flush"]
    drain.drain(POLICY, "rendered-worker-b")  # web-a is no longer running: still remembered
    assert node_state.read_state(root)[STATE_KEY]["stopped"] == ["web-a.service"]
    drain.back("rendered-worker-b")
    assert units.running == {"web-a.service"}


def test_unit_that_does_not_stop_blocks(root: Path) -> None:
    units = FakeUnits(["db.service"], fail_stop=["db.service"])
    with pytest.raises(LocalDrainBlocked, match="db.service is deactivating after its stop job"):
        LocalDrain(root, units, NODE, run=Hooks()).drain(POLICY, "rendered-worker-b")
    # remembered anyway: it is started again when the node comes back
    assert node_state.read_state(root)[STATE_KEY]["stopped"] == ["db.service"]


def test_return_failure_names_the_unit_and_retries_only_what_is_left(root: Path) -> None:
    units = FakeUnits(["web-a.service", "db.service"], fail_start=["web-a.service"])
    drain = LocalDrain(root, units, NODE, run=Hooks())
    drain.drain(POLICY, "rendered-worker-b")
    with pytest.raises(LocalReturnError, match="starting web-a.service after the local drain "
                                               "failed: unit is failed"):
        drain.back("rendered-worker-b")
    assert node_state.read_state(root)[STATE_KEY]["stopped"] == ["web-a.service"]
    units.fail_start.clear()
    units.calls.clear()
    drain.back("rendered-worker-b")
    assert units.calls == [("start", "web-a.service")]


def test_invalid_or_empty_policies(root: Path) -> None:
    units = FakeUnits(["web-a.service"])
    drain = LocalDrain(root, units, NODE, run=Hooks())
    with pytest.raises(LocalDrainBlocked, match="the pool's local drain policy is invalid: x"):
        drain.drain(DrainPolicy(invalid="x"), "rendered-worker-b")
    drain.drain(DrainPolicy(), "rendered-worker-b")  # none: nothing happens, nothing recorded
    assert units.calls == [] and STATE_KEY not in node_state.read_state(root)
    with pytest.raises(LocalDrainBlocked, match="no systemd manager"):
        LocalDrain(root, None, NODE, run=Hooks()).drain(POLICY, "rendered-worker-b")


# ---- the daemon -------------------------------------------------------------------------------
class DrainingSystemd(FakeSystemd, FakeUnits):
    def __init__(self, running: Sequence[str]) -> None:
        FakeSystemd.__init__(self)
        FakeUnits.__init__(self, running)


def _published(text: str) -> str | None:
    return localdrain.publisher({"metadata": {"annotations": {
        localdrain.POOL_ANNOTATION: text}}})(NODE)


def test_daemon_stops_units_before_the_reboot_and_starts_them_before_done(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lay_down(root, A)
    api = cluster(A, B_REBOOT, current="rendered-worker-a", desired="rendered-worker-b")
    api.set_annotations(NODE, {C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done",
                               localdrain.NODE_ANNOTATION: _published(
                                   "stopUnits: [web.service, idle.service]")})
    systemd = DrainingSystemd(["web.service"])
    d = daemon(api, root, systemd)
    d.phase = Phase.FOLLOWING
    d.sync()
    assert systemd.calls[-2:] == [("stop", "web.service"),
                                  ("Reboot", "Node will reboot into config rendered-worker-b")]
    assert systemd.running == set()
    resumed = daemon(api, root, systemd)
    resumed.sync()
    a = ann(api)
    assert a[C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION] == "Done"
    assert systemd.calls[-1] == ("start", "web.service") and systemd.running == {"web.service"}
    # started after the uncordon, before Done
    assert api.patches[-1][C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION] == "Done"
    assert STATE_KEY not in node_state.read_state(root)


def test_daemon_blocked_hook_degrades_with_its_name_and_never_reboots(root: Path) -> None:
    lay_down(root, A)
    api = cluster(A, B_REBOOT, current="rendered-worker-a", desired="rendered-worker-b")
    api.set_annotations(NODE, {C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done",
                               localdrain.NODE_ANNOTATION: _published(
                                   "hooks: [{name: quiesce, command: [/bin/false]}]")})
    systemd = DrainingSystemd([])
    d = daemon(api, root, systemd)
    d.local_drain.run = Hooks({"quiesce": HookResult(1, b"", 0.1)})
    d.phase = Phase.FOLLOWING
    d.run(max_iterations=3)  # the first sync and two retries
    a = ann(api)
    reason = (f"local drain of node {NODE} blocked: hook 'quiesce' (beforeDrain) exited with "
              "status 1")
    assert a[C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION] == "Degraded"
    assert a[C.MACHINE_CONFIG_DAEMON_REASON_ANNOTATION] == reason
    assert not any(c[0] == "Reboot" for c in systemd.calls)
    assert a[C.CURRENT_CONFIG_ANNOTATION] == "rendered-worker-a"
    assert (root / "etc/kubernetes/kubelet.conf").exists() is False  # nothing written
    blocked = [e for e in api.events if e.reason == "DrainBlocked"]
    assert len(blocked) >= 2 and blocked[0].message == reason and blocked[0].type == "Warning"
    # the pool's policy fixed: the next retry drains and reboots
    api.set_annotations(NODE, {localdrain.NODE_ANNOTATION: _published("stopUnits: [a.service]")})
    d.sync()
    assert systemd.calls[-1][0] == "Reboot"


def test_daemon_rebootless_drain_returns_in_the_same_sync(root: Path) -> None:
    lay_down(root, A)
    policy = """apiVersion: operator.openshift.io/v1
kind: MachineConfiguration
metadata: {name: cluster}
spec:
  nodeDisruptionPolicy:
    files:
      - path: /etc/containers/policy.json
        actions: [{type: Drain}]
"""
    from machineconfig.disruption import parse_policy
    import yaml
    parsed = parse_policy(yaml.safe_load(policy)["spec"]["nodeDisruptionPolicy"],
                          "spec.nodeDisruptionPolicy")
    api = cluster(A, B_RELOAD, current="rendered-worker-a", desired="rendered-worker-b")
    api.set_annotations(NODE, {C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done",
                               localdrain.NODE_ANNOTATION: _published("stopUnits: [web.service]")})
    systemd = DrainingSystemd(["web.service"])
    d = daemon(api, root, systemd)
    d.policy = parsed
    d.phase = Phase.FOLLOWING
    d.sync()
    stops = [c for c in systemd.calls if c[0] in ("stop", "start")]
    assert stops == [("stop", "web.service"), ("start", "web.service")]
    assert ann(api)[C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION] == "Done"
    assert ann(api)[C.CURRENT_CONFIG_ANNOTATION] == "rendered-worker-b"
