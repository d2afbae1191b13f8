"""Kubernetes label selectors (LabelSelectorAsSelector semantics): the one implementation that
pools, generated configs (KubeletConfig, ContainerRuntimeConfig), overlays, the node controller,
the status page and the server's node policy all match with.

A nil selector selects nothing, a selector with no requirements selects everything (where MCO
does not guard against that: see `compile_raw`); `Selector.describe` prints a selector the way
Go's labels.Selector.String() does, for error messages. A selector is compiled once (`compile`,
`compile_raw`) and then matched against any number of label sets. Label keys and values must be
Kubernetes label syntax (`label_key_error`, `label_value_error`: also what a node may register).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from machineconfig.api import LabelSelector, pool_node_selector
from machineconfig.errors import MachineConfigError

log = logging.getLogger(__name__)

_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
# A Kubernetes qualified name part and a DNS-1123 subdomain (the optional label key prefix).
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def label_key_error(key: str) -> str | None:
    """Why `key` is not a Kubernetes label key (None when it is one)."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "its prefix must be a DNS-1123 subdomain of at most 253 characters"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return "its name must be 1-63 characters: alphanumerics, '-', '_' or '.', " \
               "starting and ending with an alphanumeric"
    return None


def label_value_error(value: str) -> str | None:
    """Why `value` is not a Kubernetes label value (None when it is one; empty is allowed)."""
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        return "must be at most 63 characters: alphanumerics, '-', '_' or '.', " \
               "starting and ending with an alphanumeric"
    return None


class SelectorError(MachineConfigError):
    """A selector Kubernetes would refuse (`invalid label selector: ...`)."""


@dataclass(frozen=True, slots=True)
class Selector:
    """A compiled selector: (key, op, values) requirements sorted by key as labels.Selector keeps
    them (stable for equal keys); op is "=", "in", "notin", "exists" or "!"."""

    requirements: tuple[tuple[str, str, tuple[str, ...]], ...]

    @property
    def empty(self) -> bool:
        """No requirements (labels.Selector.Empty()): matches every label set."""
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether `labels` satisfy every requirement."""
        labels = labels or {}
        for key, op, values in self.requirements:
            value = labels.get(key)
            if op in ("=", "in"):
                if value is None or value not in values:
                    return False
            elif op == "notin":
                if value is not None and value in values:
                    return False
            elif op == "exists":
                if value is None:
                    return False
            elif value is not None:  # "!": DoesNotExist
                return False
        return True

    def match_all(self, all_labels: Sequence[Mapping[str, str]]) -> list[bool]:
        """`matches` over many label sets; a one-label `=` selector (the usual node-role one) in a
        single comprehension."""
        if len(self.requirements) == 1 and self.requirements[0][1] == "=":
            key, _, (wanted,) = self.requirements[0]
            return [labels.get(key) == wanted for labels in all_labels]
        return [self.matches(labels) for labels in all_labels]

    def describe(self) -> str:
        """Go's labels.Selector.String()."""
        parts = []
        for key, op, values in self.requirements:
            if op == "=":
                parts.append(f"{key}={values[0]}")
            elif op in ("in", "notin"):
                parts.append(f"{key} {op} ({','.join(values)})")
            elif op == "exists":
                parts.append(key)
            else:
                parts.append(f"!{key}")
        return ",".join(parts)


def compile(selector: LabelSelector) -> Selector:
    """LabelSelectorAsSelector: the requirements of a typed selector, or SelectorError where
    Kubernetes refuses them (a key or value that is not label syntax, In/NotIn without values,
    Exists/DoesNotExist with values)."""
    reqs: list[tuple[str, str, tuple[str, ...]]] = []
    for key, value in (selector.match_labels or {}).items():
        _check_label(key, [value])
        reqs.append((key, "=", (value,)))
    for expr in selector.match_expressions or []:
        values = list(expr.values or [])
        _check_label(expr.key, values)
        if expr.operator in ("In", "NotIn") and not values:
            raise SelectorError("invalid label selector: values: Invalid value: []string{}: "
                                "for 'in', 'notin' operators, values set can't be empty")
        if expr.operator in ("Exists", "DoesNotExist") and values:
            raise SelectorError(f"invalid label selector: values: Invalid value: {values}: "
                                "values set must be empty for exists and does not exist")
        reqs.append((expr.key, _OPERATORS[expr.operator], tuple(sorted(set(values)))))
    return Selector(tuple(sorted(reqs, key=lambda r: r[0])))


def _check_label(key: str, values: list[str]) -> None:
    why = label_key_error(key)
    if why is not None:
        raise SelectorError(f"invalid label selector: key {key[:80]!r}: {why}")
    for value in values:
        why = label_value_error(value)
        if why is not None:
            raise SelectorError(f"invalid label selector: {key}: value {value[:80]!r}: {why}")


def read(raw: Any) -> LabelSelector:
    """A selector as stored (a mapping of matchLabels/matchExpressions), typed, or SelectorError
    naming the first bad field (an unknown operator, values that are not a list of strings, ...)."""
    if not isinstance(raw, Mapping):
        raise SelectorError(f"invalid label selector: must be a mapping of matchLabels and/or "
                            f"matchExpressions, not {type(raw).__name__}")
    try:
        return LabelSelector.model_validate(dict(raw))
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise SelectorError(f"invalid label selector: {field}: {first['msg']}") from e


def compile_raw(raw: Any) -> Selector | None:
    """A stored selector the way MCO's pools and generated configs use theirs: None when it is
    nil or has no requirements (they select nothing then), else the compiled selector;
    SelectorError when it is malformed."""
    if raw is None:
        return None
    selector = compile(read(raw))
    return None if selector.empty else selector


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
    """Whether `labels` satisfy `selector` (None selects nothing); SelectorError if invalid."""
    return selector is not None and compile(selector).matches(labels)


def describe(selector: LabelSelector | None) -> str:
    """Go's labels.Selector.String() of LabelSelectorAsSelector(selector)."""
    return "" if selector is None else compile(selector).describe()


def pool_selector(pool: Mapping[str, Any]) -> Selector | None:
    """A MachineConfigPool's compiled nodeSelector, or None when it selects no node: missing,
    empty, or malformed (the controller never rolls out to such a pool, and a malformed one must
    not claim nodes)."""
    try:
        return compile_raw(pool_node_selector(pool))
    except SelectorError as e:
        log.debug("pool %s: %s", (pool.get("metadata") or {}).get("name"), e)
        return None


def pool_selects(pool: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a MachineConfigPool's nodeSelector selects these node labels."""
    selector = pool_selector(pool)
    return selector is not None and selector.matches(labels)
