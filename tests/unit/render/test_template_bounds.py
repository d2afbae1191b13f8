"""User MachineConfig templates (*.yaml.j2) are rendered with bounds: a template that loops,
multiplies or formats its way to huge output is that file's error on one line, never a hang or
a memory blow-up of `mcc render` or the running controller. Each case runs in a child process
under a memory limit and a timeout (what a runaway render would break is the process itself)."""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from machineconfig.errors import InputError
from mcc.template import render_user_template

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples" / "cluster"
MEMORY_LIMIT = 1 << 30  # address space of the child: a blow-up hits this, not the machine
TIMEOUT = 120

HEADER = """\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: 60-worker-bomb
  labels: {machineconfiguration.openshift.io/role: worker}
spec:
  config:
    ignition: {version: 3.2.0}
    storage:
      files:
      - path: /etc/bomb
        contents: {source: "data:,"}
# """

BOMBS = {
    "huge range": "{% for i in range(10**9) %}x{% endfor %}",
    "string repeat": "{{ 'x' * 10**10 }}",
    "list repeat": "{{ ([0] * 10**10)|length }}",
    "nested loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                    "{% endfor %}",
    "doubling concat": "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
                       "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "doubling plus": "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
                     "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    "center filter": "{{ 'x'|center(10**10) }}",
    "format width": "{{ '%9999999999d'|format(1) }}",
    "str.format width": "{{ '{:>9999999999}'.format(1) }}",
    "ljust method": "{{ 'x'.ljust(10**10) }}",
    "batch filter": "{{ [1]|batch(10**10, 0)|list|length }}",
    "big output": "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
    "recursion": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "big power": "{{ (7 ** (10**9)) % 10 }}",
}


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + sys.path)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=TIMEOUT, preexec_fn=_limit, check=False)


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_mcc_render_reports_a_runaway_template_on_one_line(name: str, tmp_path: Path) -> None:
    cluster = tmp_path / "cluster"
    shutil.copytree(EXAMPLES, cluster)
    bomb = cluster / "60-worker-bomb.yaml.j2"
    bomb.write_text(HEADER + BOMBS[name] + "\n")
    proc = _run("-m", "mcc.cli", "render", str(cluster), "--out", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"mcc render: {bomb}"), proc.stderr
    assert not (tmp_path / "out").exists()


def test_running_controller_keeps_running_with_a_runaway_template(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    shutil.copytree(EXAMPLES, inputs)
    (inputs / "60-worker-bomb.yaml.j2").write_text(HEADER + BOMBS["string repeat"] + "\n")
    script = (
        "import sys\n"
        "from machineconfig.store import open_store\n"
        "from mcc.controller import Controller\n"
        "store = open_store('local:' + sys.argv[1], sys.argv[2])\n"
        "Controller(store).run_pass()\n"
        "pools = store.list_objects('MachineConfigPool')\n"
        "print(sorted(str(c.get('message', '')) for p in pools\n"
        "             for c in (p.get('status') or {}).get('conditions') or []\n"
        "             if c.get('status') == 'True' and 'bomb' in str(c.get('message', ''))))\n")
    proc = _run("-c", script, str(inputs), str(tmp_path / "state"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "60-worker-bomb.yaml.j2" in proc.stdout and "render limit" in proc.stdout, proc.stdout


def test_ordinary_templates_still_render(tmp_path: Path) -> None:
    path = tmp_path / "mc.yaml.j2"
    path.write_text("a: '{{ '%5d'|format(3) }}{{ 'ab'.upper() }}{{ '{}-{:>3}'.format(1, 2) }}'\n"
                    "b: {% for x in range(3) %}{{ x ~ '' }}{% endfor %}\n"
                    "c: {{ ('ab' * 3)|center(10) }}|{{ 2 ** 10 }}\n")
    assert render_user_template(path, {}) == "a: '    3AB1-  2'\nb: 012\nc:   ababab  |1024\n"


def test_an_oversized_template_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mc.yaml.j2"
    path.write_text("#" * (8 * 1024 * 1024 + 1))
    with pytest.raises(InputError, match="larger than"):
        render_user_template(path, {})
