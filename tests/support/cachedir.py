"""Where the tests keep what they build or unpack once (node rootfs, Vagrant box, container image
layers, the kube binaries from ../shared/bin): `$MCT_CACHE_DIR`, else
/var/cache/machine-config-tests, else (a user who cannot write there) ~/.cache/machine-config-tests.
One variable for every test directory."""
from __future__ import annotations

import os
from pathlib import Path

ENV = "MCT_CACHE_DIR"
DEFAULT = Path("/var/cache/machine-config-tests")


def cache_dir() -> Path:
    env = os.environ.get(ENV)
    if env:
        return Path(env)
    try:
        DEFAULT.mkdir(parents=True, exist_ok=True)
        if os.access(DEFAULT, os.W_OK):
            return DEFAULT
    except OSError:
        pass
    return Path.home() / ".cache" / "machine-config-tests"
