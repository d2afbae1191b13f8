"""A store as a config source (`mcs start`): pools and rendered configs from a `Store`, the
served config choice of MCO's cluster server, and node-credentials.json (server URL, the pool's
bootstrap token, the CA) so the new machine's daemon can reach the node API.
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

from machineconfig import constants
from machineconfig.store import NotFoundError, Store, StoreError
from machineconfig.store.base import CONTROLLER_CONFIG, MACHINE_CONFIG_POOL
from mcs.serve import JSON, NotFound, ServeError, build_served, go_json, one_line, valid_pool_name
from machineconfig.atomicfile import stat_signature
from mcs.sources import CONFIG_NAME, Resolved, choose_config
from mcs.tokens import PoolTokens

log = logging.getLogger(__name__)

CREDENTIALS_MODE = 0o600


class StoreSource:
    """Reads pools, the ControllerConfig and rendered configs from the store; resolution is
    remembered per store revision, so an unchanged store costs one revision() call per request."""

    def __init__(self, store: Store, tokens: PoolTokens | None, label: str, ca_file: Path | None = None,
                 kubeconfig: Path | None = None) -> None:
        self.store = store
        self.tokens = tokens
        self.label = label
        self.ca_file = ca_file
        self.kubeconfig = kubeconfig
        self._lock = threading.Lock()
        self._revision: int | None = None
        self._resolved: dict[str, Resolved] = {}
        self._cc: tuple[str, JSON] | None = None  # (digest, object) at self._revision
        # Requests are answered on the event loop: input files must be parsed elsewhere.
        scan = getattr(store, "scan_inputs_in_background", None)
        if callable(scan):
            scan()

    def close(self) -> None:
        """Close the store (ends its background input scan)."""
        close = getattr(self.store, "close", None)
        if callable(close):
            close()

    def describe(self) -> str:
        return self.label

    def pools(self) -> list[str]:
        names = (str((p.get("metadata") or {}).get("name") or "") for p in
                 self.store.list_objects(MACHINE_CONFIG_POOL))
        return sorted(n for n in names if valid_pool_name(n))

    def has_pool(self, pool: str) -> bool:
        if not valid_pool_name(pool):
            return False
        try:
            self.store.get_object(MACHINE_CONFIG_POOL, pool)
        except StoreError:
            return False
        return True

    def _file_signatures(self) -> tuple[object, ...]:
        # The CA and kubeconfig are files, not store objects: a change to them rebuilds too.
        return (stat_signature(self.ca_file) if self.ca_file else None,
                stat_signature(self.kubeconfig) if self.kubeconfig else None)

    def _controller_config(self) -> tuple[str, JSON]:
        """The ControllerConfig and a digest of it; none in the store serves as an empty one."""
        if self._cc is None:
            try:
                cc = self.store.get_object(CONTROLLER_CONFIG, constants.CONTROLLER_CONFIG_NAME)
            except NotFoundError:
                log.info("no ControllerConfig %s in the store: serving without its CA files",
                         constants.CONTROLLER_CONFIG_NAME)
                cc = {}
            digest = hashlib.sha256(json.dumps(cc.get("spec") or {}, sort_keys=True).encode()).hexdigest()
            self._cc = (digest, cc)
        return self._cc

    def resolve(self, pool: str) -> Resolved:
        if not valid_pool_name(pool):
            raise NotFound("no such pool: invalid pool name")
        try:
            revision = self.store.revision()
            with self._lock:
                if revision != self._revision:
                    self._revision, self._resolved, self._cc = revision, {}, None
                resolved = self._resolved.get(pool)
                if resolved is None:
                    resolved = self._resolve(pool)
                    self._resolved[pool] = resolved
        except NotFoundError as e:
            raise NotFound(f"pool {pool!r} not found") from e
        except StoreError as e:
            log.warning("pool %s: %s", pool, one_line(str(e)))
            raise ServeError(f"store: {type(e).__name__}") from e
        if resolved.signature[-1] != self._file_signatures():
            resolved = Resolved(pool, resolved.config_name,
                                (*resolved.signature[:-1], self._file_signatures()))
        return resolved

    def _resolve(self, pool: str) -> Resolved:
        name = choose_config(self.store.get_object(MACHINE_CONFIG_POOL, pool))
        if not name:
            raise NotFound(f"pool {pool!r} has no rendered config yet")
        if not CONFIG_NAME.match(name):
            raise ServeError(f"pool {pool!r} names an invalid config")
        cc_digest, _ = self._controller_config()
        return Resolved(pool, name, (name, cc_digest, self._file_signatures()))

    def credentials(self, pool: str, server_url: str) -> bytes:
        """node-credentials.json: where the node API is and the pool's bootstrap token."""
        if self.tokens is None:
            raise ServeError("no node API here: no bootstrap tokens")
        token = self.tokens.token_for(pool)
        if token is None:
            self.tokens.ensure([pool])
            token = self.tokens.token_for(pool)
        if token is None:
            raise ServeError(f"no bootstrap token for pool {pool!r}")
        creds: dict[str, Any] = {"server": server_url, "pool": pool, "token": token}
        if self.ca_file is not None:
            try:
                creds["ca"] = self.ca_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise ServeError("the CA file cannot be read") from e
        return go_json(creds)

    def build(self, resolved: Resolved, version: str) -> bytes:
        try:
            mc = self.store.get_rendered(resolved.config_name)
            with self._lock:
                _, cc = self._controller_config()
        except NotFoundError as e:
            raise NotFound(f"rendered config {resolved.config_name!r} not found") from e
        except StoreError as e:
            log.warning("rendered config %s: %s", resolved.config_name, one_line(str(e)))
            raise ServeError(f"store: {type(e).__name__}") from e
        kubeconfig: bytes | None = None
        if self.kubeconfig is not None:
            try:
                kubeconfig = self.kubeconfig.read_bytes()
            except OSError as e:
                raise ServeError("bootstrap kubeconfig cannot be read") from e
        # Without bootstrap tokens (the kube store with no --state) daemons use the API server.
        extra = [] if self.tokens is None else [(constants.NODE_CREDENTIALS_PATH,
                  self.credentials(resolved.pool, resolved.variant), CREDENTIALS_MODE)]
        return build_served(resolved.config_name, mc, cc, kubeconfig, version, extra_files=extra)
