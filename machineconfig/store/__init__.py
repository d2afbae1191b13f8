"""Where cluster state lives: the `Store` port and its implementations.

`open_store("local:DIR", state_dir=...)` gives the embedded store; see base.py for the contract.
"""
from __future__ import annotations

from machineconfig.store.base import (
    KINDS,
    ConflictError,
    ForbiddenError,
    NodeAPI,
    NodeRecord,
    NotFoundError,
    Store,
    StoreError,
    StoreEvent,
)

__all__ = ["KINDS", "ConflictError", "ForbiddenError", "NodeAPI", "NodeRecord", "NotFoundError",
           "Store", "StoreError", "StoreEvent"]
