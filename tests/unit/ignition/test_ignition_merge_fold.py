"""MergeFold: folding many configs in linear time gives exactly the pairwise merges' result."""
from __future__ import annotations

import copy
import functools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from machineconfig.ignition.merge import MergeFold, merge
from tests.unit.ignition.test_ignition_merge_translate_properties import SETTINGS, config_strategy

Json = dict[str, Any]
V = "3.5.0"


def pairwise(configs: list[Json]) -> Json:
    return functools.reduce(lambda acc, child: merge(acc, child, copy_result=False), configs)


def fold(configs: list[Json]) -> MergeFold:
    folder = MergeFold(configs[0])
    for child in configs[1:]:
        folder.add(child)
    return folder


def _items(config: Json) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for section, lists in (("storage", ("directories", "disks", "files", "filesystems", "links", "luks",
                                        "raid")),
                           ("systemd", ("units",)), ("passwd", ("groups", "users")),
                           ("kernelArguments", ("shouldExist", "shouldNotExist"))):
        for name in lists:
            for item in config.get(section, {}).get(name, []):
                out.append(((section, name), item))
    return out


@SETTINGS
@given(st.lists(config_strategy(5), min_size=1, max_size=5))
def test_fold_equals_pairwise_merges(configs: list[Json]) -> None:
    before = copy.deepcopy(configs)
    assert fold(configs).result() == pairwise(configs)
    assert configs == before  # inputs untouched


@SETTINGS
@given(st.lists(st.sampled_from([4, 5]).flatmap(config_strategy), min_size=2, max_size=4))
def test_fold_equals_pairwise_across_versions(configs: list[Json]) -> None:
    assert fold(configs).result() == pairwise(configs)


@SETTINGS
@given(st.lists(config_strategy(5), min_size=2, max_size=5))
def test_item_hook_reports_every_changed_item(configs: list[Json]) -> None:
    # Items not reported by a step are the very objects the previous result held.
    folder = MergeFold(configs[0])
    previous = configs[0]
    for step, child in enumerate(configs[1:]):
        reported: list[int] = []
        folder.add(child, lambda path, item: reported.append(id(item)))
        current = folder.result()
        assert current == pairwise(configs[:step + 2])
        old_ids = {id(item) for _path, item in _items(previous)}
        for _path, item in _items(current):
            assert id(item) in reported or id(item) in old_ids
        previous = current


def _bench_like(i: int) -> Json:
    files = [{"path": f"/etc/shared-{(i + j) % 5}" if j % 2 else f"/etc/mc{i}/f{j}",
              "contents": {"source": f"data:,{i}-{j}"}} for j in range(4)]
    return {"ignition": {"version": V}, "storage": {"files": files, "links": [{"path": f"/l{i % 3}",
                                                                             "target": "/t"}]},
            "systemd": {"units": [{"name": f"u{i % 3}.service", "enabled": bool(i % 2),
                                   "dropins": [{"name": f"{i}.conf", "contents": "x"}]}]},
            "kernelArguments": {"shouldExist": [f"a={i % 4}"], "shouldNotExist": [f"a={(i + 1) % 4}"]}}


def test_fold_keeps_its_fast_path_for_valid_configs() -> None:
    configs = [_bench_like(i) for i in range(40)]
    folder = fold(configs)
    assert folder._root is not None  # never fell back to pairwise merging
    assert folder.result() == pairwise(configs)


def test_sibling_list_displacement_and_header_deletion() -> None:
    base = {"ignition": {"version": V, "config": {"replace": {"source": "http://a", "httpHeaders": [
        {"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}}},
        "storage": {"files": [{"path": "/a"}, {"path": "/b"}], "links": [{"path": "/c", "target": "/t"}]}}
    children = [
        {"ignition": {"version": V, "config": {"replace": {"httpHeaders": [{"name": "A"},
                                                                           {"name": "C", "value": "3"}]}}},
         "storage": {"links": [{"path": "/a", "target": "/u"}], "directories": [{"path": "/c"}]}},
        {"ignition": {"version": V}, "storage": {"files": [{"path": "/c", "mode": 420}, {"path": "/b"}]}},
    ]
    assert fold([base, *children]).result() == pairwise([base, *children])


def test_duplicate_keys_fall_back_to_pairwise() -> None:
    base = {"ignition": {"version": V}, "storage": {"files": [{"path": "/a", "mode": 1}]}}
    dup = {"ignition": {"version": V}, "storage": {"files": [{"path": "/b", "mode": 2}, {"path": "/b", "mode": 3}]}}
    after = {"ignition": {"version": V}, "storage": {"files": [{"path": "/b", "mode": 4}]}}
    folder = fold([base, dup, after])
    assert folder._root is None
    assert folder.result() == pairwise([base, dup, after])
    assert [f["mode"] for f in folder.result()["storage"]["files"]] == [1, 4, 4]


def test_no_add_returns_the_base_itself() -> None:
    base = {"ignition": {"version": V}, "extra": 1}
    assert MergeFold(base).result() is base
