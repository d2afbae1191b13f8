"""MCO's render controller over a store: on every input change, regenerate the template and
generated MachineConfigs (mcc.bootstrap), render every pool (mcc.render) and publish the result.

A pool that fails keeps its last good rendered config and gets RenderDegraded with MCO's text.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machineconfig import labels
from machineconfig.api import load_documents, object_name, pool_configuration, pool_target
from machineconfig.constants import (
    API_VERSION, CONTROLLER_VERSION, GENERATED_BY_CONTROLLER_VERSION_ANNOTATION,
    NODE_CONFIG_ANNOTATION, OVERLAY_NODE_LABEL, OVERLAY_NODE_SELECTOR_ANNOTATION,
    OVERLAYS_ANNOTATION, RELEASE_IMAGE_VERSION_ANNOTATION,
)
from machineconfig.clock import now_rfc3339
from machineconfig.errors import MachineConfigError, one_line
from machineconfig.rendered_config import RenderedConfig
from machineconfig.store.base import (
    CLUSTER_CONFIG_KINDS, CONTAINER_RUNTIME_CONFIG, CONTROLLER_CONFIG, KUBELET_CONFIG,
    MACHINE_CONFIG, MACHINE_CONFIG_POOL, MACHINE_CONFIGURATION, SECRET, USER_TEMPLATE,
    NodeRecord, NotFoundError, Store, StoreError,
)
from machineconfig.yamlload import Document, load_text
from mcc import bootstrap, node_controller, overlay
from mcc.cluster_objects import ClusterObject
from mcc.pool_status import RENDER_DEGRADED, set_condition
from mcc.render import (
    SELECTING_ALL, PoolRender, RenderError, generate_rendered_machine_config, render_pool,
    select_machine_configs,
)
from mcc.render_reconcile import check_against_current
from mcc.template import DEFAULT_TEMPLATES_DIR, render_user_template

log = logging.getLogger(__name__)

JSON = dict[str, Any]
Recorder = Callable[[str, str, str, str, str], None]  # kind, name, reason, message, type
CurrentConfig = Callable[[str], RenderedConfig | None]  # a rendered config by name, if readable


@dataclass
class RenderResult:
    """One pass: the rendered config per pool that rendered, the error per pool that did not."""

    rendered: dict[str, PoolRender] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    generated: list[JSON] = field(default_factory=list)
    status_objects: list[JSON] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    selecting_all: list[str] = field(default_factory=list)  # pools left alone (selector {})
    # Per-node overlays (mcc.overlay): the nodes of each pool that rendered, the config of each
    # node some overlay selects, and why a node's config failed (it keeps its last good one).
    node_pools: dict[str, str] = field(default_factory=dict)  # node -> its pool
    node_rendered: dict[str, PoolRender] = field(default_factory=dict)
    node_errors: dict[str, str] = field(default_factory=dict)
    # an overlay whose selector does not parse: nobody knows which nodes it selects, so every
    # node's own config stays as it is (nodes without one follow their pool)
    overlay_error: str = ""


def _strip(obj: Mapping[str, Any]) -> JSON:
    """What of an object counts as input: not its status, not what this controller writes."""
    out = {k: v for k, v in obj.items() if k != "status"}
    if obj.get("kind") == MACHINE_CONFIG_POOL:
        spec = {k: v for k, v in (obj.get("spec") or {}).items() if k != "configuration"}
        out["spec"] = spec
    return out


def fingerprint(objects: Mapping[str, list[JSON]],
                nodes: Sequence[NodeRecord] | None = None) -> str:
    """Changes with the inputs only, so our own writes (status, spec.configuration, generated
    MachineConfigs we put back unchanged) do not trigger another render. With `nodes` (when
    overlays may exist), their names and labels count too: they decide what an overlay selects."""
    h = hashlib.sha256()
    for kind in sorted(objects):
        for obj in sorted(objects[kind], key=lambda o: str((o.get("metadata") or {}).get("name"))):
            h.update(json.dumps(_strip(obj), sort_keys=True, default=str).encode())
    if nodes is not None:
        h.update(json.dumps(sorted((n.name, sorted(n.labels.items())) for n in nodes)).encode())
    return h.hexdigest()


def may_have_overlays(objects: Mapping[str, list[JSON]]) -> bool:
    """Whether any input could be a per-node overlay (user templates are only known rendered):
    then nodes are read and rendered for; otherwise a pass never lists them for rendering."""
    if objects.get(USER_TEMPLATE):
        return True
    for mc in objects.get(MACHINE_CONFIG, []):
        meta = mc.get("metadata") or {}
        if OVERLAY_NODE_LABEL in (meta.get("labels") or {}) or \
                OVERLAY_NODE_SELECTOR_ANNOTATION in (meta.get("annotations") or {}):
            return True
    return False


def read_inputs(store: Store) -> dict[str, list[JSON]]:
    return {kind: store.list_objects(kind) for kind in (
        MACHINE_CONFIG, MACHINE_CONFIG_POOL, CONTROLLER_CONFIG, KUBELET_CONFIG,
        CONTAINER_RUNTIME_CONFIG, SECRET, USER_TEMPLATE, *CLUSTER_CONFIG_KINDS)}


def _is_generated(mc: Mapping[str, Any]) -> bool:
    return GENERATED_BY_CONTROLLER_VERSION_ANNOTATION in (
        (mc.get("metadata") or {}).get("annotations") or {})


def to_inputs(objects: Mapping[str, list[JSON]], generating: bool,
              values: Mapping[str, Any] | None = None) -> bootstrap.Inputs:
    """Adapter: bootstrap.Inputs from store objects (bootstrap reads files; each store object
    becomes a one-document "file" named store:<kind>/<name> for messages). User templates
    (`*.yaml.j2`) are rendered here with the controller's values, as `mcc render` does."""
    docs = []
    secrets = []
    cluster: dict[str, list[ClusterObject]] = {}
    for kind, items in objects.items():
        for obj in items:
            if kind == USER_TEMPLATE:
                path = str(obj.get("path", ""))
                docs += [d for d in load_text(render_user_template(Path(path), values or {}), path)
                         if not (generating and isinstance(d.data, dict) and _is_generated(d.data))]
                continue
            name = object_name(obj)
            where = f"store:{kind}/{name}"
            if kind == SECRET:
                if obj.get("type") == bootstrap.PULL_SECRET_TYPE:
                    meta = obj.get("metadata") or {}
                    secrets.append(bootstrap.PullSecret(name, str(meta.get("namespace") or ""),
                                                        obj, where))
                continue
            if kind == MACHINE_CONFIGURATION:
                continue  # no render input: mcc.controller publishes its policies
            if kind in CLUSTER_CONFIG_KINDS:
                cluster.setdefault(kind, []).append(ClusterObject(obj, where, Document(obj, where)))
                continue
            if kind == MACHINE_CONFIG and generating and _is_generated(obj):
                continue  # our own output from an earlier pass: regenerated below
            if kind == MACHINE_CONFIG_POOL:
                obj = {k: v for k, v in obj.items() if k != "status"}
            docs.append(Document(obj, where))
    inputs = bootstrap.collect(load_documents(docs))
    inputs.pull_secrets = secrets
    inputs.cluster_objects = cluster
    return inputs


def render(objects: Mapping[str, list[JSON]], templates_dir: Path = DEFAULT_TEMPLATES_DIR,
           values: Mapping[str, Any] | None = None,
           current: CurrentConfig | None = None,
           nodes: Sequence[NodeRecord] | None = None,
           node_cache: NodeRenderCache | None = None) -> RenderResult:
    """Pure: generate and render every pool; errors are per pool, in MCO's words. With
    `current`, a pool's new config must be reconcilable against the one it has now. With
    `nodes`, each node some overlay selects gets its own config (`node_rendered`)."""
    result = RenderResult()
    pool_names = sorted(object_name(p) for p in objects.get(MACHINE_CONFIG_POOL, []))
    ccs = objects.get(CONTROLLER_CONFIG, [])
    generating = bool(ccs and (ccs[0].get("spec") or {}).get("infra"))
    try:
        inputs = to_inputs(objects, generating, values)
        before = {mc.name for mc in inputs.configs}
        bootstrap.run_controllers(inputs, templates_dir, values)
    except MachineConfigError as e:
        for name in pool_names:
            result.errors[name] = f"Failed to render configuration for pool {name}: {e}"
        return result
    result.warnings = list(inputs.warnings)
    result.status_objects = list(inputs.status_objects)
    if generating:
        result.generated = [mc.to_dict() for mc in inputs.configs if mc.name not in before]
    for pool in inputs.pools:
        selector = pool.spec.machine_config_selector
        if labels.is_empty(selector):
            result.selecting_all.append(pool.name)  # MCO refuses to act: an event, nothing else
            continue
        prefix = f"Failed to render configuration for pool {pool.name}: "
        try:
            compiled = labels.compile(selector) if selector is not None else None
            if compiled is None or not any(compiled.matches(mc.labels) and not overlay.is_overlay(mc)
                                           for mc in inputs.configs):
                # The cluster loop's text (mcc.render has the bootstrap one).
                result.errors[pool.name] = (f"{prefix}no MachineConfigs found matching "
                                            f"selector {labels.describe(selector)}")
                continue
            rendered = render_pool(pool, inputs.configs, inputs.controller_config)
            now_name = pool.spec.configuration.name
            now_mc = current(now_name) if current is not None and now_name else None
            if now_mc is not None:
                by_name = {mc.name: mc for mc in inputs.configs}
                check_against_current(now_mc, rendered.config,
                                      [by_name[n].to_dict() for n in rendered.sources])
            result.rendered[pool.name] = rendered
        except (RenderError, labels.SelectorError) as e:
            result.errors[pool.name] = f"{prefix}{e}"
    if nodes is not None:
        _render_nodes(inputs, objects, nodes, result, current, node_cache)
    return result


NodeRenderCache = dict[tuple[str, ...], PoolRender]


def _render_nodes(inputs: bootstrap.Inputs, objects: Mapping[str, list[JSON]],
                  nodes: Sequence[NodeRecord], result: RenderResult,
                  current: CurrentConfig | None, cache: NodeRenderCache | None) -> None:
    """Each node of a pool that rendered, and the config of each node an overlay selects: the
    pool's configs, then its overlays (mcc.overlay), with the pool's name rules. A node whose
    config fails keeps its last good one; the error names the node (and the pool's
    RenderDegraded says so).

    `cache` (the previous pass's renders, replaced by this pass's) spares the merge for every
    node whose pool config and overlays did not change: one overlay edit among a thousand
    hosts renders one config."""
    overlays = [mc for mc in inputs.configs if overlay.is_overlay(mc)]
    seen = {id(mc): json.dumps(mc.to_dict(), sort_keys=True) for mc in overlays}
    kept: NodeRenderCache = {}
    broken = overlay.check(overlays)
    if broken:
        result.overlay_error = str(broken[0])
    index = overlay.OverlayIndex(overlays if not broken else [])
    members, _ = node_controller.assign_nodes(objects.get(MACHINE_CONFIG_POOL, []), nodes)
    by_name = {mc.name: mc for mc in inputs.configs}
    for pool in inputs.pools:
        rendered = result.rendered.get(pool.name)
        if rendered is None:
            continue  # the pool keeps its config: so do its nodes
        base = select_machine_configs(pool, inputs.configs)
        pool_key = (rendered.name, json.dumps(rendered.annotations, sort_keys=True),
                    json.dumps(rendered.owner_references, sort_keys=True))
        for node in members.get(pool.name, []):
            result.node_pools[node.name] = pool.name
            if not overlays:
                continue
            if broken:
                continue
            prefix = f"Failed to render configuration for node {node.name} in pool {pool.name}: "
            mine = index.overlays_for(node, pool)
            if not mine:
                continue
            key = (*pool_key, *(seen[id(mc)] for mc in mine))
            try:
                own = kept.get(key) or (cache or {}).get(key) or generate_rendered_machine_config(
                    pool, base, inputs.controller_config, mine)
                kept[key] = own
                now_name = node.annotations.get(NODE_CONFIG_ANNOTATION) or \
                    pool.spec.configuration.name
                # a node whose config does not change was checked when it got it
                now_mc = current(now_name) if current is not None and now_name and \
                    now_name != own.name else None
                if now_mc is not None:
                    check_against_current(now_mc, own.config,
                                          [by_name[n].to_dict() for n in own.sources])
            except RenderError as e:
                result.node_errors[node.name] = f"{prefix}{e}"
                continue
            result.node_rendered[node.name] = own
    if cache is not None:
        cache.clear()
        cache.update(kept)


def _owned(mc: Mapping[str, Any]) -> JSON:
    """What the controller sets on a generated MachineConfig: not what the store adds (uid,
    resourceVersion, creationTimestamp, managedFields ...)."""
    meta = mc.get("metadata") or {}
    return {"metadata": {k: meta.get(k) or None for k in ("name", "labels", "annotations",
                                                          "ownerReferences")},
            **{k: v for k, v in mc.items() if k not in ("metadata", "status", "apiVersion")}}


class RenderController:
    """Publishes renders to the store; remembers the inputs it last rendered."""

    def __init__(self, store: Store, templates_dir: Path = DEFAULT_TEMPLATES_DIR,
                 values: Mapping[str, Any] | None = None, now: Callable[[], str] | None = None
                 ) -> None:
        self.store = store
        self.templates_dir = templates_dir
        self.values = values
        self.now = now or now_rfc3339
        self.last_fingerprint = ""
        self._reported_damage: set[str] = set()
        self._node_cache: NodeRenderCache = {}  # per-node renders of the last pass

    def sync(self) -> RenderResult | None:
        """Render if the inputs changed since the last pass, or a pool's rendered config is
        damaged in the store; None when neither."""
        objects = read_inputs(self.store)
        nodes = self.store.list_nodes() if may_have_overlays(objects) else None
        fp = fingerprint(objects, nodes)
        if fp == self.last_fingerprint and not self._damaged(objects, nodes):
            return None
        if nodes is None:
            nodes = self.store.list_nodes()  # a node may still name an overlay config removed
        result = render(objects, self.templates_dir, self.values, self._current, nodes,
                        self._node_cache)
        self.publish(objects, result)
        self.publish_nodes(result, nodes)
        self.last_fingerprint = fp
        return result

    def _current(self, name: str) -> RenderedConfig | None:
        """A pool's current rendered config; None when it cannot be read (then, as MCO does when
        it is gone, the new config is not checked against it)."""
        try:
            return self.store.get_rendered(name)
        except StoreError:
            return None

    def _damaged(self, objects: Mapping[str, list[JSON]],
                 nodes: Sequence[NodeRecord] | None = None) -> bool:
        """True when a rendered config some pool (or some node with overlays) uses cannot be
        read back intact (the store checks content against the name); rendering again writes
        it anew."""
        damaged = False
        names = [pool_target(pool) for pool in objects.get(MACHINE_CONFIG_POOL, [])]
        own_names = {n.annotations[NODE_CONFIG_ANNOTATION] for n in nodes or []
               if NODE_CONFIG_ANNOTATION in n.annotations}
        if own_names:
            # nodes' own configs: one listing, not a read each (there may be thousands; the
            # server and the daemons check what they read against its name)
            missing = sorted(own_names - set(self.store.list_rendered()))
            for absent in missing:
                gone = f"rendered config {absent} is missing"
                if gone not in self._reported_damage:
                    self._reported_damage.add(gone)
                    log.warning("%s; rendering again", gone)
            damaged = bool(missing)
        for name in names:
            if not name:
                continue
            try:
                self.store.get_rendered(name)
            except NotFoundError:
                damaged = True
                problem = f"rendered config {name} is missing"
            except StoreError as e:
                damaged = True
                problem = " ".join(str(e).split())
            else:
                continue
            if problem not in self._reported_damage:  # once: a render that fails is retried
                self._reported_damage.add(problem)
                log.warning("%s; rendering again", problem)
        return damaged

    def _marked_own(self, name: str) -> bool:
        """Whether a pool's rendered config is stored as a node's own (an overlay that changed
        nothing, or whose content the pool's configs now give): stored again as the pool's,
        so every node of the pool may read it."""
        try:
            stored = self.store.get_rendered(name)
        except StoreError:
            return True
        return OVERLAYS_ANNOTATION in stored.annotations

    def _intact(self, name: str) -> bool:
        try:
            self.store.get_rendered(name)
        except StoreError as e:
            log.warning("%s; writing it again", " ".join(str(e).split()))
            return False
        return True

    def publish(self, objects: Mapping[str, list[JSON]], result: RenderResult) -> None:
        store = self.store
        existing = {str(mc["metadata"]["name"]): mc for mc in objects.get(MACHINE_CONFIG, [])}
        wanted = {str(mc["metadata"]["name"]) for mc in result.generated}
        for mc in result.generated:
            name = str(mc["metadata"]["name"])
            if _owned(existing.get(name) or {}) != _owned(mc):
                store.put_object(mc)
                log.info("generated MachineConfig %s stored", name)
        # Only a pass that generated anything owns the set (a failed one proves nothing).
        if result.generated:
            for name, mc in existing.items():
                if _is_generated(mc) and name not in wanted:
                    store.delete_object(MACHINE_CONFIG, name)
                    log.info("generated MachineConfig %s deleted: nothing generates it now",
                             name)
        for obj in result.status_objects:
            meta = obj.get("metadata") or {}
            store.update_status(str(obj.get("kind")), str(meta.get("name")),
                                obj.get("status") or {})
        for warning in result.warnings:
            log.warning("%s", warning)
        have = set(store.list_rendered())
        release = ""
        for cc in objects.get(CONTROLLER_CONFIG, []):
            release = ((cc.get("metadata") or {}).get("annotations") or {}).get(
                RELEASE_IMAGE_VERSION_ANNOTATION, "")
        for pool in objects.get(MACHINE_CONFIG_POOL, []):
            name = str(pool["metadata"]["name"])
            if name in result.selecting_all:
                log.warning("pool %s: %s", name, SELECTING_ALL)
                store.record_event(MACHINE_CONFIG_POOL, name, "SelectingAll", SELECTING_ALL,
                                   "Warning")
                continue
            status: JSON = copy.deepcopy(dict(pool.get("status") or {}))
            rendered = result.rendered.get(name)
            if rendered is not None:
                if rendered.name not in have or not self._intact(rendered.name) or \
                        self._marked_own(rendered.name):
                    store.put_rendered(rendered.config)
                    message = (f"{rendered.name} successfully generated (release version: "
                               f"{release}, controller version: {CONTROLLER_VERSION})")
                    store.record_event(MACHINE_CONFIG_POOL, name, "RenderedConfigGenerated",
                                       message, "Normal")
                    log.info("pool %s: rendered %s from %d MachineConfigs", name,
                             rendered.name, len(rendered.sources))
                source = [{"apiVersion": API_VERSION, "kind": "MachineConfig", "name": s}
                          for s in rendered.sources]
                current = pool_configuration(pool)
                if current.get("name") != rendered.name or current.get("source") != source:
                    store.set_pool_configuration(name, rendered.name, source)
                    log.info("pool %s: spec.configuration now %s", name, rendered.name)
                set_condition(status, RENDER_DEGRADED, False, "", "", self.now())
            else:
                error = result.errors.get(name, f"Failed to render configuration for pool {name}")
                log.warning("pool %s: %s (keeping %s)", name, one_line(error),
                            pool_target(pool) or "no rendered config")
                set_condition(status, RENDER_DEGRADED, True, "", error, self.now())
            node_errors = sorted(e for n, e in result.node_errors.items()
                                 if result.node_pools.get(n) == name)
            if result.overlay_error:
                node_errors.insert(0, f"Failed to render configuration for the nodes of pool "
                                      f"{name}: {result.overlay_error}")
            if rendered is not None and node_errors:
                # the pool's own config is fine and rolls out; these nodes keep theirs
                set_condition(status, RENDER_DEGRADED, True, "", "; ".join(node_errors),
                              self.now())
            if status != (pool.get("status") or {}):
                store.update_status(MACHINE_CONFIG_POOL, name, status)

    def publish_nodes(self, result: RenderResult, nodes: Sequence[NodeRecord] | None) -> None:
        """Per-node configs: stored, and named in each node's node-config annotation; the
        annotation goes from a node no overlay selects any more (it follows its pool again)."""
        store = self.store
        if result.overlay_error:
            return  # every node keeps its own config until the overlay is fixed
        have = set(store.list_rendered())
        for node in nodes or []:
            pool = result.node_pools.get(node.name)
            if pool is None or node.name in result.node_errors:
                continue  # its pool did not render, or its own config failed: keep the last good
            own = result.node_rendered.get(node.name)
            was = node.annotations.get(NODE_CONFIG_ANNOTATION)
            if own is None:
                if was is not None:
                    store.patch_node_annotations(node.name, {NODE_CONFIG_ANNOTATION: None})
                    log.info("node %s: no overlay selects it now; it follows pool %s",
                             node.name, pool)
                continue
            # read back (checked against its name) only when the node moves to it: a pass over
            # thousands of unchanged nodes must not read thousands of configs
            if own.name not in have or (was != own.name and not self._intact(own.name)):
                store.put_rendered(own.config)
                have.add(own.name)
                merged = ", ".join(self._overlays(own))
                store.record_event("Node", node.name, "RenderedConfigGenerated",
                                   f"{own.name} successfully generated for node {node.name} "
                                   f"(pool {pool}, overlays {merged})", "Normal")
                log.info("node %s: rendered %s (pool %s and overlays %s)", node.name, own.name,
                         pool, merged)
            if was != own.name:
                store.patch_node_annotations(node.name, {NODE_CONFIG_ANNOTATION: own.name})
                log.info("node %s: node-config now %s", node.name, own.name)

    @staticmethod
    def _overlays(rendered: PoolRender) -> list[str]:
        return [n for n in rendered.annotations.get(OVERLAYS_ANNOTATION, "").split(",") if n]
