"""Every render vector (tests/data/vectors/render, produced by MCO's Go code) must pass exactly."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from machineconfig.api import ControllerConfig, MachineConfig, MachineConfigPool
from machineconfig.constants import ROLE_LABEL
from mcc.render import RenderError, hashed_name, render_pool

VECTORS = Path(__file__).resolve().parents[2] / "data" / "vectors" / "render"
CASES = sorted(VECTORS.glob("*.json"))


def build_inputs(case: dict[str, Any]) -> tuple[MachineConfigPool, list[MachineConfig],
                                                ControllerConfig]:
    """The pool, configs and ControllerConfig a vector describes (see its README)."""
    args = case["args"]
    if case["pool"] is not None:
        pool = MachineConfigPool.model_validate(case["pool"])
    else:
        roles = args["poolRoles"].split(",") if args["poolRoles"] else [args["pool"]]
        pool = MachineConfigPool.model_validate({
            "kind": "MachineConfigPool", "metadata": {"name": args["pool"]},
            "spec": {"machineConfigSelector": {"matchExpressions": [
                {"key": ROLE_LABEL, "operator": "In", "values": roles}]}}})
    if case["controllerConfig"] is not None:
        cconfig = ControllerConfig.model_validate(case["controllerConfig"])
    else:
        cconfig = ControllerConfig.model_validate({
            "kind": "ControllerConfig", "metadata": {"name": "machine-config-controller"},
            "spec": {"baseOSContainerImage": args["baseOSImage"],
                     "baseOSExtensionsContainerImage": args["baseOSExtImage"]}})
    configs = [MachineConfig.model_validate(mc) for mc in case["machineConfigs"]]
    return pool, configs, cconfig


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_render_vector(path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    expected = case["expected"]
    pool, configs, cconfig = build_inputs(case)
    if not expected["ok"]:
        with pytest.raises(RenderError) as err:
            render_pool(pool, configs, cconfig)
        assert str(err.value) == expected["error"]
        return
    rendered = render_pool(pool, configs, cconfig)
    assert rendered.spec_yaml == expected["specYAML"]
    assert rendered.spec == expected["spec"]
    assert rendered.name == expected["renderedName"]
    assert rendered.annotations == expected["annotations"]
    assert rendered.owner_references == expected["ownerReferences"]


@pytest.mark.parametrize("path", [p for p in CASES
                                  if json.loads(p.read_text())["expected"]["ok"]],
                         ids=lambda p: p.stem)
def test_name_is_md5_of_salt_and_spec_yaml(path: Path) -> None:
    expected = json.loads(path.read_text(encoding="utf-8"))["expected"]
    pool = expected["renderedName"].split("-")[1:-1]
    assert hashed_name("-".join(pool), expected["specYAML"]) == expected["renderedName"]


def test_input_order_does_not_matter() -> None:
    case = json.loads((VECTORS / "real-03-infra-pool.json").read_text(encoding="utf-8"))
    pool, configs, cconfig = build_inputs(case)
    forward = render_pool(pool, configs, cconfig)
    backward = render_pool(pool, list(reversed(configs)), cconfig)
    assert forward.name == backward.name == case["expected"]["renderedName"]
