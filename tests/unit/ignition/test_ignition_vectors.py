"""Every upstream ignition-validate vector, run through the real `mcc validate` entry point."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mcc.cli import main

VECTORS = Path(__file__).resolve().parents[2] / "data" / "vectors" / "ignition"
CASES = sorted(VECTORS.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_vector(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = _load(path)
    config = tmp_path / "config.ign"
    # The expected positions count bytes of exactly this text.
    config.write_bytes(case["config"].encode("utf-8"))
    rc = main(["validate", str(config)])
    out, err = capsys.readouterr()
    expected = case["expected"]
    assert out.splitlines() == expected["report"]
    assert err.splitlines() == expected["stderr"]
    assert rc == expected["rc"]


def test_vectors_present() -> None:
    assert len(CASES) >= 70
