"""The image-config half of MCO's container-runtime-config controller: image.config.openshift.io
`cluster` (registrySources), ImageContentSourcePolicies, ImageDigestMirrorSets and
ImageTagMirrorSets become 99-<pool>-generated-registries for every built-in pool, holding
registries.conf, policy.json and the search-registries drop-in as MCO writes them.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machineconfig.constants import GROUP, INTERNAL_IGNITION_VERSION
from machineconfig.errors import InputError, MachineConfigError
from mcc import registries_conf as rc
from mcc.cluster_objects import (
    IMAGE, IMAGE_CONTENT_SOURCE_POLICY, IMAGE_DIGEST_MIRROR_SET, IMAGE_TAG_MIRROR_SET,
    ClusterObject, by_name, instance,
)
from mcc.generated_common import file_overwriting, role_template_file, template_renderer
from mcc.registries_policy import BOTH_LISTS, update_policy_json
from mcc.template import generated_machine_config

log = logging.getLogger(__name__)

REGISTRIES_CONF_PATH = "/etc/containers/registries.conf"
POLICY_JSON_PATH = "/etc/containers/policy.json"
SEARCH_REGISTRIES_PATH = "/etc/containers/registries.conf.d/01-image-searchRegistries.conf"
BUILT_IN_LABEL = f"{GROUP}/mco-built-in"
IMAGE_API_VERSION = "config.openshift.io/v1"
PARSING_REFERENCE = "error parsing reference of release image"
# The CRD's (and MCO's, for ICSPs) formats of a mirror source and a mirror.
# Written without the CRD's nested `[-]*` (same language), which backtracks exponentially in
# Python's engine on hostile input.
_HOST = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_REPO = rf"{_HOST}(?:\.{_HOST})*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
SOURCE = re.compile(rf"\*(?:\.{_HOST})+|{_REPO}")
MIRROR = re.compile(_REPO)


@dataclass
class ImageInputs:
    """What the registries controller reads; all empty means it has nothing to do."""

    image: ClusterObject | None = None
    icsps: list[ClusterObject] = field(default_factory=list)
    idmss: list[ClusterObject] = field(default_factory=list)
    itmss: list[ClusterObject] = field(default_factory=list)

    @classmethod
    def from_objects(cls, objects: Mapping[str, Sequence[ClusterObject]]) -> ImageInputs:
        return cls(instance(objects.get(IMAGE, []), IMAGE),
                   by_name(objects.get(IMAGE_CONTENT_SOURCE_POLICY, [])),
                   by_name(objects.get(IMAGE_DIGEST_MIRROR_SET, [])),
                   by_name(objects.get(IMAGE_TAG_MIRROR_SET, [])))

    @property
    def present(self) -> bool:
        return bool(self.image or self.icsps or self.idmss or self.itmss)

    @property
    def file(self) -> str:
        """The file an error about the whole set is reported against."""
        first = self.image or (self.icsps + self.idmss + self.itmss)[0]
        return first.file


# --- reading the objects ----------------------------------------------------------------------

def _string_list(o: ClusterObject, path: str, value: Any) -> list[str] | None:
    """A list of strings, None when absent (Go's nil: an empty list still counts as set)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise o.error("must be a list of strings", path)
    return list(value)


def registry_sources(image: ClusterObject | None) -> dict[str, list[str] | None]:
    names = ("allowedRegistries", "blockedRegistries", "insecureRegistries",
             "containerRuntimeSearchRegistries")
    if image is None:
        return dict.fromkeys(names)
    spec = image.obj.get("spec") or {}
    sources = spec.get("registrySources") if isinstance(spec, dict) else None
    if sources is None:
        return dict.fromkeys(names)
    if not isinstance(sources, dict):
        raise image.error("must be an object", "spec.registrySources")
    return {n: _string_list(image, f"spec.registrySources.{n}", sources.get(n)) for n in names}


@dataclass(frozen=True)
class _Entry:
    """One mirror-set entry and where it was written (for errors)."""

    set: rc.MirrorSet
    owner: ClusterObject
    path: str


def _entries(o: ClusterObject, list_field: str, with_policy: bool) -> list[_Entry]:
    spec = o.obj.get("spec") or {}
    items = spec.get(list_field) if isinstance(spec, dict) else None
    if items is None:
        return []
    if not isinstance(items, list):
        raise o.error("must be a list", f"spec.{list_field}")
    out = []
    for i, item in enumerate(items):
        path = f"spec.{list_field}.{i}"
        if not isinstance(item, dict) or not isinstance(item.get("source", ""), str):
            raise o.error("must be an object with a string source", path)
        mirrors = _string_list(o, f"{path}.mirrors", item.get("mirrors")) or []
        policy = item.get("mirrorSourcePolicy", "") if with_policy else ""
        if policy not in ("", "AllowContactingSource", rc.NEVER_CONTACT_SOURCE):
            raise o.error(f'Unsupported value: "{policy}": supported values: '
                          '"NeverContactSource", "AllowContactingSource"',
                          f"{path}.mirrorSourcePolicy")
        out.append(_Entry(rc.MirrorSet(str(item.get("source", "")), mirrors, str(policy)), o,
                          path))
    return out


def digest_entries(inputs: ImageInputs) -> list[_Entry]:
    """ImageDigestMirrorSets first, then the ImageContentSourcePolicies (as MCO merges them)."""
    out = []
    for o in inputs.idmss:
        out += _entries(o, "imageDigestMirrors", True)
    for o in inputs.icsps:
        out += _entries(o, "repositoryDigestMirrors", False)
    return out


def tag_entries(inputs: ImageInputs) -> list[_Entry]:
    return [e for o in inputs.itmss for e in _entries(o, "imageTagMirrors", True)]


# --- validation (MCO's validateRegistriesConfScopes) ------------------------------------------

def _go_quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _matches(pattern: re.Pattern[str], s: str) -> bool:
    return pattern.fullmatch(s) is not None


def validate_scopes(image: ClusterObject | None, lists: Sequence[tuple[str, str, list[str]]],
                    entries: Sequence[_Entry], prefix: str) -> None:
    """`lists`: (what, field, scopes) checked in order; then every mirror entry. The first
    problem is an InputError naming the object's file and field, with MCO's text after `prefix`."""
    for what, fld, scopes in lists:
        for i, scope in enumerate(scopes):
            if not rc.is_valid_scope(scope):
                message = f"{prefix}invalid entry for {what} registries {_go_quote(scope)}"
                if image is None:
                    raise MachineConfigError(message)
                raise image.error(message, f"spec.registrySources.{fld}.{i}")
    policies: dict[str, str] = {}
    for e in entries:
        s = e.set
        if not _matches(SOURCE, s.source):
            raise e.owner.error(f"{prefix}invalid format for source {_go_quote(s.source)}",
                                f"{e.path}.source")
        policy = s.policy or "AllowContactingSource"
        if policies.setdefault(s.source, policy) != policy:
            raise e.owner.error(
                f"{prefix}conflicting mirrorSourcePolicy is set for the same source "
                f"{_go_quote(s.source)} in imagedigestmirrorsets, imagetagmirrorsets, or "
                "imagecontentsourcepolicies", f"{e.path}.mirrorSourcePolicy")
        for j, mirror in enumerate(s.mirrors):
            if not _matches(MIRROR, mirror):
                raise e.owner.error(f"{prefix}invalid format for mirror {_go_quote(mirror)}",
                                    f"{e.path}.mirrors.{j}")
            if policy == rc.NEVER_CONTACT_SOURCE and mirror == s.source:
                raise e.owner.error(
                    f"{prefix}cannot set mirrorSourcePolicy: NeverContactSource if the source "
                    f"{_go_quote(s.source)} is one of the mirrors", f"{e.path}.mirrors.{j}")


# --- the release payload (docker reference parsing, as ParseNamed) ----------------------------

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN = rf"(?:{_HOST}(?:\.{_HOST})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?")


@dataclass(frozen=True)
class Reference:
    name: str  # domain/path
    text: str  # the whole reference as written
    digested: bool


def parse_named(ref: str) -> Reference:
    """A fully qualified image reference (what reference.ParseNamed accepts), else the error."""
    m = _REFERENCE.fullmatch(ref)
    if m is None or len(m.group("name")) > 255:
        raise MachineConfigError(PARSING_REFERENCE)
    name = m.group("name")
    first, _, rest = name.partition("/")
    is_domain = bool(rest) and (any(c in first for c in ".:") or first == "localhost"
                                or first.lower() != first)
    if not is_domain or first == "index.docker.io" or (first == "docker.io" and "/" not in rest):
        raise MachineConfigError(PARSING_REFERENCE)  # not in its canonical form
    return Reference(name, ref, m.group("digest") is not None)


def _payload_has_unblocked_mirror(payload: Reference, digest: list[rc.MirrorSet],
                                  insecure: list[str], blocked: list[str]) -> bool:
    """Some pull source of the payload (a mirror, or the source itself) is outside every blocked
    scope, with the registries.conf the insecure, blocked and digest-mirror settings make."""
    conf = rc.RegistriesConf()
    rc.edit_registries_config(conf, insecure, blocked, digest, [])
    reg = rc.find_registry(conf, payload.name)
    if reg is None:
        return False
    for _, rewritten in rc.pull_sources(reg, payload.text, payload.digested):
        name = parse_named(rewritten).name
        if not any(rc.scope_is_nested(name, b) for b in blocked):
            return True
    return False


@dataclass
class Lists:
    """The blocked lists for registries.conf and policy.json and the allowed list (None: unset)."""

    registries_blocked: list[str] | None = None
    policy_blocked: list[str] | None = None
    allowed: list[str] | None = None
    warning: str = ""


def _append(lst: list[str] | None, *items: str) -> list[str] | None:
    return (lst or []) + list(items) if items else lst


def blocked_and_allowed(release_image: str, sources: Mapping[str, list[str] | None],
                        digest: list[rc.MirrorSet]) -> Lists:
    """MCO's getValidBlockedAndAllowedRegistries: the payload's repository is never blocked in
    policy.json; blocking it in registries.conf is kept only when an unblocked digest mirror can
    serve it (then it is also allowed explicitly), otherwise dropped with a warning."""
    out = Lists()
    blocked = sources.get("blockedRegistries") or []
    if not release_image:
        # Not MCO's (it fails without a release image): outside OpenShift there is no payload
        # to protect, so the lists are taken as written.
        out.registries_blocked = _append(None, *blocked)
        out.policy_blocked = _append(None, *blocked)
        out.allowed = _append(None, *(sources.get("allowedRegistries") or []))
        return out
    payload = parse_named(release_image)
    refused = []
    for reg in blocked:
        if not rc.scope_is_nested(payload.name, reg):
            out.registries_blocked = _append(out.registries_blocked, reg)
            out.policy_blocked = _append(out.policy_blocked, reg)
            continue
        try:
            mirrored = _payload_has_unblocked_mirror(payload, digest, list(
                sources.get("insecureRegistries") or []), blocked)
        except MachineConfigError as e:
            return Lists(warning=f"{e}, skipping....")
        if not mirrored:
            refused.append(reg)
            continue
        log.warning("%s matches the payload repository, but will add it to the list of blocked "
                    "registries as there are mirror rules configured for it", _go_quote(reg))
        out.registries_blocked = _append(out.registries_blocked, reg)
        if payload.name != reg:
            out.policy_blocked = _append(out.policy_blocked, reg)
        out.allowed = _append(out.allowed, payload.name)
    if refused:
        quoted = " ".join(_go_quote(r) for r in refused)
        out.warning = (f"error adding [{quoted}] to blocked registries, cannot block the "
                       "repository being used by the payload, skipping....")
    out.allowed = _append(out.allowed, *(sources.get("allowedRegistries") or []))
    return out


# --- the MachineConfigs -----------------------------------------------------------------------

def _template_file(pool: str, path: str, existing_mcs: Sequence[Mapping[str, Any]],
                   render: Callable[[str], list[dict[str, Any]]] | None) -> bytes:
    return role_template_file(pool, "container-runtime", path, existing_mcs, render)


def registries_ignition(inputs: ImageInputs, lists: Lists, pool: str, release_image: str,
                        existing_mcs: Sequence[Mapping[str, Any]],
                        render: Callable[[str], list[dict[str, Any]]] | None) -> dict[str, Any]:
    """MCO's registriesConfigIgnition for one pool (errors name the object to fix); `lists` is
    what blocked_and_allowed made of the image config."""
    sources = registry_sources(inputs.image)
    digest, tag = digest_entries(inputs), tag_entries(inputs)
    insecure = sources["insecureRegistries"]
    files: list[tuple[str, bytes]] = []
    if insecure is not None or lists.registries_blocked is not None or (
            inputs.icsps or inputs.idmss or inputs.itmss):
        prefix = "could not update registries config with new changes: "
        validate_scopes(inputs.image, [("insecure", "insecureRegistries", insecure or []),
                                       ("blocked", "blockedRegistries",
                                        lists.registries_blocked or [])], digest + tag, prefix)
        text = _template_file(pool, REGISTRIES_CONF_PATH, existing_mcs, render)
        try:
            conf = rc.decode(text.decode("utf-8", errors="replace"))
            rc.edit_registries_config(conf, insecure or [], lists.registries_blocked or [],
                                      [e.set for e in digest], [e.set for e in tag])
        except MachineConfigError as e:
            raise MachineConfigError(f"{prefix}{e}") from e
        files.append((REGISTRIES_CONF_PATH, rc.encode(conf)))
    if lists.policy_blocked is not None or lists.allowed is not None:
        prefix = "could not update policy json with new changes: "
        if lists.allowed and lists.policy_blocked and inputs.image is not None:
            payload = parse_named(release_image).name if release_image else None
            if not (len(lists.allowed) == 1 and lists.allowed[0] == payload):
                raise inputs.image.error(prefix + BOTH_LISTS, "spec.registrySources")
        validate_scopes(inputs.image, [("blocked", "blockedRegistries", lists.policy_blocked or []),
                                       ("allowed", "allowedRegistries", lists.allowed or [])],
                        [], prefix)
        text = _template_file(pool, POLICY_JSON_PATH, existing_mcs, render)
        try:
            payload = parse_named(release_image).name if release_image else None
            files.append((POLICY_JSON_PATH, update_policy_json(text, lists.policy_blocked,
                                                               lists.allowed, payload)))
        except MachineConfigError as e:
            raise MachineConfigError(f"{prefix}{e}") from e
    search = sources["containerRuntimeSearchRegistries"]
    if search is not None:
        files.append((SEARCH_REGISTRIES_PATH,
                      rc.encode(rc.RegistriesConf(unqualified_search_registries=search))))
    config: dict[str, Any] = {"ignition": {"version": INTERNAL_IGNITION_VERSION}}
    if files:
        config["storage"] = {"files": [file_overwriting(p, d) for p, d in files]}
    return config


def generate_registries_machine_configs(
        inputs: ImageInputs, pools: Sequence[Mapping[str, Any]],
        existing_mcs: Sequence[Mapping[str, Any]], *,
        controller_config: Mapping[str, Any] | None = None, templates_dir: Path | None = None,
        values: Mapping[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """99-<pool>-generated-registries for every pool labelled mco-built-in (sorted by name), and
    the warnings MCO only logs. Nothing when there is no image config, ICSP or mirror set."""
    if not inputs.present:
        return [], []
    release = str(((controller_config or {}).get("spec") or {}).get("releaseImage") or "")
    render = template_renderer(controller_config, templates_dir, values)
    warnings = []
    lists = Lists()
    if inputs.image is not None:
        try:
            lists = blocked_and_allowed(release, registry_sources(inputs.image),
                                        [e.set for e in digest_entries(inputs)])
        except MachineConfigError as e:
            raise inputs.image.error(str(e), "spec.registrySources") from e
        if lists.warning:
            warnings.append(f"{inputs.image.file}: {lists.warning}")
    owner: dict[str, Any] = {"apiVersion": IMAGE_API_VERSION, "kind": IMAGE}
    if inputs.image is not None:
        owner["name"] = inputs.image.name
        uid = (inputs.image.obj.get("metadata") or {}).get("uid")
        if uid:
            owner["uid"] = uid
    out = []
    for pool in sorted(pools, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        meta = pool.get("metadata") or {}
        if BUILT_IN_LABEL not in (meta.get("labels") or {}):
            continue
        name = str(meta.get("name"))
        try:
            ign = registries_ignition(inputs, lists, name, release, existing_mcs, render)
        except InputError:
            raise
        except MachineConfigError as e:
            raise InputError(str(e), file=inputs.file) from e
        mc = generated_machine_config(f"99-{name}-generated-registries", name, ign)
        mc["metadata"]["ownerReferences"] = [dict(owner)]
        out.append(mc)
    return out, warnings
