"""MachineConfigs for the node tests and the helpers that drive `mcd` inside a node."""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from tests.node.harness import Node

log = logging.getLogger(__name__)


def file_entry(path: str, text: str, mode: int = 0o644, user: str | None = None,
               group: str | None = None, compress: bool = False) -> dict[str, object]:
    """An Ignition 3.5 file entry; `compress` stores it gzipped and base64 as MCO does."""
    import gzip

    from machineconfig.ignition.dataurl import encode_base64, encode_percent
    entry: dict[str, object] = {"path": path, "mode": mode, "overwrite": True}
    if compress:
        entry["contents"] = {"source": encode_base64(gzip.compress(text.encode())),
                             "compression": "gzip"}
    else:
        entry["contents"] = {"source": encode_percent(text.encode())}
    if user:
        entry["user"] = {"name": user}
    if group:
        entry["group"] = {"name": group}
    return entry


def machine_config(name: str, files: Sequence[dict[str, object]] = (),
                   units: Sequence[dict[str, object]] = (),
                   users: Sequence[dict[str, object]] | None = None,
                   **spec: object) -> dict[str, object]:
    config: dict[str, object] = {"ignition": {"version": "3.5.0"}}
    if files:
        config["storage"] = {"files": list(files)}
    if units:
        config["systemd"] = {"units": list(units)}
    if users is not None:
        config["passwd"] = {"users": list(users)}
    return {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
            "metadata": {"name": name}, "spec": {"config": config, **spec}}


def put_config(node: Node, mc: dict[str, object]) -> str:
    """Store a MachineConfig in the node; returns its path there."""
    name = str(mc["metadata"]["name"])  # type: ignore[index]
    path = f"/root/configs/{name}.json"
    node.put(path, json.dumps(mc, indent=1))
    return path


def apply(node: Node, current: dict[str, object], desired: dict[str, object],
          policy: str | None = None) -> tuple[int, dict[str, object]]:
    """`mcd apply` inside the node over SSH; (exit status, its JSON summary)."""
    cmd = f"mcd apply --current {put_config(node, current)} --desired {put_config(node, desired)}"
    if policy is not None:
        node.put("/root/configs/policy.yaml", policy)
        cmd += " --policy /root/configs/policy.yaml"
    proc = node.ssh(cmd, check=False, timeout=120)
    log.info("mcd apply -> %d\n%s", proc.returncode, proc.stderr[-3000:])
    try:
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        summary = {"stdout": proc.stdout, "stderr": proc.stderr}
    return proc.returncode, summary


def fixture_events(node: Node, service: str) -> list[str]:
    """The events the fixture program of `service` recorded: start, reload, stop."""
    path = node.root / f"var/lib/test-fixtures/{service}.events"
    if not path.exists():
        return []
    return [line.split()[0] for line in path.read_text().splitlines()]


def node_state(node: Node) -> dict[str, object]:
    path = node.root / "etc/machine-config-daemon/state.json"
    state: dict[str, object] = json.loads(path.read_text()) if path.exists() else {}
    return state
