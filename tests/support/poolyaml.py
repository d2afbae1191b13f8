"""MachineConfigPool input files for the store, controller and server tests."""
from __future__ import annotations


def pool_yaml(name: str, *, role: str = "", node_role: str = "",
              max_unavailable: int | None = None) -> str:
    """One pool selecting the MachineConfigs of `role` and the nodes labelled
    node-role.kubernetes.io/`node_role` (each only when given)."""
    spec: list[str] = []
    if role:
        spec += ["  machineConfigSelector:", "    matchLabels:",
                 f"      machineconfiguration.openshift.io/role: {role}"]
    if node_role:
        spec += ["  nodeSelector:", "    matchLabels:",
                 f'      node-role.kubernetes.io/{node_role}: ""']
    if max_unavailable is not None:
        spec.append(f"  maxUnavailable: {max_unavailable}")
    return "\n".join([
        "apiVersion: machineconfiguration.openshift.io/v1",
        "kind: MachineConfigPool",
        "metadata:",
        f"  name: {name}",
        *(["spec:", *spec] if spec else ["spec: {}"]),
    ]) + "\n"


def pools_yaml(*pools: str) -> str:
    """Several pools as one multi-document YAML file."""
    return "---\n".join(pools)
