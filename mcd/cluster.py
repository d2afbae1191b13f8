"""How `mcd start` reaches its node record: the server's node API (registering with the pool's
bootstrap token from node-credentials.json and keeping the node token it gets back, mode 0600,
renewed before it expires),
a store on the same host (`local:DIR` with a state directory, for tests and single machines), or
the Kubernetes API (`kube[:KUBECONFIG]`: in a cluster the daemon patches its own Node).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from machineconfig import constants as C
from machineconfig.store import (ForbiddenError, NodeAPI, NotFoundError, StoreError, open_store,
                                 store_scheme)
from machineconfig.store.remote import RemoteNodeAPI
from mcd.file_writers import write_private
from mcd.noderoot import NodeRoot

log = logging.getLogger(__name__)

NODE_TOKEN_PATH = f"{C.DAEMON_DIR}/node-token"
SERVER_CA_PATH = f"{C.DAEMON_DIR}/server-ca.crt"
ROLE_LABEL_PREFIX = "node-role.kubernetes.io/"


@dataclass(frozen=True)
class Credentials:
    """node-credentials.json as the server serves it (the pool token never reaches a log)."""

    server: str
    pool_token: str
    pool: str = ""
    ca_pem: str = ""

    def __repr__(self) -> str:
        return f"Credentials(server={self.server!r}, pool={self.pool!r})"


def read_credentials(path: Path) -> Credentials:
    data = json.loads(path.read_text())
    token = data.get("poolToken") or data.get("token") or ""
    if not data.get("server") or not token:
        raise StoreError(f"{path}: needs \"server\" and the pool token")
    return Credentials(str(data["server"]), str(token), str(data.get("pool") or ""),
                       str(data.get("ca") or ""))


def default_labels(root: Path, credentials: Credentials | None) -> dict[str, str]:
    """The role label of the node's pool: from the credentials, else the served config's name."""
    pool = credentials.pool if credentials else ""
    for node_path in (C.NODE_ANNOTATIONS_PATH, C.NODE_ANNOTATIONS_BACKUP_PATH):
        if pool:
            break
        try:
            current = json.loads((root / node_path.lstrip("/")).read_text()).get(
                C.CURRENT_CONFIG_ANNOTATION, "")
        except (OSError, ValueError):
            continue
        # rendered-<pool>-<hash>
        if current.startswith("rendered-") and current.count("-") >= 2:
            pool = current[len("rendered-"):].rsplit("-", 1)[0]
    return {ROLE_LABEL_PREFIX + pool: ""} if pool else {}


def _write_private(root: Path, node_path: str, data: str, mode: int = 0o600) -> Path:
    """Atomically, created with `mode` (never wider on the way), resolved inside `root`."""
    write_private(root, node_path, data.encode(), mode)
    fs = NodeRoot(root)
    return fs.host_path(fs.canonical(node_path))  # a host path with no link to leave the root


def connect_remote(url: str | None, node: str, root: Path, credentials_path: Path,
                   labels: Mapping[str, str]) -> NodeAPI:
    """A RemoteNodeAPI with this node's token, registering first when there is none or it is
    rejected. Raises StoreError (the caller retries) when the server cannot be reached."""
    credentials = read_credentials(credentials_path) if credentials_path.exists() else None
    url = url or (credentials.server if credentials else "")
    if not url:
        raise StoreError(f"no --store given and no {credentials_path}")
    ca_file: str | None = None
    if credentials and credentials.ca_pem:
        ca_file = str(_write_private(root, SERVER_CA_PATH, credentials.ca_pem, 0o644))
    fs = NodeRoot(root)

    def keep(token: str) -> None:
        # Every new token (registration, renewal) replaces the stored one before it is used.
        _write_private(root, NODE_TOKEN_PATH, token + "\n")

    stored = fs.read_text(NODE_TOKEN_PATH, follow=False).strip() if fs.lexists(NODE_TOKEN_PATH) else ""
    if stored:
        # Its lifetime is unknown here: the first call renews it (and learns the new one's).
        api = RemoteNodeAPI(url, stored, ca_file, on_token=keep)
        try:
            api.get_node(node)
            log.info("node %s: using the stored node token with %s", node, url)
            return api
        except (ForbiddenError, NotFoundError) as err:
            log.info("stored node token not accepted (%s): registering again", err)
    if credentials is None:
        raise StoreError(f"node {node} has no valid token and no {credentials_path} to register")
    labels = {**default_labels(root, credentials), **labels}
    # The last token proves this is the same machine: the server refuses (409, a ConflictError
    # the caller retries) to hand a registered node's name to a caller without it, until the
    # admin revokes the node's tokens (`mcs node revoke NAME`).
    api, record = RemoteNodeAPI.register(url, credentials.pool_token, node, labels, ca_file,
                                         node_token=stored or None, on_token=keep)
    log.info("node %s registered with labels %s", record.name, sorted(record.labels))
    return api


def connect_local(url: str, state_dir: str | None, node: str, root: Path,
                  labels: Mapping[str, str]) -> NodeAPI:
    """The same-host store: the node is registered directly (no tokens)."""
    store = open_store(url, state_dir)
    store.register_node(node, {**default_labels(root, None), **labels})
    log.info("node %s: local store %s", node, url)
    return store


def connect_kube(url: str, node: str) -> NodeAPI:
    """The Kubernetes API directly: a store limited to this node (the kubelet registers it; until
    it has, NotFoundError makes the caller retry)."""
    store = open_store(url, node=node)
    try:
        store.get_node(node)
    except BaseException:
        close = getattr(store, "close", None)
        if close is not None:
            close()  # its watch on the node: mcd start retries with a new store
        raise
    log.info("node %s: kube store %s", node, url)
    return store


def connect(store: str | None, state_dir: str | None, node: str, root: Path,
            credentials_path: Path, labels: Mapping[str, str]) -> NodeAPI:
    scheme = store_scheme(store) if store else None
    if store and scheme == C.STORE_KUBE:
        return connect_kube(store, node)
    if store and scheme == C.STORE_LOCAL:
        return connect_local(store, state_dir, node, root, labels)
    return connect_remote(store, node, root, credentials_path, labels)
