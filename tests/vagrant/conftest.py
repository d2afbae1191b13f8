"""The Vagrant cluster test: marked `vagrant` (deselect with -m "not vagrant"); as root a missing
prerequisite fails, as another user it skips (like tests/node and tests/e2e)."""
from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.vagrant)

