"""Spec 2.0/2.1 MachineConfigs: the explicit ids and modes ign2.Parse's up-translation adds (issue 17).

Vectors in tests/data/vectors/render-derived (see its README for how `expected` was derived).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from machineconfig import mcoparse
from mcc.render import render_pool
from tests.unit.render.test_render_vectors import build_inputs

DERIVED = Path(__file__).resolve().parents[2] / "data" / "vectors" / "render-derived"
CASES = sorted(DERIVED.glob("*.json"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_derived_vector(path: Path) -> None:
    case = json.loads(path.read_text(encoding="utf-8"))
    pool, configs, cconfig = build_inputs(case)
    rendered = render_pool(pool, configs, cconfig)
    expected = case["expected"]
    assert rendered.spec == expected["spec"]
    assert rendered.spec_yaml == expected["specYAML"]
    assert rendered.name == expected["renderedName"]


def _storage(version: str, storage: dict[str, object]) -> object:
    raw = json.dumps({"ignition": {"version": version}, "storage": storage}).encode()
    return mcoparse.parse_and_convert_config(raw).get("storage")


def test_v20_ids_and_mode_are_explicit_but_given_values_stay() -> None:
    got = _storage("2.0.0", {"files": [
        {"filesystem": "root", "path": "/a", "mode": 420, "user": {"id": 7}, "group": {},
         "contents": {"source": "data:,a"}}]})
    assert got == {"files": [{"group": {"id": 0}, "overwrite": True, "path": "/a",
                              "user": {"id": 7}, "contents": {"source": "data:,a"}, "mode": 420}]}


def test_v21_links_and_v22_nodes_are_unchanged() -> None:
    links = [{"filesystem": "root", "path": "/l", "target": "/a"}]
    assert _storage("2.1.0", {"links": links}) == {"links": [{"path": "/l", "target": "/a"}]}
    assert _storage("2.2.0", {"directories": [{"filesystem": "root", "path": "/d"}]}) == {
        "directories": [{"path": "/d"}]}


def test_hostile_v20_owner_is_refused_not_crashed() -> None:
    with pytest.raises(mcoparse.IgnitionConfigError):
        _storage("2.0.0", {"files": [{"filesystem": "root", "path": "/a", "user": "root"}]})
