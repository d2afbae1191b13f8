"""Ignition's config merge (child over parent, upstream MergeStructTranscribe) on canonical 3.x dicts.

Works on the latest internal shape (3.3+; callers translate first). Not associative, as upstream is not.
"""
from __future__ import annotations

import copy
from typing import Any

from machineconfig.ignition._tree3 import (
    HANDLES, IGNORE_DUPS, JSON, LATEST, LIST, MINORS, NULLABLE, OBJ, PTR, SCALARS, fields, item_key,
)

__all__ = ["merge"]


def merge(parent: JSON, child: JSON, *, copy_result: bool = True) -> JSON:
    """Merge `child` over `parent`; both canonical dicts of the same 3.x version. Inputs are not modified.

    With copy_result=False the result shares sub-objects with the inputs (cheaper when merging many
    configs into a result that is only read); callers must then not mutate either side.
    """
    minor = MINORS.get(str(child.get("ignition", {}).get("version", "")), LATEST)
    result = _merge(parent, child, "Config", minor)
    return copy.deepcopy(result) if copy_result else result


def _merge(parent: JSON, child: JSON, struct: str, minor: int) -> JSON:
    handles = HANDLES.get(struct, {})
    ignore = IGNORE_DUPS.get(struct, frozenset())
    # Every keyed child item by (handle, key); lists sharing a handle share a key space. Later lists and
    # later items overwrite earlier ones, as upstream's map does.
    child_items: dict[tuple[str, str], tuple[str, Any]] = {}
    for f, kind, ref in fields(struct, minor):
        if kind in (LIST, "slist") and f.name not in ignore:
            for item in child.get(f.name, []):
                child_items[(handles.get(f.name, f.name), item_key(ref, item))] = (f.name, item)
    out: JSON = {}
    for f, kind, ref in fields(struct, minor):
        name = f.name
        in_parent, in_child = name in parent, name in child
        if kind in SCALARS or kind == PTR:
            if kind in NULLABLE or kind == PTR:
                # a set child value wins even when false/""/0; unset keeps the parent's
                if in_child or in_parent:
                    out[name] = child[name] if in_child else parent[name]
            elif in_child:
                out[name] = child[name]  # plain values (keys, version): the child's, even its zero value
        elif kind == OBJ:
            sub = _merge(parent.get(name, {}), child.get(name, {}), ref, minor)
            if sub:
                out[name] = sub
        elif name in ignore:
            joined = parent.get(name, []) + child.get(name, [])
            if joined:
                out[name] = joined
        else:
            merged = _merge_list(parent.get(name, []), child.get(name, []), name, kind, ref,
                                 handles.get(name, name), child_items, minor)
            if merged:
                out[name] = merged
    return out


def _merge_list(parent: list[Any], child: list[Any], name: str, kind: str, ref: str, handle: str,
                child_items: dict[tuple[str, str], tuple[str, Any]], minor: int) -> list[Any]:
    result: list[Any] = []
    for item in parent:
        hit = child_items.get((handle, item_key(ref, item)))
        if hit is None:
            result.append(item)
            continue
        child_list, child_item = hit
        if child_list != name:
            continue  # the child has this key in a sibling list (file -> link): the parent's entry goes
        if kind == LIST:
            if name == "httpHeaders" and "value" not in child_item:
                continue  # a child header without a value deletes the parent's header
            result.append(_merge(item, child_item, ref, minor))
        else:
            result.append(child_item)
    parent_keys = {item_key(ref, item) for item in parent}
    # only this list's parent keys count: an entry displaced from a sibling list is re-added here
    result.extend(item for item in child if item_key(ref, item) not in parent_keys)
    return result
