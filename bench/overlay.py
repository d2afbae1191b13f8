"""Benchmark of per-node overlays (issue 19): the render controller over the quick start's
inputs (examples/cluster, its values) on the local store, with N worker nodes each selected by
one overlay of its own (a hostname file), in CPU time of this process:

  baseline  the same controller's render pass without overlays (the pools only);
  first     the pass that renders every node's own config;
  one edit  the pass after one overlay changed (the others come from the previous pass's
            renders);
  idle      a pass whose inputs and nodes did not change (fingerprint and a store listing).

Usage: .venv/bin/python bench/overlay.py [--nodes 100,500]
"""
from __future__ import annotations

import argparse
import base64
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machineconfig.store import open_store  # noqa: E402
from mcc.bootstrap import load_values  # noqa: E402
from mcc.render_controller import RenderController  # noqa: E402


def overlay(i: int, hostname: str) -> str:
    data = base64.b64encode(hostname.encode()).decode()
    return f"""\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: 50-n{i}-hostname
  labels:
    machineconfiguration.openshift.io/node: n{i}
spec:
  config:
    ignition:
      version: 3.2.0
    storage:
      files:
      - path: /etc/hostname
        mode: 420
        contents:
          source: data:text/plain;charset=utf-8;base64,{data}
"""


def timed(controller: RenderController) -> float:
    start = time.process_time()
    controller.store.revision()
    controller.sync()
    return (time.process_time() - start) * 1000


def run(count: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-overlay-"))
    try:
        inputs = tmp / "inputs"
        shutil.copytree(ROOT / "examples" / "cluster", inputs)
        store = open_store(f"local:{inputs}", str(tmp / "state"))
        for i in range(count):
            store.register_node(f"n{i}", {"node-role.kubernetes.io/worker": ""})
        controller = RenderController(
            store, values=load_values(str(ROOT / "examples" / "cluster-values.yaml")))
        baseline = timed(controller)
        (inputs / "overlays.yaml").write_text(
            "---\n".join(overlay(i, f"n{i}\n") for i in range(count)))
        first = timed(controller)
        (inputs / "overlays.yaml").write_text(
            "---\n".join(overlay(i, f"n{i}\n" if i else "renamed\n") for i in range(count)))
        edit = timed(controller)
        idle = timed(controller)
        print(f"{count} nodes: baseline {baseline:.0f} ms; first {first:.0f} ms "
              f"({first / baseline:.1f}x, {(first - baseline) / count:.1f} ms per node); "
              f"one edit {edit:.0f} ms ({edit / baseline:.1f}x); idle {idle:.1f} ms")
        close = getattr(store, "close", None)
        if callable(close):
            close()
    finally:
        shutil.rmtree(tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="100,500")
    args = parser.parse_args()
    for count in (int(n) for n in args.nodes.split(",")):
        run(count)


if __name__ == "__main__":
    main()
