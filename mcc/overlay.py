"""Per-node overlays (ours, not MCO's): which MachineConfigs are overlays and which nodes they
select. An overlay is never part of a pool's render; it is merged after the pool's configs into
the rendered config of each node it selects (mcc.render, mcc.render_controller).

A MachineConfig is an overlay when it carries the label `machineconfiguration.openshift.io/node`
(the value is one node's name) or the annotation `machine-config.io/node-selector` (a label
selector over node labels, in YAML or JSON). Both given: the node must satisfy both.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import yaml

from machineconfig import labels
from machineconfig.api import MachineConfig, MachineConfigPool
from machineconfig.constants import (
    OVERLAY_NODE_LABEL, OVERLAY_NODE_SELECTOR_ANNOTATION, ROLE_LABEL,
)
from machineconfig.errors import InputError, MachineConfigError
from machineconfig.store.base import NodeRecord
from machineconfig.yamlload import safe_load

log = logging.getLogger(__name__)

MAX_SELECTOR_BYTES = 16_384


class OverlayError(MachineConfigError):
    """An overlay whose node selector cannot be read; `machine_config` names it."""

    def __init__(self, message: str, machine_config: str) -> None:
        super().__init__(message)
        self.machine_config = machine_config


def is_overlay(mc: MachineConfig) -> bool:
    return OVERLAY_NODE_LABEL in (mc.labels or {}) or \
        OVERLAY_NODE_SELECTOR_ANNOTATION in mc.annotations


def node_selector(mc: MachineConfig) -> labels.Selector | None:
    """The overlay's selector over node labels, compiled (None without the annotation)."""
    text = mc.annotations.get(OVERLAY_NODE_SELECTOR_ANNOTATION)
    if text is None:
        return None
    where = f"MachineConfig {mc.name}: annotation {OVERLAY_NODE_SELECTOR_ANNOTATION}"
    if len(text) > MAX_SELECTOR_BYTES:
        raise OverlayError(f"{where}: over {MAX_SELECTOR_BYTES} bytes", mc.name)
    try:
        raw = safe_load(text, "")
    except (yaml.YAMLError, InputError) as e:
        raise OverlayError(f"{where}: not YAML: {' '.join(str(e).split())}", mc.name) from e
    if not isinstance(raw, Mapping):
        raise OverlayError(f"{where}: must be a label selector (matchLabels and/or "
                           "matchExpressions)", mc.name)
    try:
        selector = labels.read(raw)
        if labels.is_empty(selector):
            # an empty selector would select every node: a pool does that, not an overlay
            raise OverlayError(f"{where}: selects every node; a non-empty selector is required",
                               mc.name)
        return labels.compile(selector)  # MCO's selector checks (In with no values, ...)
    except labels.SelectorError as e:
        raise OverlayError(f"{where}: {e}", mc.name) from e


def check(overlays: Iterable[MachineConfig]) -> list[OverlayError]:
    """Every overlay whose selector cannot be read."""
    errors = []
    for mc in overlays:
        try:
            node_selector(mc)
        except OverlayError as e:
            errors.append(e)
    return errors


def applies_to_pool(mc: MachineConfig, pool: MachineConfigPool) -> bool:
    """An overlay with a role label applies only in pools that select that label (a
    `role: master` overlay does nothing on a worker); one without applies in any pool."""
    if ROLE_LABEL not in (mc.labels or {}):
        return True
    selector = pool.spec.machine_config_selector
    try:
        return selector is not None and not labels.is_empty(selector) and \
            labels.matches(selector, mc.labels)
    except labels.SelectorError:
        return False


def selects(mc: MachineConfig, node: NodeRecord) -> bool:
    """Whether the overlay selects `node` (its selector must be readable: see `check`)."""
    name = (mc.labels or {}).get(OVERLAY_NODE_LABEL)
    if name is not None and name != node.name:
        return False
    selector = node_selector(mc)
    return selector is None or selector.matches(node.labels)


def overlays_for(node: NodeRecord, pool: MachineConfigPool,
                 overlays: Sequence[MachineConfig]) -> list[MachineConfig]:
    """The overlays merged into `node`'s config in `pool`, by name (their merge order)."""
    return sorted((mc for mc in overlays if applies_to_pool(mc, pool) and selects(mc, node)),
                  key=lambda mc: mc.name)


class OverlayIndex:
    """`overlays_for` over many nodes: overlays by the node they name, selectors parsed once,
    so a pass over N nodes with one overlay each is linear, not N x N. The selectors must be
    readable (see `check`)."""

    def __init__(self, overlays: Iterable[MachineConfig]) -> None:
        self.by_node: dict[str, list[MachineConfig]] = {}
        self.by_labels: list[tuple[MachineConfig, labels.Selector]] = []
        for mc in overlays:
            name = (mc.labels or {}).get(OVERLAY_NODE_LABEL)
            selector = node_selector(mc)
            if name is not None:
                self.by_node.setdefault(name, []).append(mc)  # the selector is checked below
            elif selector is not None:
                self.by_labels.append((mc, selector))
        self._in_pool: dict[tuple[int, str], bool] = {}

    def _applies(self, mc: MachineConfig, pool: MachineConfigPool) -> bool:
        key = (id(mc), pool.name)
        if key not in self._in_pool:
            self._in_pool[key] = applies_to_pool(mc, pool)
        return self._in_pool[key]

    def overlays_for(self, node: NodeRecord, pool: MachineConfigPool) -> list[MachineConfig]:
        found = [mc for mc in self.by_node.get(node.name, ())
                 if self._applies(mc, pool) and selects(mc, node)]
        found += [mc for mc, selector in self.by_labels
                  if selector.matches(node.labels) and self._applies(mc, pool)]
        return sorted(found, key=lambda mc: mc.name)
