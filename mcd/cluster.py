"""How `mcd start` reaches its node record: the server's node API (registering with the pool's
bootstrap token from node-credentials.json and keeping the node token it gets back, mode 0600),
a store on the same host (`local:DIR` with a state directory, for tests and single machines), or
the Kubernetes API (`kube[:KUBECONFIG]`: in a cluster the daemon patches its own Node).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from machineconfig import constants as C
from machineconfig.store import ForbiddenError, NodeAPI, NotFoundError, StoreError, open_store
from machineconfig.store.remote import RemoteNodeAPI

log = logging.getLogger(__name__)

NODE_TOKEN_PATH = "/etc/machine-config-daemon/node-token"
SERVER_CA_PATH = "/etc/machine-config-daemon/server-ca.crt"
NODE_ANNOTATIONS_PATHS = ("/etc/machine-config-daemon/node-annotations.json",
                          "/etc/machine-config-daemon/node-annotation.json.bak")
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
    for node_path in NODE_ANNOTATIONS_PATHS:
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


def _write_private(path: Path, data: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


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
        ca_path = root / SERVER_CA_PATH.lstrip("/")
        _write_private(ca_path, credentials.ca_pem, 0o644)
        ca_file = str(ca_path)
    token_path = root / NODE_TOKEN_PATH.lstrip("/")
    if token_path.exists():
        api = RemoteNodeAPI(url, token_path.read_text().strip(), ca_file)
        try:
            api.get_node(node)
            log.info("node %s: using the stored node token with %s", node, url)
            return api
        except (ForbiddenError, NotFoundError) as err:
            log.info("stored node token not accepted (%s): registering again", err)
    if credentials is None:
        raise StoreError(f"node {node} has no valid token and no {credentials_path} to register")
    labels = {**default_labels(root, credentials), **labels}
    api, record = RemoteNodeAPI.register(url, credentials.pool_token, node, labels, ca_file)
    _write_private(token_path, api.token + "\n")
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
        # get_node started the node's watch: a retry must not leave it running
        close = getattr(store, "close", None)
        if close is not None:
            close()
        raise
    log.info("node %s: kube store %s", node, url)
    return store


def connect(store: str | None, state_dir: str | None, node: str, root: Path,
            credentials_path: Path, labels: Mapping[str, str]) -> NodeAPI:
    if store and (store == "kube" or store.startswith("kube:")):
        return connect_kube(store, node)
    if store and store.startswith("local:"):
        return connect_local(store, state_dir, node, root, labels)
    return connect_remote(store, node, root, credentials_path, labels)
