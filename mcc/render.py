"""The render controller's pure core: pick a pool's MachineConfigs, validate, merge, name.

Mirrors MCO's generateRenderedMachineConfig/MergeMachineConfigs (spec/mco.md section 2): the
worker-first merge order, the field rules, MCO's error texts and the byte-identical name hash.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from machineconfig import labels, mcoparse, yamlv2
from machineconfig.store.rendered import hashed_name
from machineconfig.api import ControllerConfig, MachineConfig, MachineConfigPool, MachineConfigSpec
from machineconfig.constants import (
    API_VERSION, CONTROLLER_VERSION, GENERATED_BY_CONTROLLER_VERSION_ANNOTATION,
    INTERNAL_IGNITION_VERSION, OS_IMAGE_URL_OVERRIDDEN_ANNOTATION,
    OVERLAYS_ANNOTATION, RELEASE_IMAGE_VERSION_ANNOTATION, ROLE_LABEL,
)
from machineconfig.errors import MachineConfigError
from machineconfig.ignition import merge as ignition_merge
from machineconfig.rendered_config import RenderedConfig
from mcc.overlay import is_overlay

log = logging.getLogger(__name__)

JSON = dict[str, Any]

WORKER_POOL = "worker"
KERNEL_TYPE_DEFAULT, KERNEL_TYPE_REALTIME, KERNEL_TYPE_64K = "default", "realtime", "64k-pages"
KERNEL_TYPES = frozenset({"", KERNEL_TYPE_DEFAULT, KERNEL_TYPE_REALTIME, KERNEL_TYPE_64K})
SUPPORTED_EXTENSIONS = frozenset({"two-node-ha", "ipsec", "usbguard", "kerberos", "kernel-devel",
                                  "sandboxed-containers", "sysstat"})
# etcd's request limit; MCO refuses rendered configs above it and warns above 80%.
MAX_MACHINE_CONFIG_SIZE = 1_572_864
SELECTING_ALL = ("This machineconfigpool is selecting all machineconfigs. "
                 "A non-empty selector is required.")


class RenderError(MachineConfigError):
    """Rendering a pool failed; `str()` is MCO's error text for it.

    `machine_config` names the input MachineConfig at fault when there is a single one.
    """

    def __init__(self, message: str, machine_config: str | None = None) -> None:
        super().__init__(message)
        self.machine_config = machine_config


@dataclass(frozen=True)
class PoolRender:
    """A pool's (or a node's) render: the rendered config `rendered-<pool>-<hash>`, the YAML
    text its name hashes and the MachineConfigs it was made from (in merge input order)."""

    pool: str
    config: RenderedConfig
    spec_yaml: str
    sources: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def spec(self) -> JSON:
        spec: JSON = self.config.object["spec"]
        return spec

    @property
    def annotations(self) -> Mapping[str, str]:
        return self.config.annotations

    @property
    def owner_references(self) -> list[JSON]:
        owners: list[JSON] = self.config.metadata["ownerReferences"]
        return owners


def select_machine_configs(pool: MachineConfigPool,
                           configs: Sequence[MachineConfig]) -> list[MachineConfig]:
    """The pool's MachineConfigs by name, as bootstrap's getMachineConfigsForPool picks them.

    A selector without requirements (`{}`) selects nothing here (MCO refuses to let a pool
    select everything); rendering nothing then fails with "empty machineconfig object".
    Per-node overlays (mcc.overlay) are never a pool's, whatever their labels.
    """
    selector = pool.spec.machine_config_selector
    if labels.is_empty(selector):
        log.warning("pool %s: %s", pool.name, SELECTING_ALL)
        return []
    try:
        compiled = labels.compile(selector) if selector is not None else None
    except labels.SelectorError as e:
        raise RenderError(str(e)) from e
    chosen = [] if compiled is None else [mc for mc in configs
                                          if compiled.matches(mc.labels) and not is_overlay(mc)]
    if not chosen:
        raise RenderError(f"couldn't find any MachineConfigs for pool: {pool.name}")
    return sorted(chosen, key=lambda mc: mc.name)


def validate_machine_config(spec: MachineConfigSpec, raw: bytes | None = None) -> None:
    """ValidateMachineConfig: kernelType, then (only with a config) Ignition and extensions.

    `raw` is `mcoparse.raw_config(spec.config)` when the caller has it already."""
    if spec.kernel_type not in KERNEL_TYPES:
        raise RenderError(f"kernelType={spec.kernel_type} is invalid")
    if raw is None:
        raw = mcoparse.raw_config(spec.config)
    if raw is None:
        return
    try:
        mcoparse.check_machine_config_ignition(raw)
    except mcoparse.IgnitionConfigError as e:
        raise RenderError(str(e)) from e
    invalid = [ext for ext in spec.extensions or [] if ext not in SUPPORTED_EXTENSIONS]
    if invalid:
        raise RenderError(f"invalid extensions found: [{' '.join(invalid)}]")


def merge_order(configs: Sequence[MachineConfig]) -> list[MachineConfig]:
    """Worker-labelled configs first, then the rest; each group by name (MergeMachineConfigs)."""
    workers: list[MachineConfig] = []
    others: list[MachineConfig] = []
    for mc in configs:
        if mc.labels is None:
            raise RenderError(f"cannot find label in MachineConfig {mc.name}", mc.name)
        (workers if mc.labels.get(ROLE_LABEL) == WORKER_POOL else others).append(mc)
    return sorted(workers, key=lambda mc: mc.name) + sorted(others, key=lambda mc: mc.name)


def _parse(mc: MachineConfig, raws: dict[int, bytes | None] | None = None) -> JSON:
    """The converted config with private copies of its file entries (the merge edits those).

    `raws` maps id(mc) to its raw config bytes where the caller computed them already."""
    raw = raws.get(id(mc)) if raws is not None else None
    if raw is None:
        raw = mcoparse.raw_config(mc.spec.config)
    assert raw is not None
    try:
        config = mcoparse.converted_config(raw)  # shared with the cache: copy what we modify
    except mcoparse.IgnitionConfigError as e:
        raise RenderError(str(e)) from e
    files = config.get("storage", {}).get("files")
    if not files:
        return config
    own = []
    for f in files:
        f = dict(f)
        if "contents" in f:
            f["contents"] = dict(f["contents"])
        own.append(f)
    return {**config, "storage": {**config["storage"], "files": own}}


def _files(config: JSON) -> list[JSON]:
    files: list[JSON] = config.get("storage", {}).get("files", [])
    return files


def _copy_json(value: Any) -> Any:
    """copy.deepcopy for JSON data (dicts, lists and immutable scalars), several times faster."""
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


def _drop_empty_compression(path: tuple[str, ...], item: Any) -> None:
    """After a merge step, a file's "" compression goes back to nil (see merge_ignition)."""
    if path != ("storage", "files"):
        return
    contents = item.get("contents")
    if contents is not None and contents.get("compression") == "":
        del contents["compression"]
        if not contents:
            del item["contents"]


def merge_ignition(ordered: Sequence[MachineConfig],
                   raws: dict[int, bytes | None] | None = None) -> JSON:
    """The merged Ignition (3.5.0) of configs already in merge order.

    Folded with ignition.merge.MergeFold: the same result as merging the configs one after the
    other, without rebuilding every list at each step (which made rendering quadratic). The
    result is only read; the file entries edited on the way are private copies (`_parse`).
    """
    if ordered[0].spec.config is None:
        base: JSON = {"ignition": {"version": INTERNAL_IGNITION_VERSION}}
    else:
        base = _parse(ordered[0], raws)
    fold = ignition_merge.MergeFold(base)
    for mc in ordered[1:]:
        if mc.spec.config is None:
            continue
        child = _parse(mc, raws)
        # butane#332: Ignition merges `compression` independently of `source`, so a child that
        # replaces the source must also clear the parent's compression: nil becomes "" ...
        for f in _files(child):
            f.setdefault("contents", {}).setdefault("compression", "")
        # ... and every "" goes back to nil in the result (the fold reports each file a step
        # may have changed; the others were cleaned by an earlier step).
        fold.add(child, _drop_empty_compression)
    out: JSON = _copy_json(fold.result())  # the result must not share the parse cache
    for f in _files(out):
        # Ignition does not overwrite by default, MCO always does: make new nodes match.
        if f.get("overwrite") is None:
            f["overwrite"] = True
    return out


def merge_machine_configs(configs: Sequence[MachineConfig], controller_config: ControllerConfig,
                          pool: MachineConfigPool | None = None,
                          raws: dict[int, bytes | None] | None = None,
                          overlays: Sequence[MachineConfig] = ()) -> JSON:
    """MergeMachineConfigs: the rendered spec, keys in Go's MachineConfigSpec order.

    `raws` maps id(mc) to `mcoparse.raw_config(mc.spec.config)` where already computed.
    `overlays` (a node's, mcc.overlay) are merged after all of the pool's configs, by name,
    with the same rules: the last word is the node's."""
    ordered = merge_order(configs) + sorted(overlays, key=lambda mc: mc.name)
    config = merge_ignition(ordered, raws)
    fips = any(mc.spec.fips for mc in ordered)
    kernel_type = ""
    for mc in ordered:
        if mc.spec.kernel_type in (KERNEL_TYPE_REALTIME, KERNEL_TYPE_64K):
            kernel_type = mc.spec.kernel_type
    kernel_type = kernel_type or KERNEL_TYPE_DEFAULT
    kargs = [arg for mc in ordered for arg in mc.spec.kernel_arguments or []]
    extensions = [ext for mc in ordered for ext in mc.spec.extensions or []]
    if kernel_type != KERNEL_TYPE_DEFAULT and "kernel-devel" in extensions:
        raise RenderError("installing kernel-devel extension is not supported with kernelType: "
                          f"{kernel_type}")
    os_image_url = controller_config.spec.base_os_container_image
    extensions_image = controller_config.spec.base_os_extensions_container_image
    overridden = False
    for mc in ordered:
        # Generated configs carry the cluster default already; only user configs override.
        if GENERATED_BY_CONTROLLER_VERSION_ANNOTATION in mc.annotations:
            continue
        if mc.spec.os_image_url:
            os_image_url = mc.spec.os_image_url
            overridden = True
        if mc.spec.base_os_extensions_container_image:
            extensions_image = mc.spec.base_os_extensions_container_image
    stream = pool.spec.os_image_stream if pool is not None else None
    if overridden and stream is not None and stream.name:
        raise RenderError("cannot override MachineConfig osImageURL and set MachineConfigPool "
                          "spec.osImageStream.name simultaneously")
    return {
        "osImageURL": os_image_url,
        "baseOSExtensionsContainerImage": extensions_image,
        "config": config,
        "kernelArguments": kargs,
        "extensions": extensions,
        "fips": fips,
        "kernelType": kernel_type,
    }


def spec_yaml(spec: JSON) -> str:
    """ghodss/yaml.Marshal of the spec: the exact text the name hash covers."""
    try:
        return yamlv2.dump(spec)
    except yamlv2.YAMLError as e:
        raise RenderError(f"error converting JSON to YAML: {e}") from e


def generate_rendered_machine_config(pool: MachineConfigPool, configs: Sequence[MachineConfig],
                                     controller_config: ControllerConfig,
                                     overlays: Sequence[MachineConfig] = ()) -> PoolRender:
    """generateRenderedMachineConfig for configs already selected for `pool`; with `overlays`,
    a node's own config: the same merge with the overlays last, the same name rules (so it is
    `rendered-<pool>-<hash>` too), and the overlays listed in an annotation (not hashed).

    MCO's guard on the ControllerConfig's generated-by-version annotation is not applied:
    offline inputs are written by people, not by a running operator.
    """
    if not configs:
        raise RenderError("empty machineconfig object")
    by_name = sorted(configs, key=lambda mc: mc.name)
    overlays = sorted(overlays, key=lambda mc: mc.name)
    for mc in by_name + overlays:
        # MCO refuses only a non-empty foreign version: an empty value passes like an absent one.
        version = mc.annotations.get(GENERATED_BY_CONTROLLER_VERSION_ANNOTATION)
        if version and version != CONTROLLER_VERSION:
            raise RenderError(f"ignoring MC {mc.name} generated by older version {version} "
                              f"(my version: {CONTROLLER_VERSION})", mc.name)
    # Each config's raw JSON once, for validation and merge alike (json.dumps of every config).
    raws: dict[int, bytes | None] = {}
    for mc in by_name + overlays:
        raws[id(mc)] = raw = mcoparse.raw_config(mc.spec.config)
        try:
            validate_machine_config(mc.spec, raw)
        except RenderError as e:
            e.machine_config = mc.name
            raise
    spec = merge_machine_configs(by_name, controller_config, pool, raws, overlays)
    text = spec_yaml(spec)
    name = hashed_name(pool.name, text)
    annotations = {
        GENERATED_BY_CONTROLLER_VERSION_ANNOTATION: CONTROLLER_VERSION,
        RELEASE_IMAGE_VERSION_ANNOTATION:
            controller_config.annotations.get(RELEASE_IMAGE_VERSION_ANNOTATION, ""),
    }
    if spec["osImageURL"] != controller_config.spec.base_os_container_image:
        annotations[OS_IMAGE_URL_OVERRIDDEN_ANNOTATION] = "true"
    if overlays:
        annotations[OVERLAYS_ANNOTATION] = ",".join(mc.name for mc in overlays)
    owner = {"apiVersion": API_VERSION, "kind": "MachineConfigPool", "name": pool.name,
             "uid": pool.metadata.uid, "controller": True, "blockOwnerDeletion": True}
    config = RenderedConfig({
        "apiVersion": API_VERSION,
        "kind": "MachineConfig",
        "metadata": {"name": name, "annotations": dict(sorted(annotations.items())),
                     "ownerReferences": [owner]},
        "spec": spec,
    })
    check_size(config)
    return PoolRender(pool.name, config, text, [mc.name for mc in by_name + overlays])


def check_size(rendered: RenderedConfig) -> None:
    """The size guard: a rendered MachineConfig must fit in one etcd request."""
    size = len(json.dumps(rendered.object, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8"))
    if size > MAX_MACHINE_CONFIG_SIZE:
        raise RenderError(f"rendered MachineConfig {rendered.name} is too large ({size} bytes, "
                          f"maximum is {MAX_MACHINE_CONFIG_SIZE} bytes)")
    if size > MAX_MACHINE_CONFIG_SIZE * 0.8:
        log.warning("rendered MachineConfig %s is %d bytes, over 80%% of the %d byte limit",
                    rendered.name, size, MAX_MACHINE_CONFIG_SIZE)


def render_pool(pool: MachineConfigPool, configs: Sequence[MachineConfig],
                controller_config: ControllerConfig) -> PoolRender:
    """Select the pool's MachineConfigs among `configs` and render them."""
    return generate_rendered_machine_config(pool, select_machine_configs(pool, configs),
                                            controller_config)
