"""Properties of the rendered name: it follows the merged spec exactly, and input order is moot."""
from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from machineconfig.api import ControllerConfig, MachineConfig, MachineConfigPool
from machineconfig.constants import ROLE_LABEL
from mcc.render import hashed_name, render_pool, spec_yaml

# Printable text without the characters yaml.v2's reader refuses (those fail the render).
TEXT = st.text(st.characters(blacklist_categories=("Cs",),
                             blacklist_characters="\x7f\ufffe\uffff"
                             + "".join(map(chr, range(0x80, 0xA0)))), max_size=40)
PATHS = st.from_regex(r"/etc/[a-z]{1,8}(/[a-z0-9.]{1,8}){0,2}", fullmatch=True)


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    files = draw(st.lists(st.fixed_dictionaries({
        "overwrite": st.booleans(), "path": PATHS,
        "contents": st.fixed_dictionaries({"source": TEXT.map(lambda t: "data:," + t)}),
        "mode": st.integers(0, 0o777)}), max_size=4, unique_by=lambda f: f["path"]))
    config: dict[str, Any] = {"ignition": {"version": "3.5.0"}}
    if files:
        config["storage"] = {"files": files}
    return {"osImageURL": draw(TEXT), "baseOSExtensionsContainerImage": draw(TEXT),
            "config": config, "kernelArguments": draw(st.lists(TEXT, max_size=4)),
            "extensions": draw(st.lists(TEXT, max_size=3)), "fips": draw(st.booleans()),
            "kernelType": draw(st.sampled_from(["default", "realtime", "64k-pages"]))}


def name_of(spec: dict[str, Any]) -> str:
    return hashed_name("worker", spec_yaml(spec))


def mutations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """One changed copy per field of the spec (and per file field)."""
    out = []
    for key in ("osImageURL", "baseOSExtensionsContainerImage"):
        changed = copy.deepcopy(spec)
        changed[key] += "x"
        out.append(changed)
    for key in ("kernelArguments", "extensions"):
        changed = copy.deepcopy(spec)
        changed[key].append("x")
        out.append(changed)
    changed = copy.deepcopy(spec)
    changed["fips"] = not spec["fips"]
    out.append(changed)
    changed = copy.deepcopy(spec)
    changed["kernelType"] = "realtime" if spec["kernelType"] != "realtime" else "default"
    out.append(changed)
    for i in range(len(spec["config"].get("storage", {}).get("files", []))):
        for field, change in (("overwrite", lambda v: not v), ("path", lambda v: v + "x"),
                              ("mode", lambda v: v ^ 1)):
            changed = copy.deepcopy(spec)
            file = changed["config"]["storage"]["files"][i]
            file[field] = change(file[field])
            out.append(changed)
        changed = copy.deepcopy(spec)
        changed["config"]["storage"]["files"][i]["contents"]["source"] += "x"
        out.append(changed)
    return out


@settings(max_examples=60, deadline=None)
@given(specs())
def test_name_changes_with_every_field_and_only_then(spec: dict[str, Any]) -> None:
    name = name_of(spec)
    # same content, keys in another order: same name
    reordered = {k: copy.deepcopy(spec[k]) for k in reversed(list(spec))}
    assert name_of(reordered) == name
    for changed in mutations(spec):
        assert name_of(changed) != name


@st.composite
def machine_configs(draw: st.DrawFn) -> list[MachineConfig]:
    names = draw(st.lists(st.from_regex(r"[0-9]{2}-[a-z]{1,6}", fullmatch=True), min_size=1,
                          max_size=6, unique=True))
    out = []
    for name in names:
        role = draw(st.sampled_from(["worker", "infra"]))
        files = [{"path": p, "contents": {"source": "data:," + name}, "mode": draw(
            st.integers(0, 0o777))} for p in draw(st.lists(st.sampled_from(
                ["/etc/a", "/etc/b", "/etc/c"]), max_size=2, unique=True))]
        spec: dict[str, Any] = {
            "kernelArguments": draw(st.lists(st.sampled_from(["a=1", "b", "c=2"]), max_size=2)),
            "kernelType": draw(st.sampled_from(["", "realtime", "64k-pages"])),
            "config": {"ignition": {"version": draw(st.sampled_from(["3.2.0", "3.5.0"]))},
                       "storage": {"files": files}},
        }
        out.append(MachineConfig.model_validate({
            "kind": "MachineConfig", "metadata": {"name": name, "labels": {ROLE_LABEL: role}},
            "spec": spec}))
    return out


POOL = MachineConfigPool.model_validate({
    "kind": "MachineConfigPool", "metadata": {"name": "infra"},
    "spec": {"machineConfigSelector": {"matchExpressions": [
        {"key": ROLE_LABEL, "operator": "In", "values": ["worker", "infra"]}]}}})
CCONFIG = ControllerConfig.model_validate({"spec": {"baseOSContainerImage": "quay.io/os:1"}})


@settings(max_examples=40, deadline=None)
@given(machine_configs(), st.randoms(use_true_random=False))
def test_render_does_not_depend_on_input_order(configs: list[MachineConfig],
                                               rnd: Any) -> None:
    shuffled = list(configs)
    rnd.shuffle(shuffled)
    first = render_pool(POOL, configs, CCONFIG)
    second = render_pool(POOL, shuffled, CCONFIG)
    assert first.name == second.name
    assert first.spec == second.spec
