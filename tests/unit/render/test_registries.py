"""99-<pool>-generated-registries: registries.conf, policy.json and the search-registries drop-in.

Expected results come from MCO's own test tables (tests/data/vectors/registries/*.json, copied
from pkg/controller/container-runtime-config/helpers_test.go; MCO compares decoded structures,
so do these tests), and for the exact bytes from the encoders MCO uses: BurntSushi/toml's layout
(struct field order, plain keys before tables, two spaces per table level, `prefix` and
`short-name-mode` / `additional-layer-store-auth-helper` without omitempty in containers/image
v5.35's structs) and Go's json.MarshalIndent with two spaces.
"""
from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from machineconfig.errors import InputError, MachineConfigError
from mcc import registries_conf as rc
from mcc.cli import main
from mcc.cluster_objects import ClusterObject
from mcc.registries import (
    ImageInputs, blocked_and_allowed, digest_entries, generate_registries_machine_configs,
    parse_named, tag_entries, validate_scopes,
)
from mcc.registries_policy import update_policy_json
from mcc.template import render_templates

from tests.support.templatekit import TEMPLATES, assert_valid_ignition, controller_config, file_text

VECTORS = Path(__file__).resolve().parents[2] / "data" / "vectors" / "registries"
ROOT = Path(__file__).resolve().parents[3]
BUILT_IN = "machineconfiguration.openshift.io/mco-built-in"
MCO_TEMPLATE = (b'unqualified-search-registries = ["registry.access.redhat.com", "docker.io"]\n'
                b'short-name-mode = ""\nadditional-layer-store-auth-helper = ""\n')


def vectors(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((VECTORS / name).read_text())["cases"]
    return cases


def obj(kind: str, spec: dict[str, Any], name: str = "cluster") -> ClusterObject:
    group = "operator.openshift.io/v1alpha1" if kind == "ImageContentSourcePolicy" else \
        "config.openshift.io/v1"
    return ClusterObject({"apiVersion": group, "kind": kind, "metadata": {"name": name},
                          "spec": spec}, f"{name}.yaml")


def image_inputs(case: dict[str, Any]) -> ImageInputs:
    """ImageInputs from a vector: idms/icsp/itms are lists of objects' entry lists (or specs)."""
    def objects(key: str, kind: str, field: str) -> list[ClusterObject]:
        out = []
        for i, item in enumerate(case.get(key) or []):
            spec = item if isinstance(item, dict) else {field: item}
            out.append(obj(kind, spec, f"{key}-{i}"))
        return out
    sources = {k: case[k] for k, f in (("insecure", "insecureRegistries"),
                                       ("blocked", "blockedRegistries"),
                                       ("allowed", "allowedRegistries")) if k in case}
    image = obj("Image", {"registrySources": {
        {"insecure": "insecureRegistries", "blocked": "blockedRegistries",
         "allowed": "allowedRegistries"}[k]: v for k, v in sources.items()}})
    return ImageInputs(image, objects("icsp", "ImageContentSourcePolicy", "repositoryDigestMirrors"),
                       objects("idms", "ImageDigestMirrorSet", "imageDigestMirrors"),
                       objects("itms", "ImageTagMirrorSet", "imageTagMirrors"))


def normalized(conf: dict[str, Any]) -> dict[str, Any]:
    """A decoded registries.conf in the vectors' shape (Go zero values filled in)."""
    regs = []
    for r in conf.get("registry", []):
        regs.append({"prefix": r.get("prefix", ""), "location": r.get("location", ""),
                     "insecure": r.get("insecure", False), "blocked": r.get("blocked", False),
                     "mirrors": [{"location": m.get("location", ""),
                                  "insecure": m.get("insecure", False),
                                  "pullFromMirror": m.get("pull-from-mirror", "")}
                                 for m in r.get("mirror", [])]})
    return {"unqualifiedSearchRegistries": conf.get("unqualified-search-registries"),
            "registries": regs}


@pytest.mark.parametrize("case", vectors("update-registries-config.json"), ids=lambda c: c["name"])
def test_registries_conf_as_mco_tests_expect(case: dict[str, Any]) -> None:
    inputs = image_inputs(case)
    conf = rc.decode(MCO_TEMPLATE.decode())
    rc.edit_registries_config(conf, case.get("insecure") or [], case.get("blocked") or [],
                              [e.set for e in digest_entries(inputs)],
                              [e.set for e in tag_entries(inputs)])
    out = rc.encode(conf)
    assert normalized(tomllib.loads(out.decode())) == case["want"]


def test_registries_conf_bytes_follow_the_go_encoder() -> None:
    """Layout from BurntSushi/toml's encoder: plain keys first in struct order, then each
    [[registry]] after a blank line, `prefix` always written, mirrors one level deeper."""
    conf = rc.decode(MCO_TEMPLATE.decode())
    rc.edit_registries_config(conf, ["insecure.com", "*.insecure.example.com"], ["blocked.com"],
                              [rc.MirrorSet("insecure.com/ns", ["mirror.io/ns"])],
                              [rc.MirrorSet("tags.io", ["tag-mirror.io"], "NeverContactSource")])
    assert rc.encode(conf).decode() == """\
unqualified-search-registries = ["registry.access.redhat.com", "docker.io"]
short-name-mode = ""
additional-layer-store-auth-helper = ""

[[registry]]
  prefix = ""
  location = "insecure.com/ns"
  insecure = true

  [[registry.mirror]]
    location = "mirror.io/ns"
    pull-from-mirror = "digest-only"

[[registry]]
  prefix = ""
  location = "tags.io"
  blocked = true

  [[registry.mirror]]
    location = "tag-mirror.io"
    pull-from-mirror = "tag-only"

[[registry]]
  prefix = ""
  location = "blocked.com"
  blocked = true

[[registry]]
  prefix = ""
  location = "insecure.com"
  insecure = true

[[registry]]
  prefix = "*.insecure.example.com"
  insecure = true
"""


def test_strings_are_escaped_and_odd_keys_quoted_as_the_go_encoder_does() -> None:
    conf = rc.RegistriesConf(unqualified_search_registries=['a"b\\c\x01'], aliases={"x/y": "z"})
    text = rc.encode(conf).decode()
    assert text.splitlines()[0] == 'unqualified-search-registries = ["a\\"b\\\\c\\u0001"]'
    assert text.endswith('\n[aliases]\n  "x/y" = "z"\n')
    assert tomllib.loads(text)["unqualified-search-registries"] == ['a"b\\c\x01']


def test_mirror_order_merges_every_set_consistently() -> None:
    """runtime-utils' topological merge: (B, C) and (A, B) give (A, B, C); a loop is broken at
    the smallest name; mirrors equal to the source alone are no mirror set."""
    merged = rc.merged_mirror_sets([rc.MirrorSet("s.io", ["b.io", "c.io"]),
                                    rc.MirrorSet("s.io", ["a.io", "b.io"]),
                                    rc.MirrorSet("t.io", ["t.io"])])
    assert [(m.source, m.mirrors) for m in merged] == [("s.io", ["a.io", "b.io", "c.io"])]
    loop = rc.merged_mirror_sets([rc.MirrorSet("s.io", ["b.io", "a.io"]),
                                  rc.MirrorSet("s.io", ["a.io", "b.io"])])
    assert loop[0].mirrors == ["a.io", "b.io"]


@pytest.mark.parametrize("case", vectors("validate-scopes.json"), ids=lambda c: str(c["error"]))
def test_scope_and_mirror_validation_messages_are_mcos(case: dict[str, Any]) -> None:
    inputs = image_inputs(case)
    lists = [("insecure", "insecureRegistries", case.get("insecure") or []),
             ("blocked", "blockedRegistries", case.get("blocked") or []),
             ("allowed", "allowedRegistries", case.get("allowed") or [])]
    if case["error"] is None:
        validate_scopes(inputs.image, lists, digest_entries(inputs) + tag_entries(inputs), "")
        return
    with pytest.raises(InputError) as err:
        validate_scopes(inputs.image, lists, digest_entries(inputs) + tag_entries(inputs), "")
    assert err.value.message == case["error"]
    assert err.value.file and err.value.path  # the object and field to fix


@pytest.mark.parametrize("case", vectors("valid-blocked-allowed.json"), ids=lambda c: c["name"])
def test_the_payload_repository_is_never_blocked_without_a_mirror(case: dict[str, Any]) -> None:
    digest = [rc.MirrorSet(e["source"], e["mirrors"]) for e in case.get("idms") or []]
    got = blocked_and_allowed(case["releaseImage"], {"blockedRegistries": case["blocked"]}, digest)
    assert (got.registries_blocked, got.policy_blocked, got.allowed) == (
        case["registriesBlocked"], case["policyBlocked"], case["allowed"])
    assert bool(got.warning) == case["error"]


POLICY_TEMPLATE = json.dumps({"default": [{"type": "insecureAcceptAnything"}],
                              "transports": {"docker-daemon": {"": [
                                  {"type": "insecureAcceptAnything"}]}}}).encode()


@pytest.mark.parametrize("case", vectors("update-policy-json.json"), ids=lambda c: c["name"])
def test_policy_json_as_mco_tests_expect(case: dict[str, Any]) -> None:
    release = json.loads((VECTORS / "update-policy-json.json").read_text())["releaseImage"]
    payload = parse_named(release).name
    if case.get("error"):
        with pytest.raises(MachineConfigError, match="only one of AllowedRegistries"):
            update_policy_json(POLICY_TEMPLATE, case.get("blocked"), case.get("allowed"), payload)
        return
    out = update_policy_json(POLICY_TEMPLATE, case.get("blocked"), case.get("allowed"), payload)
    assert json.loads(out) == case["want"]


def test_policy_json_bytes_are_go_marshal_indent() -> None:
    out = update_policy_json(POLICY_TEMPLATE, None, ["a.io/<x>"], None)
    assert out.decode() == """\
{
  "default": [
    {
      "type": "reject"
    }
  ],
  "transports": {
    "atomic": {
      "a.io/\\u003cx\\u003e": [
        {
          "type": "insecureAcceptAnything"
        }
      ]
    },
    "docker": {
      "a.io/\\u003cx\\u003e": [
        {
          "type": "insecureAcceptAnything"
        }
      ]
    },
    "docker-daemon": {
      "": [
        {
          "type": "insecureAcceptAnything"
        }
      ]
    }
  }
}"""


def test_release_references_must_be_canonical() -> None:
    ref = parse_named("quay.io/openshift-release-dev/ocp-release@sha256:" + "a" * 64)
    assert (ref.name, ref.digested) == ("quay.io/openshift-release-dev/ocp-release", True)
    assert parse_named("localhost:5000/x:tag").name == "localhost:5000/x"
    for bad in ("ubuntu", "docker.io/ubuntu", "quay.io/UPPER/x", "quay.io/x@sha256:1", ""):
        with pytest.raises(MachineConfigError, match="error parsing reference of release image"):
            parse_named(bad)


# --- the generated MachineConfigs -------------------------------------------------------------

CC = controller_config("None")
TEMPLATE_MCS = render_templates(CC, TEMPLATES)


def pools(*names: str, built_in: bool = True) -> list[dict[str, Any]]:
    labels = {BUILT_IN: ""} if built_in else {}
    return [{"metadata": {"name": n, "labels": dict(labels)}} for n in names]


def test_every_built_in_pool_gets_one_with_mcos_metadata() -> None:
    inputs = ImageInputs(image=obj("Image", {"registrySources": {
        "insecureRegistries": ["insecure.io"], "containerRuntimeSearchRegistries": ["s.io"]}}))
    inputs.image.obj["metadata"]["uid"] = "img-uid"  # type: ignore[union-attr]
    mcs, warnings = generate_registries_machine_configs(
        inputs, pools("worker", "master") + pools("infra", built_in=False), TEMPLATE_MCS,
        controller_config=CC)
    assert warnings == []
    assert [mc["metadata"]["name"] for mc in mcs] == ["99-master-generated-registries",
                                                      "99-worker-generated-registries"]
    mc = mcs[1]
    assert mc["metadata"]["labels"] == {"machineconfiguration.openshift.io/role": "worker"}
    assert mc["metadata"]["ownerReferences"] == [{"apiVersion": "config.openshift.io/v1",
                                                  "kind": "Image", "name": "cluster",
                                                  "uid": "img-uid"}]
    assert_valid_ignition(mc["spec"]["config"])
    paths = [f["path"] for f in mc["spec"]["config"]["storage"]["files"]]
    assert paths == ["/etc/containers/registries.conf",
                     "/etc/containers/registries.conf.d/01-image-searchRegistries.conf"]
    f = mc["spec"]["config"]["storage"]["files"][0]
    assert (f["mode"], f["overwrite"], f["contents"]["compression"]) == (0o644, True, "")
    assert file_text(mc, paths[1]) == ('unqualified-search-registries = ["s.io"]\n'
                                       'short-name-mode = ""\n'
                                       'additional-layer-store-auth-helper = ""\n')
    # the template's search list is kept in registries.conf
    conf = tomllib.loads(file_text(mc, paths[0]))
    assert conf["registry"] == [{"prefix": "", "location": "insecure.io", "insecure": True}]


def test_an_image_config_without_sources_still_owns_an_empty_machine_config() -> None:
    mcs, _ = generate_registries_machine_configs(ImageInputs(image=obj("Image", {})),
                                                 pools("worker"), TEMPLATE_MCS, controller_config=CC)
    assert mcs[0]["spec"]["config"] == {"ignition": {"version": "3.5.0"}}
    assert generate_registries_machine_configs(ImageInputs(), pools("worker"), TEMPLATE_MCS) == ([], [])


def test_both_allowed_and_blocked_is_mcos_error_naming_the_image_file() -> None:
    inputs = ImageInputs(image=obj("Image", {"registrySources": {
        "allowedRegistries": ["a.io"], "blockedRegistries": ["b.io"]}}))
    with pytest.raises(InputError) as err:
        generate_registries_machine_configs(inputs, pools("worker"), TEMPLATE_MCS,
                                            controller_config=CC)
    assert str(err.value) == (
        "cluster.yaml: $.spec.registrySources: could not update policy json with new changes: "
        "invalid images config: only one of AllowedRegistries or BlockedRegistries may be "
        "specified")


def test_a_bad_mirror_names_its_object_and_entry() -> None:
    inputs = ImageInputs(idmss=[obj("ImageDigestMirrorSet", {"imageDigestMirrors": [
        {"source": "ok.io/x", "mirrors": ["m.io/x"]},
        {"source": "ok.io/y", "mirrors": ["m.io/y", "bad mirror"]}]}, "mirrors")])
    with pytest.raises(InputError) as err:
        generate_registries_machine_configs(inputs, pools("worker"), TEMPLATE_MCS,
                                            controller_config=CC)
    assert str(err.value) == ('mirrors.yaml: $.spec.imageDigestMirrors.1.mirrors.1: could not '
                              'update registries config with new changes: invalid format for '
                              'mirror "bad mirror"')


def test_blocking_the_payload_registry_is_dropped_with_a_warning() -> None:
    cc = controller_config("None", releaseImage="quay.io/openshift-release-dev/ocp-release@sha256:"
                           + "1" * 64)
    inputs = ImageInputs(image=obj("Image", {"registrySources": {
        "blockedRegistries": ["quay.io", "evil.io"]}}))
    mcs, warnings = generate_registries_machine_configs(inputs, pools("worker"), TEMPLATE_MCS,
                                                        controller_config=cc)
    assert warnings == ['cluster.yaml: error adding ["quay.io"] to blocked registries, cannot '
                        'block the repository being used by the payload, skipping....']
    conf = tomllib.loads(file_text(mcs[0], "/etc/containers/registries.conf"))
    assert conf["registry"] == [{"prefix": "", "location": "evil.io", "blocked": True}]
    policy = json.loads(file_text(mcs[0], "/etc/containers/policy.json"))
    assert set(policy["transports"]["docker"]) == {"evil.io"}


# --- mcc render -------------------------------------------------------------------------------

IMAGE_YAML = """\
apiVersion: config.openshift.io/v1
kind: Image
metadata:
  name: cluster
spec:
  registrySources:
    blockedRegistries: [blocked.example.com]
    allowedRegistries:
    - allowed.example.com
"""


def test_mcc_render_adds_the_registries_config_to_the_built_in_pools(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = tmp_path / "cluster"
    shutil.copytree(ROOT / "examples" / "cluster", cluster)
    (cluster / "mirrors.yaml").write_text("""\
apiVersion: config.openshift.io/v1
kind: ImageTagMirrorSet
metadata: {name: tags}
spec:
  imageTagMirrors:
  - {source: docker.io/library, mirrors: [mirror.example.com/library]}
""")
    out = tmp_path / "out"
    assert main(["render", str(cluster), "--out", str(out)]) == 0, capsys.readouterr().err
    for pool in ("master", "worker"):
        sources = yaml.safe_load((out / "machine-pools" / f"{pool}.yaml").read_text())[
            "spec"]["configuration"]["source"]
        assert f"99-{pool}-generated-registries" in [s["name"] for s in sources]
    rendered_name = yaml.safe_load((out / "machine-pools" / "worker.yaml").read_text())[
        "status"]["configuration"]["name"]
    worker = yaml.safe_load((out / "machine-configs" / f"{rendered_name}.yaml").read_text())
    conf = tomllib.loads(file_text(worker, "/etc/containers/registries.conf"))
    assert conf["registry"][0]["mirror"] == [{"location": "mirror.example.com/library",
                                              "pull-from-mirror": "tag-only"}]


def test_mcc_render_refuses_allowed_and_blocked_together_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = tmp_path / "cluster"
    shutil.copytree(ROOT / "examples" / "cluster", cluster)
    (cluster / "image.yaml").write_text(IMAGE_YAML)
    assert main(["render", str(cluster), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.endswith(f"{cluster / 'image.yaml'}:6: $.spec.registrySources: could not update "
                        "policy json with new changes: invalid images config: only one of "
                        "AllowedRegistries or BlockedRegistries may be specified"), err
    assert not (tmp_path / "out").exists()


def test_mirrors_reach_nested_scopes_that_have_none() -> None:
    """A blocked or insecure namespace below a mirrored source would hide the mirrors (only the
    most precise entry counts), so MCO copies them down with the namespace appended."""
    conf = rc.RegistriesConf()
    rc.edit_registries_config(conf, ["quay.io/ns"], [], [rc.MirrorSet("quay.io", ["m.io"])], [])
    child = rc.find_registry(conf, "quay.io/ns/app")
    assert child is not None and child.location == "quay.io/ns" and child.insecure
    assert [(m.location, m.pull_from_mirror) for m in child.mirrors or []] == [("m.io/ns",
                                                                                "digest-only")]


# --- mcc start (the render controller on the local store) -------------------------------------

def test_the_running_controller_follows_the_image_config(tmp_path: Path) -> None:
    """Before: `mcc start` loaded an Image file and ignored it. Now the generated MC is stored,
    the pools render it, a bad edit is RenderDegraded naming the object (the last good config
    stays), and removing the file removes the MachineConfig."""
    from machineconfig.store import open_store
    from machineconfig.status import find_condition
    from mcc.render_controller import RenderController

    inputs = tmp_path / "inputs"
    shutil.copytree(ROOT / "examples" / "cluster", inputs)
    (inputs / "image.yaml").write_text(IMAGE_YAML.replace(
        "    allowedRegistries:\n    - allowed.example.com\n", ""))
    store = open_store(f"local:{inputs}", str(tmp_path / "state"))
    controller = RenderController(store)
    result = controller.sync()
    assert result is not None and not result.errors, result.errors
    mc = store.get_object("MachineConfig", "99-worker-generated-registries")
    policy = json.loads(file_text(mc, "/etc/containers/policy.json"))
    assert set(policy["transports"]["docker"]) == {"blocked.example.com"}
    pool = store.get_object("MachineConfigPool", "worker")
    good = pool["spec"]["configuration"]["name"]
    assert "99-worker-generated-registries" in [s["name"] for s in
                                                pool["spec"]["configuration"]["source"]]

    (inputs / "image.yaml").write_text(IMAGE_YAML)
    store.revision()
    controller.sync()
    pool = store.get_object("MachineConfigPool", "worker")
    cond = find_condition(pool["status"], "RenderDegraded")
    assert cond is not None and cond["status"] == "True"
    assert cond["message"] == (
        "Failed to render configuration for pool worker: store:Image/cluster: "
        "$.spec.registrySources: could not update policy json with new changes: invalid images "
        "config: only one of AllowedRegistries or BlockedRegistries may be specified")
    assert pool["spec"]["configuration"]["name"] == good

    (inputs / "image.yaml").unlink()
    store.revision()
    controller.sync()
    names = {m["metadata"]["name"] for m in store.list_objects("MachineConfig")}
    assert "99-worker-generated-registries" not in names
    pool = store.get_object("MachineConfigPool", "worker")
    assert find_condition(pool["status"], "RenderDegraded")["status"] == "False"  # type: ignore[index]


@pytest.mark.parametrize("spec", [
    {"registrySources": []}, {"registrySources": {"blockedRegistries": "a.io"}},
    {"registrySources": {"insecureRegistries": [1]}}, "text", None, 7,
    {"registrySources": {"allowedRegistries": [{"a": 1}]}},
])
def test_hostile_image_specs_are_one_line_errors_or_ignored(spec: Any) -> None:
    image = ClusterObject({"apiVersion": "config.openshift.io/v1", "kind": "Image",
                           "metadata": {"name": "cluster"}, "spec": spec}, "image.yaml")
    try:
        generate_registries_machine_configs(ImageInputs(image=image), pools("worker"),
                                            TEMPLATE_MCS, controller_config=CC)
    except InputError as e:
        assert e.file == "image.yaml" and "\n" not in str(e)


@pytest.mark.parametrize("entries", [
    "x", [1], [{"source": 3}], [{"source": "a.io", "mirrors": "m.io"}],
    [{"source": "a.io", "mirrors": ["m.io"], "mirrorSourcePolicy": ["x"]}],
])
def test_hostile_mirror_sets_name_their_object(entries: Any) -> None:
    idms = ClusterObject({"apiVersion": "config.openshift.io/v1", "kind": "ImageDigestMirrorSet",
                          "metadata": {"name": "m"}, "spec": {"imageDigestMirrors": entries}},
                         "m.yaml")
    with pytest.raises(InputError) as err:
        generate_registries_machine_configs(ImageInputs(idmss=[idms]), pools("worker"),
                                            TEMPLATE_MCS, controller_config=CC)
    assert err.value.file == "m.yaml"


@pytest.mark.parametrize("case", vectors("search-registries-dropin.json"), ids=lambda c: c["name"])
def test_search_registries_drop_in_is_byte_for_byte_what_mco_writes(case: dict[str, Any]) -> None:
    inputs = ImageInputs(image=obj("Image", {"registrySources": {
        "containerRuntimeSearchRegistries": case["containerRuntimeSearchRegistries"]}}))
    mcs, _ = generate_registries_machine_configs(inputs, pools("master", "worker"), TEMPLATE_MCS,
                                                 controller_config=CC)
    for mc in mcs:
        assert file_text(mc, case["path"]) == case["expected"]
