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
           "Store", "StoreError", "StoreEvent", "open_store"]


def open_store(url: str, state_dir: str | None = None) -> Store:
    """The store a URL names: `local:DIR` (needs `state_dir`)."""
    scheme, sep, rest = url.partition(":")
    if not sep:
        raise StoreError(f"store URL {url!r}: expected SCHEME:..., e.g. local:DIR")
    if scheme == "local":
        if rest.startswith("//"):  # tolerate local://DIR
            rest = rest[2:]
        if not rest:
            raise StoreError(f"store URL {url!r}: local: needs the input directory, "
                             "e.g. local:examples")
        if not state_dir:
            raise StoreError(f"store URL {url!r}: the local store needs a state directory "
                             "(--state DIR)")
        # Imported here so programs that never open a local store do not load SQLite.
        from machineconfig.store.local import LocalStore
        return LocalStore(rest, state_dir)
    raise StoreError(f"store URL {url!r}: unknown scheme {scheme!r} (known: local)")
