"""Fixtures of the image tests: `image_layout` (session), the project's OCI image built by
tests/image/build.py (layers cached under the test cache; a rebuild only when the sources, the
wheels or a recipe change), and `unpacked_image`, its layers applied onto a directory.

As root a missing prerequisite fails the run; as another user these tests skip.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.build import Built, build
from tests.image.oci import read_image, unpack
from tests.node.rootfs import CACHE_DIR, require_prerequisites

REF = "localhost/machine-config:test"


@pytest.fixture(scope="session")
def image_layout() -> Built:
    require_prerequisites("image")
    # one layout per session, written from the cached layer blobs (hard links: cheap)
    layout = CACHE_DIR / "image-layout-test"
    shutil.rmtree(layout, ignore_errors=True)
    started = time.monotonic()
    built = build(layout, [REF])
    print(f"\nimage: {built.compressed_bytes / 1e6:.1f} MB compressed, "
          f"{built.uncompressed_bytes / 1e6:.1f} MB unpacked, ready in "
          f"{time.monotonic() - started:.1f} s")
    return built


@pytest.fixture(scope="session")
def unpacked_image(image_layout: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The image's layers applied onto a directory (tests only read it, or write under /tmp)."""
    root = tmp_path_factory.mktemp("image") / "root"
    unpack(read_image(image_layout.layout, REF), root)
    yield root
    shutil.rmtree(root, ignore_errors=True)
