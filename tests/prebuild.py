"""Build the slow, cached test inputs ahead of the tests that need them.

    python -m tests.prebuild [--log FILE]

`scripts/test` (run without arguments, as root, as CI runs it) starts this in the background
while the unit and kube tests run, so that a fresh machine debootstraps the image base, the node
rootfs (plain and Kubernetes) and the Vagrant box tree during those minutes instead of in front
of the first test that boots them. Every
step is the same cached, file-locked builder the tests call themselves: a test that gets there
first waits for the lock and finds the tree built; a step that fails here is only logged (the
test that needs it builds it again and reports the error as its own failure).
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.node.rootfs import CACHE_DIR, ensure_rootfs, missing_prerequisites

log = logging.getLogger("prebuild")
REPO_ROOT = Path(__file__).resolve().parents[1]


def _vagrant_box() -> None:
    # the box file only: `vagrant box add` needs libvirtd, which the Vagrant test starts itself
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "vagrant/box/build"), "--no-add",
                           "--cache-dir", str(CACHE_DIR)],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"vagrant/box/build exited {proc.returncode}: "
                           f"{proc.stderr.strip().splitlines()[-1:] or ''}")


def _kube_binaries() -> None:
    from tests.kube import controlplane

    for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        controlplane.binary(name)


def _kube_rootfs() -> None:
    from tests.kubenode.rootfs import ensure_kube_rootfs

    ensure_kube_rootfs()


def _image_layers() -> None:
    from tests.image.build import base_layer

    base_layer()  # the debootstrap'd base; the application layer follows the sources


# In the order the tests need them (tests/conftest.py RUN_ORDER).
STEPS: list[tuple[str, Callable[[], object]]] = [
    ("kube binaries", _kube_binaries),
    ("image base layer", _image_layers),
    ("node rootfs", ensure_rootfs),
    ("kubenode rootfs", _kube_rootfs),
    ("vagrant box", _vagrant_box),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, help="append progress here instead of stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        filename=args.log)
    missing = missing_prerequisites()
    if missing:
        log.info("nothing prebuilt: %s missing (the node tests will say so)", ", ".join(missing))
        return 0
    os.nice(5)  # behind the tests that run meanwhile
    for name, step in STEPS:
        started = time.monotonic()
        try:
            step()
        except Exception as err:  # noqa: BLE001 - logged; the test that needs it fails for real
            log.warning("%s: not prebuilt (%s); the tests build it themselves", name, err)
            continue
        log.info("%s ready in %.0f s", name, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
