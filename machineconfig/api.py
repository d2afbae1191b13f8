"""Pydantic models of the machineconfiguration.openshift.io/v1 objects, and their loader.

Field names are snake_case; the JSON/YAML spelling is the alias. `spec.config` of a
MachineConfig stays the raw Ignition object: it is parsed by the renderer, not here.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from machineconfig.constants import API_VERSION
from machineconfig.errors import InputError
from machineconfig.yamlload import Document, load_file

log = logging.getLogger(__name__)

YAML_SUFFIXES = (".yaml", ".yml", ".json")


class _Model(BaseModel):
    # strict: Kubernetes rejects `fips: "true"` or `kernelArguments: [1]`, so do we.
    model_config = ConfigDict(
        alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
        populate_by_name=True, strict=True, extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        # Go's decoder leaves a field at its zero value for JSON null; so do we.
        if isinstance(data, dict) and None in data.values():
            return {k: v for k, v in data.items() if v is not None}
        return data

    def to_dict(self) -> dict[str, Any]:
        """The object as Kubernetes would print it (only the fields that were set)."""
        out: dict[str, Any] = self.model_dump(by_alias=True, exclude_unset=True, mode="json")
        return out


class OwnerReference(_Model):
    api_version: str = ""
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(_Model):
    name: str = ""
    uid: str = ""
    generation: int = 0
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    owner_references: list[OwnerReference] | None = None


class LabelSelectorRequirement(_Model):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None


class LabelSelector(_Model):
    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None


class Condition(_Model):
    type: str
    status: str
    last_transition_time: str | None = None
    reason: str = ""
    message: str = ""


class _Object(_Model):
    api_version: str = API_VERSION
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def labels(self) -> dict[str, str] | None:
        return self.metadata.labels

    @property
    def annotations(self) -> dict[str, str]:
        return self.metadata.annotations or {}


class MachineConfigSpec(_Model):
    os_image_url: str = Field("", alias="osImageURL")
    base_os_extensions_container_image: str = Field("", alias="baseOSExtensionsContainerImage")
    config: Any = None  # raw Ignition, any spec version
    kernel_arguments: list[str] | None = None
    extensions: list[str] | None = None
    fips: bool = Field(False, alias="fips")
    kernel_type: str = ""


class MachineConfig(_Object):
    kind: str = "MachineConfig"
    spec: MachineConfigSpec = Field(default_factory=MachineConfigSpec)


class ObjectReference(_Model):
    api_version: str = ""
    kind: str = ""
    name: str = ""


class PoolConfiguration(_Model):
    name: str = ""
    source: list[ObjectReference] | None = None


class OSImageStreamReference(_Model):
    name: str = ""


class MachineConfigPoolSpec(_Model):
    machine_config_selector: LabelSelector | None = None
    node_selector: LabelSelector | None = None
    paused: bool = False
    max_unavailable: int | str | None = None
    configuration: PoolConfiguration = Field(default_factory=PoolConfiguration)
    os_image_stream: OSImageStreamReference | None = None
    pinned_image_sets: list[dict[str, Any]] | None = None


class MachineConfigPoolStatus(_Model):
    observed_generation: int = 0
    configuration: PoolConfiguration = Field(default_factory=PoolConfiguration)
    machine_count: int = 0
    updated_machine_count: int = 0
    ready_machine_count: int = 0
    unavailable_machine_count: int = 0
    degraded_machine_count: int = 0
    conditions: list[Condition] | None = None


class MachineConfigPool(_Object):
    kind: str = "MachineConfigPool"
    spec: MachineConfigPoolSpec = Field(default_factory=MachineConfigPoolSpec)
    status: MachineConfigPoolStatus | None = None


class ControllerConfigSpec(_Model):
    cluster_dnsip: str = Field("", alias="clusterDNSIP")
    cloud_provider_config: str = ""
    platform: str | None = None
    etcd_discovery_domain: str | None = None
    kube_api_server_serving_ca_data: str = Field("", alias="kubeAPIServerServingCAData")
    root_ca_data: str = Field("", alias="rootCAData")
    additional_trust_bundle: str | None = None
    pull_secret: dict[str, Any] | None = None
    images: dict[str, str] | None = None
    base_os_container_image: str = Field("", alias="baseOSContainerImage")
    base_os_extensions_container_image: str = Field("", alias="baseOSExtensionsContainerImage")
    os_image_url: str = Field("", alias="osImageURL")
    release_image: str = ""
    proxy: dict[str, Any] | None = None
    infra: dict[str, Any] | None = None
    dns: dict[str, Any] | None = None
    ip_families: str | None = None
    network_type: str | None = None


class ControllerConfigStatus(_Model):
    observed_generation: int = 0
    conditions: list[Condition] | None = None
    controller_certificates: list[dict[str, Any]] | None = None


class ControllerConfig(_Object):
    kind: str = "ControllerConfig"
    spec: ControllerConfigSpec = Field(default_factory=ControllerConfigSpec)
    status: ControllerConfigStatus | None = None


class KubeletConfigSpec(_Model):
    auto_sizing_reserved: bool | None = None
    log_level: int | None = Field(None, ge=0, le=10)
    machine_config_pool_selector: LabelSelector | None = None
    kubelet_config: dict[str, Any] | None = None
    tls_security_profile: dict[str, Any] | None = None


class ObjectStatus(_Model):
    observed_generation: int = 0
    conditions: list[Condition] | None = None


class KubeletConfig(_Object):
    kind: str = "KubeletConfig"
    spec: KubeletConfigSpec = Field(default_factory=KubeletConfigSpec)
    status: ObjectStatus | None = None


class ContainerRuntimeConfiguration(_Model):
    pids_limit: int | None = None
    log_level: str | None = None
    log_size_max: str | int | None = None
    overlay_size: str | int | None = None
    # "": no opinion, the platform's default runtime (what the CRD defaults an absent field to)
    default_runtime: Literal["crun", "runc", ""] | None = None
    additional_layer_stores: list[dict[str, Any]] | None = Field(None, max_length=5)
    additional_image_stores: list[dict[str, Any]] | None = Field(None, max_length=10)
    additional_artifact_stores: list[dict[str, Any]] | None = Field(None, max_length=10)


class ContainerRuntimeConfigSpec(_Model):
    machine_config_pool_selector: LabelSelector | None = None
    container_runtime_config: ContainerRuntimeConfiguration | None = None


class ContainerRuntimeConfig(_Object):
    kind: str = "ContainerRuntimeConfig"
    spec: ContainerRuntimeConfigSpec = Field(default_factory=ContainerRuntimeConfigSpec)
    status: ObjectStatus | None = None


AnyObject = MachineConfig | MachineConfigPool | ControllerConfig | KubeletConfig \
    | ContainerRuntimeConfig
KINDS: dict[str, type[_Object]] = {
    "MachineConfig": MachineConfig,
    "MachineConfigPool": MachineConfigPool,
    "ControllerConfig": ControllerConfig,
    "KubeletConfig": KubeletConfig,
    "ContainerRuntimeConfig": ContainerRuntimeConfig,
}


# The controllers read stored objects as the store hands them out (plain dicts); these say where
# the fields they share live.

def object_name(obj: Mapping[str, Any]) -> str:
    """metadata.name of a stored object, "" without one."""
    return str((obj.get("metadata") or {}).get("name", ""))


def pool_configuration(pool: Mapping[str, Any], part: str = "spec") -> Mapping[str, Any]:
    """A stored MachineConfigPool's `spec.configuration` (the rendered config its nodes move to,
    and its sources) or `status.configuration` (the one they all reached); {} when unset."""
    configuration: Mapping[str, Any] = (pool.get(part) or {}).get("configuration") or {}
    return configuration


def pool_target(pool: Mapping[str, Any]) -> str:
    """The name of the rendered config a stored pool's nodes move to ("" before its first)."""
    return str(pool_configuration(pool).get("name") or "")


def pool_node_selector(pool: Mapping[str, Any]) -> Any:
    """A stored pool's `spec.nodeSelector` as written (None when unset; it may be malformed)."""
    return (pool.get("spec") or {}).get("nodeSelector")


@dataclass
class Loaded:
    """One object read from a file, with where it came from (for error messages)."""

    obj: AnyObject
    file: str
    document: Document
    base_path: str = "$"


def parse_object(data: Any, doc: Document, base_path: str = "$") -> AnyObject | None:
    """The typed object for one document (None for kinds we do not model)."""
    if not isinstance(data, dict):
        raise InputError("expected an object with apiVersion and kind", file=doc.file,
                         path=base_path, line=doc.line_of(base_path))
    kind = data.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        log.debug("%s: skipping kind %r", doc.file, kind)
        return None
    try:
        obj = model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        path = base_path + "".join(f".{p}" for p in err["loc"] if not _is_union_tag(p))
        raise InputError(f"{kind}: {err['msg']}", file=doc.file, path=path,
                         line=doc.line_of(path)) from e
    assert isinstance(obj, (MachineConfig, MachineConfigPool, ControllerConfig, KubeletConfig,
                            ContainerRuntimeConfig))
    return obj


def _is_union_tag(part: Any) -> bool:
    # pydantic inserts the union member type ("str", "int", ...) into error locations
    return isinstance(part, str) and (part in {"str", "int", "bool", "float"} or "[" in part)


def load_documents(docs: Iterable[Document]) -> list[Loaded]:
    out: list[Loaded] = []
    for doc in docs:
        data = doc.data
        if isinstance(data, dict) and data.get("kind") == "List" and isinstance(
                data.get("items"), list):
            for i, item in enumerate(data["items"]):
                obj = parse_object(item, doc, f"$.items.{i}")
                if obj is not None:
                    out.append(Loaded(obj, doc.file, doc, f"$.items.{i}"))
            continue
        obj = parse_object(data, doc)
        if obj is not None:
            out.append(Loaded(obj, doc.file, doc))
    return out


def input_files(paths: Sequence[str], suffixes: tuple[str, ...] = YAML_SUFFIXES) -> list[str]:
    """Every file ending in one of `suffixes` (YAML/JSON by default) under the given files and
    directories, in a stable order; a file named directly is taken whatever its name."""
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs.sort()
                files.extend(os.path.join(root, n) for n in sorted(names)
                             if n.endswith(suffixes) and not n.startswith("."))
        elif os.path.exists(path):
            files.append(path)
        else:
            raise InputError("no such file or directory", file=path)
    return files


def load_paths(paths: Sequence[str]) -> list[Loaded]:
    """Load every object under `paths` (files or directories, any mix of YAML and JSON)."""
    out: list[Loaded] = []
    for file in input_files(paths):
        out.extend(load_documents(load_file(file)))
    return out
