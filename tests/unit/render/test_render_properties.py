"""Properties of rendering (issue 3's evidence): the rendered name changes exactly when the merged
spec changes, and neither the name nor the spec depends on the order of the inputs.

MachineConfig sets are generated with overlapping file paths and unit names, worker and custom
role labels (so the worker-first merge order matters), generated and user MCs (osImageURL rule),
spec 3.0-3.5 and 2.2 configs. A mutation changes exactly one leaf of one input (or adds one MC
carrying a single leaf); whether the merged spec changed is judged on the specs themselves.
"""
from __future__ import annotations

import base64
import copy
import gzip
import json
import os
import tempfile
import urllib.parse
from collections.abc import Iterator
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from machineconfig.api import ControllerConfig, MachineConfig, MachineConfigPool, load_paths
from machineconfig.constants import (
    CONTROLLER_VERSION, GENERATED_BY_CONTROLLER_VERSION_ANNOTATION, ROLE_LABEL,
)
from mcc.render import PoolRender, RenderError, hashed_name, render_pool, spec_yaml

JSON = dict[str, Any]
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# Printable text without the characters yaml.v2's reader refuses (those fail the render).
TEXT = st.text(st.characters(blacklist_categories=["Cs"],
                             blacklist_characters="\x7f\ufffe\uffff"
                             + "".join(map(chr, range(0x80, 0xA0)))), max_size=40)
PATHS = st.sampled_from(["/etc/a", "/etc/b", "/etc/c.conf", "/etc/d/e", "/usr/local/bin/f"])
UNIT_NAMES = st.sampled_from(["a.service", "b.service", "c.timer"])
DROPIN_NAMES = st.sampled_from(["10-a.conf", "20-b.conf"])
KARGS = st.sampled_from(["nosmt", "a=1", "b=2", "console=ttyS0", "quiet"])
# kernel-devel is left out: with a non-default kernelType it fails the whole render.
EXTENSIONS = st.sampled_from(["two-node-ha", "ipsec", "usbguard", "kerberos",
                              "sandboxed-containers", "sysstat"])
KERNEL_TYPES = st.sampled_from(["", "default", "realtime", "64k-pages"])
IMAGES = st.sampled_from(["", "quay.io/os:2", "quay.io/os@sha256:" + "a" * 64, "example.com/x"])
V3_VERSIONS = ["3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0"]
MODES = st.integers(0, 0o777)
# Unit bodies must parse as systemd units: one line of value text, no newline or backslash.
UNIT_TEXT = st.text("abcxyz 0129-_.=%$éü中", max_size=20)


@st.composite
def data_urls(draw: st.DrawFn, compressed: bool = False) -> str:
    text = draw(TEXT)
    if compressed:
        blob = gzip.compress(text.encode("utf-8"), mtime=0)
        return "data:;base64," + base64.b64encode(blob).decode("ascii")
    if draw(st.booleans()):
        return "data:," + urllib.parse.quote(text, safe="")
    return "data:text/plain;charset=utf-8;base64," + base64.b64encode(
        text.encode("utf-8")).decode("ascii")


@st.composite
def files(draw: st.DrawFn, version: str) -> list[JSON]:
    out = []
    for path in draw(st.lists(PATHS, max_size=3, unique=True)):
        entry: JSON = {"path": path}
        if version == "2.2.0":
            entry["filesystem"] = "root"
        if draw(st.booleans()):
            # compression exists from 3.1 on; a child without it resets the parent's (MCO quirk)
            gz = version not in ("2.2.0", "3.0.0") and draw(st.booleans())
            entry["contents"] = {"source": draw(data_urls(gz))}
            if gz:
                entry["contents"]["compression"] = "gzip"
        if draw(st.booleans()):
            entry["mode"] = draw(MODES)
        if version != "2.2.0" and draw(st.booleans()):
            # Ignition: overwrite must be false when there is no source
            entry["overwrite"] = "contents" in entry and draw(st.booleans())
        out.append(entry)
    return out


@st.composite
def units(draw: st.DrawFn) -> list[JSON]:
    out = []
    for name in draw(st.lists(UNIT_NAMES, max_size=2, unique=True)):
        unit: JSON = {"name": name}
        if draw(st.booleans()):
            unit["enabled"] = draw(st.booleans())
        if draw(st.booleans()):
            unit["contents"] = "[Unit]\nDescription=" + draw(UNIT_TEXT) + "\n"
        dropins = [{"name": d, "contents": "[Service]\nEnvironment=X=" + draw(UNIT_TEXT) + "\n"}
                   for d in draw(st.lists(DROPIN_NAMES, max_size=2, unique=True))]
        if dropins:
            unit["dropins"] = dropins
        out.append(unit)
    return out


@st.composite
def ignition_configs(draw: st.DrawFn) -> JSON | None:
    version = draw(st.sampled_from(V3_VERSIONS + ["2.2.0", "none"]))
    if version == "none":
        return None  # no spec.config at all
    config: JSON = {"ignition": {"version": version}}
    file_list = draw(files(version))
    if file_list:
        config["storage"] = {"files": file_list}
    unit_list = draw(units())
    if unit_list:
        config["systemd"] = {"units": unit_list}
    return config


@st.composite
def machine_config_dicts(draw: st.DrawFn, name: str) -> JSON:
    spec: JSON = {}
    config = draw(ignition_configs())
    if config is not None:
        spec["config"] = config
    for key, values in (("kernelArguments", KARGS), ("extensions", EXTENSIONS)):
        if draw(st.booleans()):
            spec[key] = draw(st.lists(values, max_size=3))
    if draw(st.booleans()):
        spec["fips"] = draw(st.booleans())
    if draw(st.booleans()):
        spec["kernelType"] = draw(KERNEL_TYPES)
    for key in ("osImageURL", "baseOSExtensionsContainerImage"):
        if draw(st.booleans()):
            spec[key] = draw(IMAGES)
    metadata: JSON = {"name": name,
                      "labels": {ROLE_LABEL: draw(st.sampled_from(["worker", "infra"]))}}
    if draw(st.integers(0, 4)) == 0:  # a controller-generated MC: its osImageURL is ignored
        metadata["annotations"] = {GENERATED_BY_CONTROLLER_VERSION_ANNOTATION: CONTROLLER_VERSION}
    return {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
            "metadata": metadata, "spec": spec}


NAMES = st.from_regex(r"[0-9]{2}-[a-z]{1,5}", fullmatch=True)


@st.composite
def machine_config_sets(draw: st.DrawFn) -> list[JSON]:
    names = draw(st.lists(NAMES, min_size=1, max_size=6, unique=True))
    return [draw(machine_config_dicts(name)) for name in names]


POOL = MachineConfigPool.model_validate({
    "kind": "MachineConfigPool", "metadata": {"name": "infra"},
    "spec": {"machineConfigSelector": {"matchExpressions": [
        {"key": ROLE_LABEL, "operator": "In", "values": ["worker", "infra"]}]}}})
CCONFIG = ControllerConfig.model_validate({
    "spec": {"baseOSContainerImage": "quay.io/os:1",
             "baseOSExtensionsContainerImage": "quay.io/ext:1"}})


def render(mcs: list[JSON]) -> PoolRender:
    return render_pool(POOL, [MachineConfig.model_validate(mc) for mc in mcs], CCONFIG)


def canonical(spec: JSON) -> str:
    """Spec equality that tells `true` from `1` (Python's == does not)."""
    return json.dumps(spec, sort_keys=True, ensure_ascii=False)


# --- input order ------------------------------------------------------------------------------

@SETTINGS
@given(machine_config_sets(), st.randoms(use_true_random=False))
def test_render_does_not_depend_on_input_order(mcs: list[JSON], rnd: Any) -> None:
    shuffled = list(mcs)
    rnd.shuffle(shuffled)
    first, second = render(mcs), render(shuffled)
    assert first.name == second.name
    assert canonical(first.spec) == canonical(second.spec)
    assert first.spec_yaml == second.spec_yaml


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(machine_config_sets(), st.randoms(use_true_random=False))
def test_render_does_not_depend_on_file_order_or_layout(mcs: list[JSON], rnd: Any) -> None:
    """The same MCs read from files in another order (and grouped differently) render the same."""
    def load(layout: list[list[JSON]]) -> list[MachineConfig]:
        with tempfile.TemporaryDirectory() as tmp:
            for i, group in enumerate(layout):
                with open(os.path.join(tmp, f"{i:02d}.yaml"), "w", encoding="utf-8") as f:
                    yaml.safe_dump_all(group, f)
            return [loaded.obj for loaded in load_paths([tmp])
                    if isinstance(loaded.obj, MachineConfig)]

    one_per_file = [[mc] for mc in mcs]
    shuffled = list(mcs)
    rnd.shuffle(shuffled)
    cut = rnd.randint(0, len(shuffled))
    regrouped = [group for group in (shuffled[:cut], shuffled[cut:]) if group]
    first = render_pool(POOL, load(one_per_file), CCONFIG)
    second = render_pool(POOL, load(regrouped), CCONFIG)
    assert (first.name, first.spec_yaml) == (second.name, second.spec_yaml)


# --- one-leaf mutations -----------------------------------------------------------------------

def leaves(obj: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Every scalar of an MC's spec with its path (list items of strings included)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, path + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from leaves(value, path + (i,))
    else:
        yield path, obj


def replacement(path: tuple[str | int, ...], old: Any) -> st.SearchStrategy[Any] | None:
    """Values a leaf may take while the MC stays valid (None: leave this leaf alone)."""
    field = next((p for p in reversed(path) if isinstance(p, str)), "")
    if field in ("version", "name", "filesystem", "compression"):
        return None  # would change the config's shape or make it invalid, not one leaf
    if isinstance(old, bool):
        return st.just(not old)
    by_field: dict[str, st.SearchStrategy[Any]] = {
        "source": data_urls(), "mode": MODES, "path": PATHS, "kernelArguments": KARGS,
        "extensions": EXTENSIONS, "kernelType": KERNEL_TYPES, "osImageURL": IMAGES,
        "baseOSExtensionsContainerImage": IMAGES,
        "contents": UNIT_TEXT.map(lambda t: "[Unit]\nDescription=" + t + "\n"),
    }
    return by_field.get(field)


def set_leaf(obj: Any, path: tuple[str | int, ...], value: Any) -> None:
    for step in path[:-1]:
        obj = obj[step]
    obj[path[-1]] = value


@st.composite
def single_leaf_machine_configs(draw: st.DrawFn, name: str) -> JSON:
    """An extra MC that brings exactly one leaf (or nothing but an empty config)."""
    version = draw(st.sampled_from(V3_VERSIONS))
    choice = draw(st.sampled_from(["file", "mode", "unit", "karg", "extension", "fips",
                                   "kernelType", "osImageURL", "empty"]))
    spec: JSON = {}
    if choice == "file":
        spec["config"] = {"ignition": {"version": version}, "storage": {"files": [
            {"path": draw(PATHS), "contents": {"source": draw(data_urls())}}]}}
    elif choice == "mode":
        spec["config"] = {"ignition": {"version": version}, "storage": {"files": [
            {"path": draw(PATHS), "mode": draw(MODES)}]}}
    elif choice == "unit":
        spec["config"] = {"ignition": {"version": version}, "systemd": {"units": [
            {"name": draw(UNIT_NAMES), "enabled": draw(st.booleans())}]}}
    elif choice == "karg":
        spec["kernelArguments"] = [draw(KARGS)]
    elif choice == "extension":
        spec["extensions"] = [draw(EXTENSIONS)]
        spec["config"] = {"ignition": {"version": version}}
    elif choice == "fips":
        spec["fips"] = draw(st.booleans())
    elif choice == "kernelType":
        spec["kernelType"] = draw(KERNEL_TYPES)
    elif choice == "osImageURL":
        spec["osImageURL"] = draw(IMAGES)
    else:
        spec["config"] = {"ignition": {"version": version}}
    return {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
            "metadata": {"name": name, "labels": {
                ROLE_LABEL: draw(st.sampled_from(["worker", "infra"]))}},
            "spec": spec}


@SETTINGS
@given(machine_config_sets(), st.data())
def test_name_changes_iff_merged_spec_changes(mcs: list[JSON], data: st.DataObject) -> None:
    before = render(mcs)
    changed = copy.deepcopy(mcs)
    candidates = [(i, path, old) for i, mc in enumerate(changed)
                  for path, old in leaves(mc["spec"]) if replacement(path, old) is not None]
    # two times in three an input changes, else one MC with a single leaf joins the set
    if candidates and data.draw(st.integers(0, 2), label="change an input") > 0:
        i, path, old = data.draw(st.sampled_from(candidates), label="leaf")
        event(f"changed {next(p for p in reversed(path) if isinstance(p, str))}")
        strategy = replacement(path, old)
        assert strategy is not None
        set_leaf(changed[i]["spec"], path, data.draw(strategy, label="new value"))
    else:
        taken = {mc["metadata"]["name"] for mc in mcs}
        name = data.draw(NAMES.filter(lambda n: n not in taken), label="extra MC")
        changed.append(data.draw(single_leaf_machine_configs(name), label="extra MC spec"))
        event("added an MC")
    try:
        after = render(changed)
    except RenderError:
        event("mutation made an input invalid")
        assume(False)  # the change made an input invalid (a duplicate path, say): not a case
        raise
    spec_changed = canonical(before.spec) != canonical(after.spec)
    event("merged spec changed" if spec_changed else "merged spec unchanged")
    assert (before.name != after.name) == spec_changed, (before.spec_yaml, after.spec_yaml)
    assert after.name == hashed_name("infra", spec_yaml(after.spec))


# --- the name as a function of the spec ---------------------------------------------------------

@st.composite
def merged_specs(draw: st.DrawFn) -> JSON:
    file_list = draw(st.lists(st.fixed_dictionaries({
        "overwrite": st.booleans(), "path": PATHS, "contents": st.fixed_dictionaries(
            {"source": data_urls()}), "mode": MODES}), max_size=4, unique_by=lambda f: f["path"]))
    config: JSON = {"ignition": {"version": "3.5.0"}}
    if file_list:
        config["storage"] = {"files": file_list}
    return {"osImageURL": draw(TEXT), "baseOSExtensionsContainerImage": draw(TEXT),
            "config": config, "kernelArguments": draw(st.lists(TEXT, max_size=4)),
            "extensions": draw(st.lists(TEXT, max_size=3)), "fips": draw(st.booleans()),
            "kernelType": draw(st.sampled_from(["default", "realtime", "64k-pages"]))}


def name_of(spec: JSON) -> str:
    return hashed_name("worker", spec_yaml(spec))


def every_field_changed(spec: JSON) -> Iterator[JSON]:
    """One changed copy per leaf of the spec."""
    for path, old in leaves(spec):
        if isinstance(old, bool):
            new: Any = not old
        elif isinstance(old, int):
            new = old ^ 1
        else:
            new = old + "x"
        changed = copy.deepcopy(spec)
        set_leaf(changed, path, new)
        yield changed
    for key in ("kernelArguments", "extensions"):
        changed = copy.deepcopy(spec)
        changed[key].append("x")
        yield changed


@SETTINGS
@given(merged_specs())
def test_name_changes_with_every_leaf_and_not_with_key_order(spec: JSON) -> None:
    name = name_of(spec)
    reordered = {k: copy.deepcopy(spec[k]) for k in reversed(list(spec))}
    assert name_of(reordered) == name
    for changed in every_field_changed(spec):
        assert name_of(changed) != name
