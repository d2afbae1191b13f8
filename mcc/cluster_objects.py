"""The OpenShift cluster-wide objects MCO's controllers read besides their own kinds: the image
config, mirror sets and ImageContentSourcePolicies (registries), FeatureGate and the Node config
(kubelet). Kept as written, with the file and position each came from for messages."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from machineconfig.errors import InputError
from machineconfig.store.base import (
    CLUSTER_CONFIG_KINDS, MACHINE_CONFIGURATION, is_cluster_config,
)
from machineconfig.yamlload import Document

log = logging.getLogger(__name__)

IMAGE = "Image"
IMAGE_CONTENT_SOURCE_POLICY = "ImageContentSourcePolicy"
IMAGE_DIGEST_MIRROR_SET = "ImageDigestMirrorSet"
IMAGE_TAG_MIRROR_SET = "ImageTagMirrorSet"
assert {IMAGE, IMAGE_CONTENT_SOURCE_POLICY, IMAGE_DIGEST_MIRROR_SET,
        IMAGE_TAG_MIRROR_SET} <= set(CLUSTER_CONFIG_KINDS)
CLUSTER_INSTANCE = "cluster"  # the one Image (FeatureGate, Node) object MCO reads


@dataclass(frozen=True)
class ClusterObject:
    """One object as written, and where: `file` and the document's path to it."""

    obj: dict[str, Any]
    file: str
    document: Document | None = None
    base_path: str = "$"

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata")
        return str(meta.get("name") or "") if isinstance(meta, dict) else ""

    def error(self, message: str, path: str = "") -> InputError:
        """An InputError about `path` (dotted, below the object) naming the file and line."""
        full = f"{self.base_path}.{path}" if path else self.base_path
        line = self.document.line_of(full) if self.document is not None else None
        return InputError(message, file=self.file, path=full, line=line)


def cluster_kind(obj: Any) -> str | None:
    """The CLUSTER_CONFIG_KINDS key of `obj`, or None when it is none of them."""
    return str(obj["kind"]) if is_cluster_config(obj) else None


def from_documents(docs: Iterable[Document]) -> dict[str, list[ClusterObject]]:
    """The cluster objects among `docs` (top level or in a List), by kind."""
    out: dict[str, list[ClusterObject]] = {}
    for doc in docs:
        data = doc.data
        items: Sequence[tuple[Any, str]] = [(data, "$")]
        if isinstance(data, dict) and data.get("kind") == "List" and isinstance(
                data.get("items"), list):
            items = [(item, f"$.items.{i}") for i, item in enumerate(data["items"])]
        for obj, base in items:
            kind = cluster_kind(obj)
            # the MachineConfiguration holds node disruption policies: no render input
            if kind is not None and kind != MACHINE_CONFIGURATION:
                out.setdefault(kind, []).append(ClusterObject(obj, doc.file, doc, base))
    return out


def merge(into: dict[str, list[ClusterObject]], more: dict[str, list[ClusterObject]]) -> None:
    for kind, objs in more.items():
        into.setdefault(kind, []).extend(objs)


def by_name(objs: Sequence[ClusterObject]) -> list[ClusterObject]:
    """Sorted by name (MCO lists them from an informer cache; the order must not depend on files);
    a second object of one name is an error naming both files."""
    seen: dict[str, ClusterObject] = {}
    for o in objs:
        if o.name in seen:
            raise o.error(f"duplicate {o.obj.get('kind')} {o.name!r} (also in {seen[o.name].file})",
                          "metadata.name")
        seen[o.name] = o
    return [seen[n] for n in sorted(seen)]


def instance(objs: Sequence[ClusterObject], kind: str) -> ClusterObject | None:
    """The object named `cluster` (MCO reads no other); others are ignored with a warning."""
    chosen = None
    for o in objs:
        if o.name == CLUSTER_INSTANCE:
            chosen = o
        else:
            log.warning("%s: %s %r ignored: only the one named %r is read", o.file, kind, o.name,
                        CLUSTER_INSTANCE)
    return chosen
