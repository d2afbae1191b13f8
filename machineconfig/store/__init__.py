"""Where cluster state lives: the `Store` port and its implementations.

`open_store("local:DIR", state_dir=...)` gives the embedded store, `open_store("kube:")` the
Kubernetes API (kube.py); see base.py for the contract.
"""
from __future__ import annotations

from machineconfig.constants import STORE_KUBE, STORE_LOCAL
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
    UnavailableError,
)

__all__ = ["KINDS", "ConflictError", "ForbiddenError", "NodeAPI", "NodeRecord", "NotFoundError",
           "Store", "StoreError", "StoreEvent", "UnavailableError", "close_store",
           "open_store", "store_scheme", "store_url"]


def store_scheme(url: str) -> str | None:
    """STORE_KUBE or STORE_LOCAL when `url` names one of those stores (`kube` alone is `kube:`),
    else None (e.g. a daemon's node API URL)."""
    scheme, sep, _ = ("kube:" if url == "kube" else url).partition(":")
    return scheme if sep and scheme in (STORE_KUBE, STORE_LOCAL) else None


def close_store(store: object) -> None:
    """End a store's threads and connections (the stores that hold any have `close`)."""
    close = getattr(store, "close", None)
    if callable(close):
        close()


def store_url(url: str, kubeconfig: str | None = None) -> str:
    """The store URL of the programs' `--store URL [--kubeconfig FILE]`: `kube:FILE`."""
    if not kubeconfig:
        return url
    if url in (STORE_KUBE, f"{STORE_KUBE}:"):
        return f"{STORE_KUBE}:{kubeconfig}"
    raise StoreError(f"--kubeconfig goes with --store kube, not {url!r}")


def open_store(url: str, state_dir: str | None = None, node: str | None = None) -> Store:
    """The store a URL names: `local:DIR` (needs `state_dir`), or `kube`, `kube:` (in-cluster
    config, else $KUBECONFIG, else ~/.kube/config) and `kube:/path/to/kubeconfig`, which need no
    state directory. `node` (kube only) gives a daemon's store, limited to that node."""
    scheme, sep, rest = url.partition(":")
    known = store_scheme(url)
    if known is None:
        if not sep:
            raise StoreError(f"store URL {url!r}: expected SCHEME:..., e.g. local:DIR or kube:")
        raise StoreError(f"store URL {url!r}: unknown scheme {scheme!r} (known: local, kube)")
    if known == STORE_KUBE:
        # Imported here so programs that never open a kube store do not need lightkube.
        from machineconfig.store.kube import open_kube
        return open_kube(rest, node=node)
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
