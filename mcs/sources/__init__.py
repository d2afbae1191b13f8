"""Where served configs come from: one protocol (`ConfigSource`) and its two implementations, the
bootstrap directory (`mcs.sources.bootstrap`, `mcs bootstrap`) and a store (`mcs.sources.store`,
`mcs start`), plus what both use: the resolution of a pool (`Resolved`), file signatures and
MCO's choice of the served config.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from machineconfig.atomicfile import Signature, stat_signature
from mcs.serve import JSON

# Rendered config names come from a file on disk; they are joined into a path, so keep them to
# DNS-subdomain characters and forbid anything that could climb out of machine-configs/.
CONFIG_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@dataclass(frozen=True)
class Resolved:
    """Which rendered config a pool serves, and the state of every input file it depends on."""

    pool: str
    config_name: str
    signature: tuple[object, ...]
    variant: str = ""  # the server URL a store-mode build writes into node-credentials.json


def choose_config(pool: JSON) -> str:
    """MCO's choice: the target config once a node has updated to it, else the current one."""
    spec_name = ((pool.get("spec") or {}).get("configuration") or {}).get("name") or ""
    status = pool.get("status") or {}
    status_name = (status.get("configuration") or {}).get("name") or ""
    updated = status.get("updatedMachineCount") or 0
    chosen = spec_name if isinstance(updated, int) and updated > 0 else status_name
    # A freshly rendered layout may carry only one of the two; serve what there is.
    return str(chosen or spec_name or status_name)


class ConfigSource(Protocol):
    """A source of served configs: `resolve` is cheap (per request: which rendered config the pool
    serves and a signature of its inputs), `build` slow (the served bytes, per change; for the
    server URL `resolved.variant` when that matters). `pools` and `has_pool` name valid pools only;
    `describe` says where the configs come from (for the log); `close` releases what it holds."""

    def resolve(self, pool: str) -> Resolved: ...

    def build(self, resolved: Resolved, version: str) -> bytes: ...

    def pools(self) -> list[str]: ...

    def has_pool(self, pool: str) -> bool: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...
