"""Ignition's config merge (child over parent, upstream MergeStructTranscribe) on canonical 3.x dicts.

Works on the latest internal shape (3.3+; callers translate first). Not associative, as upstream is not.
"""
from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

from machineconfig.ignition.schema import (
    IGNORE_DUPS, JSON, LATEST_MINOR, LIST, MERGED_KEYS, MINOR_OF, NULLABLE, OBJ, PTR, SCALARS, item_key,
    shaped_fields,
)

__all__ = ["MergeFold", "merge"]


def merge(parent: JSON, child: JSON, *, copy_result: bool = True) -> JSON:
    """Merge `child` over `parent`; both canonical dicts of the same 3.x version. Inputs are not modified.

    With copy_result=False the result shares sub-objects with the inputs (cheaper when merging many
    configs into a result that is only read); callers must then not mutate either side.
    """
    minor = MINOR_OF.get(str(child.get("ignition", {}).get("version", "")), LATEST_MINOR)
    result = _merge(parent, child, "Config", minor)
    return copy.deepcopy(result) if copy_result else result


def _merge(parent: JSON, child: JSON, struct: str, minor: int) -> JSON:
    handles = MERGED_KEYS.get(struct, {})
    ignore = IGNORE_DUPS.get(struct, frozenset())
    # Every keyed child item by (handle, key); lists sharing a handle share a key space. Later lists and
    # later items overwrite earlier ones, as upstream's map does.
    child_items: dict[tuple[str, str], tuple[str, Any]] = {}
    for f, kind, ref in shaped_fields(struct, minor):
        if kind in (LIST, "slist") and f.name not in ignore:
            for item in child.get(f.name, []):
                child_items[(handles.get(f.name, f.name), item_key(ref, item))] = (f.name, item)
    out: JSON = {}
    for f, kind, ref in shaped_fields(struct, minor):
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
    parent_keys: set[str] = set()  # only this list's parent keys count (see below)
    for item in parent:
        key = item_key(ref, item)
        parent_keys.add(key)
        hit = child_items.get((handle, key))
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
    # only this list's parent keys count: an entry displaced from a sibling list is re-added here
    result.extend(item for item in child if item_key(ref, item) not in parent_keys)
    return result


ItemHook = Callable[[tuple[str, ...], Any], None]


class MergeFold:
    """`merge(merge(merge(base, c1), c2), ...)` (copy_result=False) in time linear in the inputs.

    Repeated pairwise merging rebuilds every list of the accumulated config at each step, which is
    quadratic in the number of configs. The fold keeps the struct skeleton above the lists (Config,
    Storage, Systemd, ...) as mutable nodes, and each keyed list as an insertion-ordered map from
    item key to item: replacing a key keeps its position, new keys go to the end, exactly the
    order upstream's merge produces. Items themselves (files, units, ...) are merged pairwise.

    That representation needs unique keys: a config with the same key twice in one key space
    (which Ignition validation refuses, but merge accepts) or at a different spec version than the
    fold switches it to plain pairwise merging for the remaining steps. The result shares objects
    with the inputs, as with copy_result=False; callers must not mutate either side.
    """

    def __init__(self, base: JSON) -> None:
        self._base = base
        self._minor = _minor_of(base)
        self._root: _FoldNode | None = None
        self._plain: JSON | None = None  # the pairwise result once the fold gave up
        self._steps = 0
        if _keys_unique(base, "Config", self._minor):
            self._root = _FoldNode(base, "Config", self._minor)
        else:
            self._plain = base

    def add(self, child: JSON, on_item: ItemHook | None = None) -> None:
        """Merge `child` over the accumulated config.

        `on_item(list_path, item)` is called for every item of a top-level keyed list (below
        Config's structs, e.g. ("storage", "files")) that this step may have changed: the merged
        and the new ones; after the first step and after any plain pairwise step, every item.
        """
        self._steps += 1
        minor = _minor_of(child)
        if self._root is not None and (minor != self._minor
                                       or not _keys_unique(child, "Config", minor)):
            self._plain, self._root = self._root.result(), None
        if self._root is None:
            assert self._plain is not None
            self._plain = _merge(self._plain, child, "Config", minor)
            if on_item is not None:
                _each_item(self._plain, "Config", minor, (), on_item)
            return
        self._root.merge(child, (), on_item if self._steps > 1 else None)
        if self._steps == 1 and on_item is not None:
            self._root.each_item((), on_item)

    def result(self) -> JSON:
        """The merged config (the base itself when nothing was added)."""
        if self._steps == 0:
            return self._base
        if self._root is None:
            assert self._plain is not None
            return self._plain
        return self._root.result()


def _minor_of(config: JSON) -> int:
    return MINOR_OF.get(str(config.get("ignition", {}).get("version", "")), LATEST_MINOR)


@functools.cache
def _keyed_lists(struct: str, minor: int) -> tuple[tuple[str, str, str, str], ...]:
    """(name, kind, ref, key space) of the lists merged by key (not the concatenated ones)."""
    handles = MERGED_KEYS.get(struct, {})
    ignore = IGNORE_DUPS.get(struct, frozenset())
    return tuple((f.name, kind, ref, handles.get(f.name, f.name))
                 for f, kind, ref in shaped_fields(struct, minor)
                 if kind in (LIST, "slist") and f.name not in ignore)


def _keys_unique(config: JSON, struct: str, minor: int) -> bool:
    """No key twice in one key space of a keyed list, in the skeleton the fold keeps as nodes."""
    seen: set[tuple[str, str]] = set()
    count = 0
    for name, _kind, ref, handle in _keyed_lists(struct, minor):
        for item in config.get(name, []):
            seen.add((handle, item_key(ref, item)))
            count += 1
    if len(seen) != count:
        return False
    # an absent or empty struct has no keys: only present ones can repeat one
    return all(_keys_unique(sub, ref, minor) for f, kind, ref in shaped_fields(struct, minor)
               if kind == OBJ and (sub := config.get(f.name, {})) != {})


def _each_item(config: JSON, struct: str, minor: int, path: tuple[str, ...], hook: ItemHook) -> None:
    for f, kind, ref in shaped_fields(struct, minor):
        if kind == OBJ:
            _each_item(config.get(f.name, {}), ref, minor, path + (f.name,), hook)
    for name, _kind, _ref, _handle in _keyed_lists(struct, minor):
        for item in config.get(name, []):
            hook(path + (name,), item)


class _FoldNode:
    """One struct of the skeleton: its scalars, sub-structs, keyed lists (key -> item) and
    concatenated lists, each updated in place by `merge` as `_merge` would rebuild it."""

    def __init__(self, config: JSON, struct: str, minor: int) -> None:
        self.struct, self.minor = struct, minor
        self.fields = shaped_fields(struct, minor)
        self.keyed = _keyed_lists(struct, minor)
        self.ignore = IGNORE_DUPS.get(struct, frozenset())
        self.values: JSON = {}
        self.nodes: dict[str, _FoldNode] = {}
        self.lists: dict[str, dict[str, Any]] = {}
        self.joined: dict[str, list[Any]] = {}
        # True after merging an empty child, until the next non-empty one: merging {} again then
        # changes nothing (it only drops plain values, which are gone already).
        self.emptied = False
        for f, kind, ref in self.fields:
            name = f.name
            if kind in SCALARS or kind == PTR:
                if name in config:
                    self.values[name] = config[name]
            elif kind == OBJ:
                self.nodes[name] = _FoldNode(config.get(name, {}), ref, minor)
            elif name in self.ignore:
                self.joined[name] = list(config.get(name, []))
        for name, _kind, ref, _handle in self.keyed:
            self.lists[name] = {item_key(ref, item): item for item in config.get(name, [])}

    def merge(self, child: JSON, path: tuple[str, ...], hook: ItemHook | None) -> None:
        if not child:
            if self.emptied:
                return
            self.emptied = True
        else:
            self.emptied = False
        for f, kind, ref in self.fields:
            name = f.name
            if kind in SCALARS or kind == PTR:
                if name in child:
                    self.values[name] = child[name]
                elif not (kind in NULLABLE or kind == PTR):
                    self.values.pop(name, None)  # a plain value comes from the child or not at all
            elif kind == OBJ:
                self.nodes[name].merge(child.get(name, {}), path + (name,), hook)
            elif name in self.ignore:
                self.joined[name].extend(child.get(name, []))
        if not self.keyed:
            return
        # Each child key (unique in its key space) against every list sharing that space: the
        # entry in the child's own list is merged or replaced in place, or appended; entries in
        # sibling lists are dropped (a child link displaces a parent file).
        for name, kind, ref, handle in self.keyed:
            items = child.get(name)
            if not items:
                continue
            siblings = [(other, self.lists[other]) for other, _k, _r, h in self.keyed
                        if h == handle and other != name]
            own = self.lists[name]
            for item in items:
                key = item_key(ref, item)
                for _other, entries in siblings:
                    entries.pop(key, None)
                if key in own and kind == LIST:
                    if name == "httpHeaders" and "value" not in item:
                        del own[key]  # a child header without a value deletes the parent's
                        continue
                    item = _merge(own[key], item, ref, self.minor)
                own[key] = item  # in place when the key is there, else appended
                if hook is not None:
                    hook(path + (name,), item)

    def each_item(self, path: tuple[str, ...], hook: ItemHook) -> None:
        for name, node in self.nodes.items():
            node.each_item(path + (name,), hook)
        for name, entries in self.lists.items():
            for item in entries.values():
                hook(path + (name,), item)

    def result(self) -> JSON:
        out: JSON = {}
        for f, kind, _ref in self.fields:
            name = f.name
            if kind in SCALARS or kind == PTR:
                if name in self.values:
                    out[name] = self.values[name]
            elif kind == OBJ:
                sub = self.nodes[name].result()
                if sub:
                    out[name] = sub
            elif name in self.ignore:
                if self.joined[name]:
                    out[name] = list(self.joined[name])
            elif self.lists[name]:
                out[name] = list(self.lists[name].values())
        return out
