"""Test helpers for the controller tests: a local store over temporary dirs, input writers and a
fake daemon that reports Done the way mcd does (currentConfig = desiredConfig, state Done); and
seed_node, a node Done in one rendered config and targeted at another on any store (the kube
daemon tests' starting point)."""
from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from machineconfig.constants import (
    CURRENT_CONFIG_ANNOTATION, DESIRED_CONFIG_ANNOTATION, MACHINE_CONFIG_DAEMON_STATE_ANNOTATION,
)
from machineconfig.rendered_config import RenderedConfig
from machineconfig.store import Store, open_store
from tests.support.poolyaml import pool_yaml

POOL = pool_yaml("worker", role="worker", node_role="worker", max_unavailable=1)


def machine_config(name: str, path: str, content: str, kernel_type: str = "") -> str:
    data = base64.b64encode(content.encode()).decode()
    extra = f"  kernelType: {kernel_type}\n" if kernel_type else ""
    return f"""\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: {name}
  labels:
    machineconfiguration.openshift.io/role: worker
spec:
{extra}  config:
    ignition:
      version: 3.2.0
    storage:
      files:
      - path: {path}
        mode: 420
        contents:
          source: data:text/plain;charset=utf-8;base64,{data}
"""


def write(path: Path, text: str) -> None:
    """Replace a file atomically (a new inode, so the store sees the change at once)."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def make_store(tmp_path: Path) -> tuple[Store, Path]:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write(inputs / "pool.yaml", POOL)
    write(inputs / "00-worker.yaml", machine_config("00-worker", "/etc/motd", "hello\n"))
    return open_store(f"local:{inputs}", str(tmp_path / "state")), inputs


def daemon_step(store: Store) -> list[str]:
    """Every node whose desiredConfig moved reports Done on it; returns those nodes."""
    done = []
    for node in store.list_nodes():
        desired = node.annotations.get(DESIRED_CONFIG_ANNOTATION, "")
        if desired and (node.annotations.get(CURRENT_CONFIG_ANNOTATION) != desired or
                        node.annotations.get(MACHINE_CONFIG_DAEMON_STATE_ANNOTATION) != "Done"):
            store.patch_node_annotations(node.name, {CURRENT_CONFIG_ANNOTATION: desired,
                                                     MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done"})
            done.append(node.name)
    return done


def join(store: Store, name: str, config: str, desired: str = "") -> None:
    """A node that booted into `config` (what mcd firstboot leaves behind), Done there and
    targeted at `desired` (default: `config`)."""
    store.register_node(name, {"node-role.kubernetes.io/worker": ""})
    store.patch_node_annotations(name, {CURRENT_CONFIG_ANNOTATION: config,
                                        DESIRED_CONFIG_ANNOTATION: desired or config,
                                        MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done"})


def seed_node(store: Store, name: str, current: Mapping[str, Any],
              desired: Mapping[str, Any] | None = None) -> None:
    """The rendered configs `current` and `desired` (default: `current`) in the store, and a
    worker node Done in `current` and targeted at `desired`: where a daemon test starts."""
    store.put_rendered(RenderedConfig(current))
    if desired is not None:
        store.put_rendered(RenderedConfig(desired))
    join(store, name, current["metadata"]["name"], desired["metadata"]["name"] if desired else "")
