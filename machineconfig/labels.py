"""Kubernetes label selectors (LabelSelectorAsSelector semantics) for pools and generated configs.

A nil selector selects nothing, a selector with no requirements selects everything; `describe`
prints a selector the way Go's labels.Selector.String() does, for error messages.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from machineconfig.api import LabelSelector, pool_node_selector
from machineconfig.errors import MachineConfigError

log = logging.getLogger(__name__)


class SelectorError(MachineConfigError):
    """A selector Kubernetes would refuse (`invalid label selector: ...`)."""


def _requirements(selector: LabelSelector) -> list[tuple[str, str, list[str]]]:
    reqs: list[tuple[str, str, list[str]]] = []
    for key, value in (selector.match_labels or {}).items():
        reqs.append((key, "=", [value]))
    for expr in selector.match_expressions or []:
        values = list(expr.values or [])
        if expr.operator in ("In", "NotIn") and not values:
            raise SelectorError(f"invalid label selector: values: Invalid value: []string{{}}: "
                                f"for 'in', 'notin' operators, values set can't be empty")
        if expr.operator in ("Exists", "DoesNotExist") and values:
            raise SelectorError(f"invalid label selector: values: Invalid value: {values}: "
                                f"values set must be empty for exists and does not exist")
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}[expr.operator]
        reqs.append((expr.key, op, sorted(set(values))))
    # labels.Selector keeps requirements sorted by key (stable for equal keys)
    return sorted(reqs, key=lambda r: r[0])


def is_literally_empty(selector: LabelSelector | None) -> bool:
    """`{}`: the render controller refuses to act on a pool selecting everything this way."""
    return selector is not None and selector.match_labels is None \
        and selector.match_expressions is None


def is_empty(selector: LabelSelector | None) -> bool:
    """No requirements at all (labels.Selector.Empty()): selects everything, or nothing where
    MCO guards against that. A nil selector is not empty: it selects nothing."""
    return selector is not None and not selector.match_labels \
        and not selector.match_expressions


def matches(selector: LabelSelector | None, labels: Mapping[str, str] | None) -> bool:
    """Whether `labels` satisfy `selector` (None selects nothing)."""
    if selector is None:
        return False
    labels = labels or {}
    for key, op, values in _requirements(selector):
        present = key in labels
        if op in ("=", "in") and not (present and labels[key] in values):
            return False
        if op == "notin" and present and labels[key] in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!" and present:
            return False
    return True


def describe(selector: LabelSelector | None) -> str:
    """Go's labels.Selector.String() of LabelSelectorAsSelector(selector)."""
    if selector is None:
        return ""
    parts = []
    for key, op, values in _requirements(selector):
        if op == "=":
            parts.append(f"{key}={values[0]}")
        elif op in ("in", "notin"):
            parts.append(f"{key} {op} ({','.join(values)})")
        elif op == "exists":
            parts.append(key)
        else:
            parts.append(f"!{key}")
    return ",".join(parts)


def pool_selects(pool: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a MachineConfigPool's nodeSelector selects these node labels (a missing, empty or
    bad one selects nobody, as the controller never rolls out to such a pool)."""
    raw = pool_node_selector(pool)
    if not isinstance(raw, Mapping) or not (raw.get("matchLabels") or raw.get("matchExpressions")):
        return False
    try:
        return matches(LabelSelector.model_validate(raw), labels)
    except (ValueError, MachineConfigError):  # pydantic's ValidationError is a ValueError
        return False
