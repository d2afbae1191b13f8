"""MCO's bootstrap, offline: read a cluster's objects from files, run the template, kubelet-config
and container-runtime-config controllers when a ControllerConfig is among them, then render every
pool from the user's, the template and the generated MachineConfigs (mcc.layout writes the result).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from machineconfig.api import (
    YAML_SUFFIXES, ContainerRuntimeConfig, ControllerConfig, KubeletConfig, Loaded, MachineConfig,
    MachineConfigPool, load_documents,
)
from machineconfig.api import input_files as api_input_files
from machineconfig.constants import (
    CONTROLLER_CONFIG_NAME,
    API_VERSION, GENERATED_BY_CONTROLLER_VERSION_ANNOTATION, ROLE_LABEL,
)
from machineconfig.clock import now_rfc3339
from machineconfig.errors import InputError, MachineConfigError
from machineconfig.yamlload import Document, load_file, load_text
from mcc import cluster_objects
from mcc.cluster_objects import ClusterObject
from mcc.container_runtime_config import generate_container_runtime_machine_configs
from mcc.generated_kubelet import (
    KubeletInputs, adjust_kubelet_base, feature_gates, generate_cluster_kubelet_machine_configs,
)
from mcc.kubelet_config import generate_kubelet_machine_configs
from mcc.registries import ImageInputs, generate_registries_machine_configs
from mcc.render import PoolRender, RenderError, render_pool
from mcc.template import pull_secret_from_secret, render_templates, render_user_template

log = logging.getLogger(__name__)

JSON = dict[str, Any]
USER_TEMPLATE_SUFFIX = ".j2"
INPUT_SUFFIXES = YAML_SUFFIXES + tuple(s + USER_TEMPLATE_SUFFIX for s in YAML_SUFFIXES)
PULL_SECRET_TYPE = "kubernetes.io/dockerconfigjson"
# kind -> the --out directory its objects (with their status) are written back to
STATUS_DIRS = {"KubeletConfig": "kubelet-configs",
               "ContainerRuntimeConfig": "container-runtime-configs"}


class PoolRenderError(MachineConfigError):
    """One pool failed to render; the message is MCO's RenderDegraded text."""


@dataclass
class PullSecret:
    """A kubernetes.io/dockerconfigjson Secret; its data is never part of a message or log."""

    name: str
    namespace: str
    secret: JSON
    file: str


@dataclass
class Inputs:
    """The objects of one render, and the file each came from (for messages)."""

    pools: list[MachineConfigPool]
    configs: list[MachineConfig]  # user MachineConfigs; after run_controllers, every one
    controller_config: ControllerConfig
    files: dict[str, str]  # "<kind>/<name>" -> the file (or template directory) it came from
    controller: Loaded | None = None
    kubelet_configs: list[Loaded] = field(default_factory=list)
    container_runtime_configs: list[Loaded] = field(default_factory=list)
    pull_secrets: list[PullSecret] = field(default_factory=list)
    # OpenShift's cluster-wide objects (image config, mirror sets ...), by kind
    cluster_objects: dict[str, list[ClusterObject]] = field(default_factory=dict)
    # filled by run_controllers: objects written back with their status, and what went wrong
    status_objects: list[JSON] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --- Reading ----------------------------------------------------------------------------------

def load_values(path: str) -> JSON:
    """The --values file: one YAML mapping whose keys become template variables."""
    docs = load_file(path)
    if len(docs) != 1 or not isinstance(docs[0].data, dict):
        raise InputError("--values must be one YAML mapping", file=path)
    values: JSON = docs[0].data
    return values


def input_files(paths: Sequence[str]) -> list[str]:
    """machineconfig.api.input_files, plus the user MachineConfig templates (*.yaml.j2)."""
    return api_input_files(paths, INPUT_SUFFIXES)


def load_inputs(paths: Sequence[str], values: Mapping[str, Any] | None = None) -> Inputs:
    """Read every object under `paths`; *.j2 files are rendered with `values` first.

    Line numbers in errors about a rendered template are those of its output, which match the
    template's as long as it does not add or remove lines.
    """
    loaded: list[Loaded] = []
    secrets: list[PullSecret] = []
    cluster: dict[str, list[ClusterObject]] = {}
    for file in input_files(paths):
        if file.endswith(USER_TEMPLATE_SUFFIX):
            docs = load_text(render_user_template(Path(file), values or {}), file)
        else:
            docs = load_file(file)
        secrets += _pull_secrets(docs)
        cluster_objects.merge(cluster, cluster_objects.from_documents(docs))
        loaded += load_documents(docs)
    inputs = collect(loaded)
    inputs.pull_secrets = secrets
    inputs.cluster_objects = cluster
    return inputs


def _pull_secrets(docs: Sequence[Document]) -> list[PullSecret]:
    """The dockerconfigjson Secrets among `docs` (api's loader skips kinds it does not model)."""
    out = []
    for doc in docs:
        data = doc.data
        is_list = isinstance(data, dict) and data.get("kind") == "List"
        items = data.get("items") if is_list else [data]
        for obj in items if isinstance(items, list) else []:
            if not isinstance(obj, dict) or obj.get("kind") != "Secret":
                continue
            meta: JSON = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
            if obj.get("type") != PULL_SECRET_TYPE:
                log.debug("%s: Secret %s is not a pull secret (type %s): ignored", doc.file,
                          meta.get("name"), obj.get("type"))
                continue
            out.append(PullSecret(str(meta.get("name") or ""), str(meta.get("namespace") or ""),
                                  obj, doc.file))
    return out


def collect(loaded: Sequence[Loaded]) -> Inputs:
    """Split loaded objects by kind; refuse duplicate names and a second ControllerConfig."""
    seen: dict[str, dict[str, Loaded]] = {kind: {} for kind in (
        "MachineConfigPool", "MachineConfig", "KubeletConfig", "ContainerRuntimeConfig")}
    controller: Loaded | None = None
    for item in loaded:
        obj = item.obj
        where = f"{item.base_path}.metadata.name"
        if isinstance(obj, ControllerConfig):
            if controller is not None:
                raise InputError(f"a second ControllerConfig (the first is in {controller.file})",
                                 file=item.file, path=item.base_path,
                                 line=item.document.line_of(item.base_path))
            controller = item
            continue
        if not obj.name:
            raise InputError(f"{obj.kind} without a name", file=item.file, path=where,
                             line=item.document.line_of(item.base_path))
        of_kind = seen[type(obj).__name__]
        if obj.name in of_kind:
            first = of_kind[obj.name].file
            raise InputError(f"duplicate {obj.kind} {obj.name!r} (also in {first})",
                             file=item.file, path=where, line=item.document.line_of(where))
        of_kind[obj.name] = item
    if not seen["MachineConfigPool"]:
        raise InputError("no MachineConfigPool found in the input")
    if controller is None:
        log.warning("no ControllerConfig in the input: default OS images are empty")
        cconfig = ControllerConfig.model_validate(
            {"apiVersion": API_VERSION, "kind": "ControllerConfig",
             "metadata": {"name": CONTROLLER_CONFIG_NAME}})
    else:
        assert isinstance(controller.obj, ControllerConfig)
        cconfig = controller.obj

    def ordered(kind: str) -> list[Loaded]:
        return [item for _, item in sorted(seen[kind].items())]
    pools = [i.obj for i in ordered("MachineConfigPool") if isinstance(i.obj, MachineConfigPool)]
    configs = [i.obj for i in ordered("MachineConfig") if isinstance(i.obj, MachineConfig)]
    files = {f"{kind}/{name}": item.file for kind, items in seen.items()
             for name, item in items.items()}
    return Inputs(pools, configs, cconfig, files, controller, ordered("KubeletConfig"),
                  ordered("ContainerRuntimeConfig"))


def raw_object(item: Loaded) -> JSON:
    """The object exactly as written (the controllers take plain dicts, unknown fields included)."""
    data: Any = item.document.data
    for part in item.base_path.split(".")[1:]:
        data = data[int(part)] if isinstance(data, list) else data[part]
    assert isinstance(data, dict)
    return data


# --- The controllers --------------------------------------------------------------------------

def pull_secret(inputs: Inputs) -> str | None:
    """The docker config JSON of the Secret the ControllerConfig's spec.pullSecret names (or of the
    only one given). Messages name files and secrets, never their data."""
    ref = inputs.controller_config.spec.pull_secret or {}
    candidates = inputs.pull_secrets
    if ref.get("name"):
        # A Secret written without a namespace matches the reference's name alone.
        candidates = [s for s in candidates if s.name == ref["name"] and (
            not s.namespace or not ref.get("namespace") or s.namespace == ref["namespace"])]
        if not candidates and inputs.pull_secrets:
            raise InputError(f"ControllerConfig spec.pullSecret names Secret {ref['name']!r}, "
                             f"which is not among the inputs (found {_names(inputs.pull_secrets)})",
                             path="spec.pullSecret.name")
    if not candidates:
        inputs.warnings.append("no pull secret (a Secret of type kubernetes.io/dockerconfigjson) "
                               "among the inputs: nodes get an empty one")
        return None
    if len(candidates) > 1:
        raise InputError(f"several pull secrets: {_names(candidates)}; name one in the "
                         "ControllerConfig's spec.pullSecret", path="spec.pullSecret")
    chosen = candidates[0]
    try:
        text = pull_secret_from_secret(chosen.secret)
        json.loads(text)
    except InputError as e:
        raise InputError(e.message, file=chosen.file, path=e.path) from None
    except ValueError:  # binascii.Error, UnicodeDecodeError, JSONDecodeError
        # `from None` and no detail: decoder messages may quote the secret's bytes.
        raise InputError(f"Secret {chosen.name!r}: .dockerconfigjson is not base64-encoded JSON",
                         file=chosen.file) from None
    return text


def _names(secrets: Sequence[PullSecret]) -> str:
    return ", ".join(f"{s.name!r} in {s.file}" for s in secrets)


def run_controllers(inputs: Inputs, templates_dir: Path, values: Mapping[str, Any] | None = None,
                    *, values_file: str | None = None, now: str | None = None) -> None:
    """With a ControllerConfig that has spec.infra (the Infrastructure the templates depend on):
    add the template and generated MachineConfigs to `inputs.configs`, the KubeletConfigs and
    ContainerRuntimeConfigs with their status to `inputs.status_objects`, and a warning for each of
    those that failed (its pools still render from the rest, as in MCO)."""
    controller = inputs.controller
    if controller is None or inputs.controller_config.spec.infra is None:
        # Without the Infrastructure there is nothing to render templates for: such a
        # ControllerConfig only supplies the default OS images, and the inputs are rendered as
        # given (the render controller alone, which is what the render test vectors exercise).
        if controller is not None:
            log.info("%s: ControllerConfig without spec.infra: no template MachineConfigs",
                     controller.file)
        for kind, cluster_objs in sorted(inputs.cluster_objects.items()):
            for cluster_obj in cluster_objs:
                log.warning("%s: %s %s ignored: it needs a ControllerConfig with spec.infra to "
                            "render its base configuration from", cluster_obj.file, kind,
                            cluster_obj.name)
        for item in inputs.kubelet_configs + inputs.container_runtime_configs:
            log.warning("%s: %s %s ignored: it needs a ControllerConfig with spec.infra to "
                        "render its base configuration from", item.file, item.obj.kind,
                        item.obj.name)
        return
    cc = raw_object(controller)
    try:
        templates = render_templates(cc, templates_dir, values, pull_secret=pull_secret(inputs))
    except InputError as e:
        raise _locate(e, controller, values_file) from e
    pools = [p.to_dict() for p in inputs.pools]
    now = now or now_rfc3339()
    kubelet_inputs = KubeletInputs.from_objects(inputs.cluster_objects)
    cluster_kubelet_mcs = generate_cluster_kubelet_machine_configs(
        kubelet_inputs, pools, templates, controller_config=cc, templates_dir=templates_dir,
        values=values)
    gates = (feature_gates(kubelet_inputs.feature_gate, cc)
             if kubelet_inputs.feature_gate is not None else None)

    def adjust_base(conf: dict[str, Any], pool: str) -> None:
        adjust_kubelet_base(conf, pool, kubelet_inputs, gates)
    kc_mcs, kcs = generate_kubelet_machine_configs(
        [raw_object(i) for i in inputs.kubelet_configs], pools, templates, controller_config=cc,
        templates_dir=templates_dir, values=values, now=now, adjust_base=adjust_base)
    ctr_mcs, ctrcfgs = generate_container_runtime_machine_configs(
        [raw_object(i) for i in inputs.container_runtime_configs], pools, templates,
        controller_config=cc, templates_dir=templates_dir, values=values, now=now)
    image_inputs = ImageInputs.from_objects(inputs.cluster_objects)
    reg_mcs, reg_warnings = generate_registries_machine_configs(
        image_inputs, pools, templates, controller_config=cc, templates_dir=templates_dir,
        values=values)
    inputs.warnings += reg_warnings
    generated: dict[str, str] = {}  # MC name -> what produced it
    for mc in templates:
        meta = mc["metadata"]
        generated[meta["name"]] = str(templates_dir / meta["labels"][ROLE_LABEL] / meta["name"])
    for kind, mcs in (("KubeletConfig", kc_mcs), ("ContainerRuntimeConfig", ctr_mcs)):
        for mc in mcs:
            owner = mc["metadata"]["ownerReferences"][0]["name"]
            generated[mc["metadata"]["name"]] = inputs.files[f"{kind}/{owner}"]
    for mc in reg_mcs:
        generated[mc["metadata"]["name"]] = image_inputs.file
    for mc in cluster_kubelet_mcs:
        owner = (kubelet_inputs.node_config if mc["metadata"]["name"].startswith("97-")
                 else kubelet_inputs.feature_gate)
        generated[mc["metadata"]["name"]] = owner.file if owner is not None else ""
    user = _check_names(inputs, generated)
    for mc in templates + cluster_kubelet_mcs + kc_mcs + ctr_mcs + reg_mcs:
        name = mc["metadata"]["name"]
        try:
            user.append(MachineConfig.model_validate(mc))
        except ValidationError as e:  # a template producing a wrong type: name where it came from
            raise InputError(f"generated MachineConfig {name} is invalid: {e.errors()[0]['msg']}",
                             file=generated[name]) from e
        inputs.files[f"MachineConfig/{name}"] = generated[name]
    inputs.configs = sorted(user, key=lambda mc: mc.name)
    for kind, objs in (("KubeletConfig", kcs), ("ContainerRuntimeConfig", ctrcfgs)):
        for obj in objs:
            inputs.status_objects.append(obj)
            warning = _failure(kind, obj)
            if warning:
                file = inputs.files[f"{kind}/{obj['metadata']['name']}"]
                inputs.warnings.append(f"{file}: {warning}")


def _check_names(inputs: Inputs, generated: Mapping[str, str]) -> list[MachineConfig]:
    """The user MachineConfigs that stay, given the names the controllers own.

    MCO's controllers own their MachineConfigs' names and overwrite whatever is stored there. So a
    controller-made copy (it carries the generated-by-controller-version annotation, e.g. from an
    earlier `--out`) is replaced by the fresh one; a user MachineConfig of such a name is an error,
    as it would silently vanish in a cluster.
    """
    kept = []
    for mc in inputs.configs:
        source = generated.get(mc.name)
        if source is None:
            kept.append(mc)
            continue
        file = inputs.files[f"MachineConfig/{mc.name}"]
        if GENERATED_BY_CONTROLLER_VERSION_ANNOTATION in mc.annotations:
            log.info("%s: MachineConfig %s replaced by the one generated from %s",
                     file, mc.name, source)
            continue
        raise InputError(f"MachineConfig {mc.name!r} has the name of the MachineConfig generated "
                         f"from {source}, which owns it; rename yours (user MachineConfigs "
                         "usually start with 50- to 99- and avoid the -generated- names)",
                         file=file)
    return kept


def _failure(kind: str, obj: Mapping[str, Any]) -> str | None:
    """The one-line verdict on a rejected KubeletConfig/ContainerRuntimeConfig, else None."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    if not conditions or conditions[-1].get("status") != "False":
        return None
    last = conditions[-1]
    message = " ".join(str(last.get("message", "")).split())
    return f"{kind} {obj['metadata']['name']} not applied ({last.get('type')}): {message}"


def _locate(e: InputError, controller: Loaded, values_file: str | None) -> InputError:
    """Give a template-controller error without a file the file it is about."""
    if e.file:
        return e
    if e.path and e.path.startswith("values.") and values_file:
        return InputError(e.message, file=values_file, path=e.path)
    path = f"{controller.base_path}.{e.path}" if e.path else controller.base_path
    return InputError(e.message, file=controller.file, path=path,
                      line=controller.document.line_of(path))


# --- Rendering --------------------------------------------------------------------------------

def render_all(inputs: Inputs) -> list[PoolRender]:
    """Render every pool (sorted by name); the first failure stops everything."""
    rendered = []
    for pool in inputs.pools:
        try:
            rendered.append(render_pool(pool, inputs.configs, inputs.controller_config))
        except RenderError as e:
            # Name the file to fix first; MCO's own text follows unchanged.
            culprit = e.machine_config and inputs.files.get(f"MachineConfig/{e.machine_config}")
            where = f"{culprit}: " if culprit else ""
            raise PoolRenderError(
                f"{where}Failed to render configuration for pool {pool.name}: {e}") from e
        log.info("pool %s: %s from %d MachineConfigs", pool.name, rendered[-1].name,
                 len(rendered[-1].sources))
    return rendered
