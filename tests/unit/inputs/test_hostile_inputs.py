"""Hostile input files: huge numbers, deep nesting, alias bombs, a blanked file, a directory or a
dangling symlink in a file's place, one name in two files, a damaged rendered config. Each is that
file's error (one line: file, line, field path); the controller keeps running, pools report it
(InputDegraded), the last good objects and rendered configs stay, memory stays bounded."""
from __future__ import annotations

import logging
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from machineconfig.errors import InputError
from machineconfig.store import StoreError
from machineconfig.store.local import LocalStore
from machineconfig.yamlload import MAX_DEPTH, MAX_NODES, load_file, load_text
from mcc.controller import Controller
from machineconfig.status import find_condition
from mcc.pool_status import INPUT_DEGRADED
from tests.support.clusterkit import POOL, machine_config, make_store, write
from tests.support.procs import stop_all, wait_for

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "hostile-inputs-token-0123456789"
HEAD = ("apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n"
        "  name: {name}\n  labels:\n    machineconfiguration.openshift.io/role: worker\n"
        "spec:\n")


def huge_int_mc(name: str = "60-huge") -> str:
    return HEAD.format(name=name) + "  config:\n    ignition:\n      version: 3.2.0\n" \
        + "  fips: " + "9" * 5000 + "\n"  # line 11


def deep_mc(name: str = "61-deep", depth: int = 600) -> str:
    return HEAD.format(name=name) + "  config: " + "[" * depth + "]" * depth + "\n"  # line 8


def bomb_mc(name: str = "62-bomb") -> str:
    """The classic billion-laughs, about 800 bytes: 9**9 strings once expanded."""
    lines = [HEAD.format(name=name).rstrip("\n"), "  config:", '    a: &a ["lol","lol","lol",'
             '"lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        lines.append(f"    {cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# ----- the loader's bounds

@pytest.mark.parametrize("text,where,message", [
    (huge_int_mc(), ":11: $.spec.fips: ", "integer of more than 4300 digits"),
    (HEAD.format(name="x") + "  fips: " + "9" * 30 + "\n", ":8: $.spec.fips: ",
     "integer out of range"),
    (deep_mc(), ":8: $.spec.config" + ".0" * (MAX_DEPTH - 3), f"deeper than {MAX_DEPTH}"),
    (bomb_mc(), ":", f"more than {MAX_NODES} nodes"),
    ("a: &a [*a]\n", ":1: $.a.0: ", "recursive alias"),
    ('{"kind": "MachineConfig", "x": ' + "9" * 5000 + "}", ":1: ", "more than 4300 digits"),
    ('{"kind": "MachineConfig", "x": ' + "[" * 600 + "]" * 600 + "}", ": $.x.0",
     f"deeper than {MAX_DEPTH}"),
    ('{"kind": "MachineConfig", "x": ' + "[" * 5000 + "]" * 5000 + "}", ": ",
     f"deeper than {MAX_DEPTH}"),
])
def test_loader_refuses_with_one_line(tmp_path: Path, text: str, where: str,
                                      message: str) -> None:
    path = tmp_path / "in.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        load_file(str(path))
    line = one_line(str(e.value))
    assert line.startswith(f"{path}{where}") and message in line, line


def test_loader_bounds_file_size(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"a: " + b"x" * (9 * 1024 * 1024) + b"\n")
    with pytest.raises(InputError, match="larger than"):
        load_file(str(path))
    with pytest.raises(InputError, match="larger than"):
        load_text("a: " + "x" * (9 * 1024 * 1024), "stdin")


def test_shared_anchors_within_bounds_still_load() -> None:
    text = "base: &b {x: 1, y: [1, 2]}\nitems: [" + ", ".join(["*b"] * 1000) + "]\n"
    (doc,) = load_text(text, "f.yaml")
    assert len(doc.data["items"]) == 1000 and doc.data["items"][999] == {"x": 1, "y": [1, 2]}


def run_bounded(args: list[str], cwd: Path, limit: int = 1 << 30) -> tuple[int, str, int]:
    """Run a console script in a child limited to `limit` bytes of address space; returns its
    exit status, its output (stdout and stderr) and its peak RSS in MB (measured by a wrapper,
    so other tests' children do not count)."""
    wrapper = (
        "import resource, subprocess, sys\n"
        f"def limit(): resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True, preexec_fn=limit)\n"
        "sys.stderr.write(p.stdout + p.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n"
        "sys.exit(p.returncode)\n")
    proc = subprocess.run([sys.executable, "-c", wrapper, sys.executable, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr, int(proc.stdout.strip().splitlines()[-1])


def test_alias_bomb_validate_and_render_bounded(tmp_path: Path) -> None:
    (tmp_path / "pool.yaml").write_text(POOL)
    bomb = tmp_path / "62-bomb.yaml"
    bomb.write_text(bomb_mc())
    assert len(bomb.read_bytes()) < 1000
    rc, out, peak = run_bounded(["-m", "mcc.cli", "validate", str(bomb)], tmp_path)
    assert rc == 1
    assert one_line(out).startswith(f"error at $.spec.config.i.8.8.8, {bomb}:14: ") \
        and "nodes" in out, out
    assert peak < 200, f"mcc validate peaked at {peak} MB"
    rc, out, peak = run_bounded(["-m", "mcc.cli", "render", str(tmp_path)], tmp_path)
    assert rc == 1
    assert one_line(out).startswith(f"mcc render: {bomb}:14: ") and "nodes" in out, out
    assert peak < 200, f"mcc render peaked at {peak} MB"


# ----- the local store: a broken file keeps its last objects, pools report it

def run_pass(controller: Controller) -> Any:
    controller.store.revision()  # what the loop does first: the store looks at the files
    return controller.run_pass()


def worker_status(store: Any) -> dict[str, Any]:
    status: dict[str, Any] = store.get_object("MachineConfigPool", "worker")["status"]
    return status


def input_condition(store: Any) -> dict[str, Any]:
    cond = find_condition(worker_status(store), INPUT_DEGRADED)
    assert cond is not None
    return cond


def rendered_target(store: Any) -> str:
    return str(store.get_object("MachineConfigPool", "worker")["spec"]["configuration"]["name"])


def break_blank(inputs: Path) -> Path:
    path = inputs / "00-worker.yaml"
    path.write_text("")  # truncated in place, as a writer that crashed mid-rewrite leaves it
    return path


def break_directory(inputs: Path) -> Path:
    path = inputs / "00-worker.yaml"
    path.unlink()
    path.mkdir()
    return path


def break_symlink(inputs: Path) -> Path:
    path = inputs / "00-worker.yaml"
    target = inputs.parent / "elsewhere.yaml"
    os.replace(path, target)
    path.symlink_to(target)
    target.unlink()
    return path


def break_duplicate(inputs: Path) -> Path:
    # Sorted before the original: "first file wins" would silently switch to this one.
    path = inputs / "0-copy.yaml"
    write(path, machine_config("00-worker", "/etc/motd", "a different motd\n"))
    return path


@pytest.mark.parametrize("breaker,reason", [
    (break_blank, "empty file"), (break_directory, "not a regular file"),
    (break_symlink, "dangling symlink"), (break_duplicate, "already defined in"),
])
def test_broken_input_keeps_last_good_state(tmp_path: Path, breaker: Callable[[Path], Path],
                                            reason: str) -> None:
    store, inputs = make_store(tmp_path)
    controller = Controller(store, now=lambda: "2026-01-01T00:00:00Z")
    run_pass(controller)
    good = rendered_target(store)
    assert store.list_rendered() == [good]
    assert find_condition(worker_status(store), INPUT_DEGRADED) is None  # only MCO's until then
    broken = breaker(inputs)
    report = run_pass(controller)
    assert not report.errors
    # Same rendered config, nothing garbage-collected, the error named in pool status.
    assert rendered_target(store) == good and store.list_rendered() == [good]
    assert store.get_object("MachineConfig", "00-worker")["spec"]["config"]["storage"][
        "files"][0]["path"] == "/etc/motd"
    cond = input_condition(store)
    assert cond["status"] == "True" and cond["reason"] == "InputFileErrors"
    assert f"{broken}: " in cond["message"] and reason in cond["message"], cond
    degraded = find_condition(worker_status(store), "Degraded")
    assert degraded is not None and degraded["status"] == "True"
    (error,) = store.input_errors()  # type: ignore[attr-defined]
    assert one_line(error).startswith(str(broken)) and reason in error


def test_removing_a_file_deletes_its_objects(tmp_path: Path) -> None:
    store, inputs = make_store(tmp_path)
    write(inputs / "50-worker.yaml", machine_config("50-worker", "/etc/x", "x\n"))
    controller = Controller(store, now=lambda: "2026-01-01T00:00:00Z")
    run_pass(controller)
    before = rendered_target(store)
    (inputs / "50-worker.yaml").unlink()
    run_pass(controller)
    assert rendered_target(store) != before
    assert store.list_objects("MachineConfig")[0]["metadata"]["name"] == "00-worker"
    assert find_condition(worker_status(store), INPUT_DEGRADED) is None


def test_unexpected_error_in_one_file_is_that_files_error(tmp_path: Path) -> None:
    store, inputs = make_store(tmp_path)
    controller = Controller(store, now=lambda: "2026-01-01T00:00:00Z")
    run_pass(controller)
    good = rendered_target(store)
    for text in (huge_int_mc("00-worker"), deep_mc("00-worker"), bomb_mc("00-worker")):
        write(inputs / "00-worker.yaml", text)
        assert not run_pass(controller).errors
        assert rendered_target(store) == good and store.list_rendered() == [good]
        assert "00-worker.yaml:" in input_condition(store)["message"]


# ----- damaged rendered configs

def test_damaged_rendered_config_is_detected_and_rendered_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mcc")
    store, _ = make_store(tmp_path)
    controller = Controller(store, now=lambda: "2026-01-01T00:00:00Z")
    run_pass(controller)
    name = rendered_target(store)
    path = tmp_path / "state" / "rendered" / f"{name}.json"
    good = path.read_bytes()
    assert store.get_rendered(name).name == name  # our own output verifies
    for damage in (good[:len(good) // 2],  # torn
                   good.replace(b"/etc/motd", b"/etc/evil")):  # valid JSON, other content
        path.write_bytes(damage)
        with pytest.raises(StoreError) as e:
            store.get_rendered(name)
        assert one_line(str(e.value)).startswith(f"{path}: corrupt rendered config: ")
        caplog.clear()
        run_pass(controller)
        assert path.read_bytes() == good
        assert any(str(path) in r.getMessage() and "rendering again" in r.getMessage()
                   for r in caplog.records), caplog.text
    # A new controller (a restart) checks too.
    path.write_bytes(b"{}")
    run_pass(Controller(store, now=lambda: "2026-01-01T00:00:00Z"))
    assert path.read_bytes() == good


# ----- real `mcc start` and `mcs start` with hostile files dropped in while they run

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])




def fetch(port: int) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/config/worker",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:  # not listening yet
        return 0, b""


def peak_rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM")


def limit_memory() -> None:  # a regression must fail the test, not the machine
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def test_running_controller_and_server_survive_hostile_files(tmp_path: Path) -> None:
    inputs, state = tmp_path / "inputs", tmp_path / "state"
    inputs.mkdir()
    state.mkdir()
    write(inputs / "pool.yaml", POOL)
    write(inputs / "00-worker.yaml", machine_config("00-worker", "/etc/motd", "hello\n"))
    (state / "tokens").write_text(f"worker {TOKEN}\n")
    (state / "tokens").chmod(0o600)
    port = free_port()
    store = f"local:{inputs}"
    logs = {prog: tmp_path / f"{prog}.log" for prog in ("mcc", "mcs")}
    procs = [subprocess.Popen([sys.executable, "-m", f"{prog}.cli", *args], cwd=ROOT,
                              stdout=open(logs[prog], "wb"), stderr=subprocess.STDOUT,
                              preexec_fn=limit_memory)
             for prog, args in (
                 ("mcc", ["start", "--store", store, "--state", str(state), "--interval", "1"]),
                 ("mcs", ["start", "--store", store, "--state", str(state), "--secure-port", "-1",
                          "--insecure-port", str(port), "--bind-address", "127.0.0.1"]))]
    try:
        wait_for(lambda: fetch(port)[0] == 200, 60, "the first rendered config served")
        _, served = fetch(port)
        reader = LocalStore(str(inputs), str(state))
        good = rendered_target(reader)
        start_rss = peak_rss_mb(procs[1].pid)
        files = {"60-huge.yaml": (huge_int_mc(), ":11: $.spec.fips"),
                 "61-deep.yaml": (deep_mc(), ":8: $.spec.config.0"),
                 "62-bomb.yaml": (bomb_mc(), ":")}
        for name, (text, _) in files.items():
            write(inputs / name, text)

        def reported() -> bool:
            cond = find_condition(worker_status(reader), INPUT_DEGRADED)
            return cond is not None and cond["status"] == "True" and all(
                f"{inputs / n}{where}" in cond["message"] for n, (_, where) in files.items())
        wait_for(reported, 30, "InputDegraded naming the three files")
        time.sleep(2)  # a few more passes of both programs over the bad files
        for proc in procs:
            assert proc.poll() is None, logs
        assert fetch(port) == (200, served)
        assert rendered_target(reader) == good and reader.list_rendered() == [good]
        assert peak_rss_mb(procs[1].pid) < start_rss + 100
        # A damaged rendered config is noticed and written again; the server serves it again.
        rendered = state / "rendered" / f"{good}.json"
        intact = rendered.read_bytes()
        assert b'"/etc/motd"' in intact
        rendered.write_bytes(intact.replace(b'"/etc/motd"', b'"/etc/evil"'))
        wait_for(lambda: rendered.read_bytes() == intact, 30, "the rendered config repaired")
        wait_for(lambda: fetch(port) == (200, served), 10, "the repaired config served")
        # Fixing the files clears the condition.
        for name in files:
            (inputs / name).unlink()
        wait_for(lambda: input_condition(reader)["status"] == "False", 30, "errors cleared")
    finally:
        stop_all(procs)
    mcc_log, mcs_log = logs["mcc"].read_text(), logs["mcs"].read_text()
    assert "Traceback" not in mcc_log and "Traceback" not in mcs_log, (mcc_log, mcs_log)
    assert f"{inputs / '62-bomb.yaml'}:" in mcc_log
    assert f"{rendered}: corrupt rendered config" in mcc_log
    for proc in procs:
        assert proc.returncode == 0


def test_bootstrap_server_reads_bounded(tmp_path: Path) -> None:
    from mcs.sources.bootstrap import load_object
    from mcs.serve import ServeError
    path = tmp_path / "worker.yaml"
    path.write_text(bomb_mc())
    with pytest.raises(ServeError) as e:
        load_object(path)
    assert one_line(str(e.value)) == (f"cannot parse worker.yaml: line 14: document expands to "
                                      f"more than {MAX_NODES} nodes (aliases)")
    with pytest.raises(FileNotFoundError):
        load_object(tmp_path / "absent.yaml")


def test_duplicate_name_seen_by_a_new_process_keeps_the_older_file(tmp_path: Path) -> None:
    store, inputs = make_store(tmp_path)
    old = inputs / "00-worker.yaml"
    os.utime(old, (time.time() - 60, time.time() - 60))
    break_duplicate(inputs)
    fresh = LocalStore(str(inputs), str(tmp_path / "state"))  # e.g. mcc restarted
    assert fresh.get_object("MachineConfig", "00-worker")["spec"]["config"]["storage"][
        "files"][0]["contents"]["source"].endswith("aGVsbG8K")  # "hello\n", not the copy
    (error,) = fresh.input_errors()
    assert error.startswith(f"{inputs / '0-copy.yaml'}: MachineConfig '00-worker' is already "
                            f"defined in {old}")


def test_lone_surrogate_escapes_become_replacement_characters() -> None:
    # Go's decoder does the same; a lone surrogate cannot be written as UTF-8 anywhere later.
    (doc,) = load_text('{"a": "\\ud800x\\ud83d\\ude00", "\\udc00": 1}', "f.json")
    assert doc.data == {"a": "\ufffdx\U0001f600", "\ufffd": 1}


@pytest.mark.parametrize("text", ["[" * 1200 + "]" * 1200, '{"kind": "MachineConfig", '
                                  '"apiVersion": "v1", "spec": ' + "[" * 1200 + "]" * 1200 + "}"])
def test_validate_deep_json_is_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.json"
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "mcc.cli", "validate", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    one_line(proc.stdout + proc.stderr)


def test_alias_budget_is_per_file_not_per_document() -> None:
    doc = ('a: &a ["x","x","x","x","x","x","x","x","x","x"]\nb: &b [' + ",".join(["*a"] * 10)
           + "]\nc: &c [" + ",".join(["*b"] * 10) + "]\nd: [" + ",".join(["*c"] * 10) + "]\n")
    assert len(load_text(doc, "f.yaml")) == 1  # about 11,000 nodes: fine
    with pytest.raises(InputError, match=f"more than {MAX_NODES} nodes"):
        load_text("---\n".join([doc] * 30), "f.yaml")


# ----- the same bounds wherever a user's YAML is read

BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]\n" for prev, cur in zip("abcdefgh", "bcdefghi"))


def test_every_yaml_reader_refuses_an_alias_bomb(tmp_path: Path) -> None:
    from machineconfig.api import MachineConfig
    from machineconfig.disruption import load_policy
    from mcc import overlay
    from mcc.kubelet_config import user_kubelet_config
    from mcc.template import build_ignition
    from mcd.cli import load_machine_config

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    too_many = f"more than {MAX_NODES} nodes"
    for load in (load_policy, load_machine_config):
        with pytest.raises(InputError, match=too_many):
            load(bomb)
    with pytest.raises(InputError, match=too_many):
        user_kubelet_config({"spec": {"kubeletConfig": BOMB}})
    mc = MachineConfig.model_validate({
        "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
        "metadata": {"name": "50-bomb", "annotations": {"machine-config.io/node-selector": BOMB}}})
    (error,) = overlay.check([mc])
    assert too_many in str(error)
    with pytest.raises(InputError, match=too_many):
        build_ignition({"files": {"bomb.yaml": (BOMB, "files/bomb.yaml")}, "units": {}})
