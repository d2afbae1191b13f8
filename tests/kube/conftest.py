"""Fixtures: `fakeapi` (a running FakeAPIServer) and `kubeconfig` (a file naming it)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube.fakeapi import FakeAPIServer


@pytest.fixture
def fakeapi() -> Iterator[FakeAPIServer]:
    server = FakeAPIServer(bookmark_interval=0.2).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubeconfig(fakeapi: FakeAPIServer, tmp_path: Path) -> Path:
    return fakeapi.write_kubeconfig(tmp_path / "kubeconfig")
