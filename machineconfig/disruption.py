"""What an update between two MachineConfigs changes and what it costs a node.

MCO's machineConfigDiff and its Node Disruption Policy rules (default policy table, user policies,
longest-path match, the registries.conf "safe change" rule, the drain decision). Shared by the
daemon, which acts on it, and the controller's `mcc plan`, which predicts it.
"""
from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machineconfig.errors import MachineConfigError
from machineconfig.ignition.dataurl import decode_contents
from machineconfig.reconcile import AnyConfig
from machineconfig.rendered_config import RenderedConfig
from machineconfig.yamlload import safe_load

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MachineConfigDiff:
    """Booleans per section (as MCO) and the changed file paths and unit names."""

    os_update: bool = False
    kargs: bool = False
    fips: bool = False
    passwd: bool = False
    kernel_type: bool = False
    extensions: bool = False
    files_added: tuple[str, ...] = ()
    files_changed: tuple[str, ...] = ()
    files_removed: tuple[str, ...] = ()
    units_added: tuple[str, ...] = ()
    units_changed: tuple[str, ...] = ()
    units_removed: tuple[str, ...] = ()

    @property
    def files(self) -> bool:
        return bool(self.files_added or self.files_changed or self.files_removed)

    @property
    def units(self) -> bool:
        return bool(self.units_added or self.units_changed or self.units_removed)

    @property
    def file_paths(self) -> tuple[str, ...]:
        return tuple(sorted({*self.files_added, *self.files_changed, *self.files_removed}))

    @property
    def unit_names(self) -> tuple[str, ...]:
        return tuple(sorted({*self.units_added, *self.units_changed, *self.units_removed}))

    @property
    def os_level(self) -> bool:
        """OS-level changes (rpm-ostree applies them; kernel arguments also a GRUB drop-in), which
        always reboot."""
        return self.os_update or self.kargs or self.kernel_type or self.extensions

    @property
    def is_empty(self) -> bool:
        return not (self.os_level or self.fips or self.passwd or self.files or self.units)


def files_by_path(ign: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["path"]: entry for entry in (ign.get("storage") or {}).get("files") or []}


def units_by_name(ign: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {unit["name"]: unit for unit in (ign.get("systemd") or {}).get("units") or []}


def canonical_kernel_type(value: object) -> str:
    # "" and "default" mean the same stock kernel
    return str(value or "default")


def _list_changed(old: object, new: object) -> bool:
    # two empty lists (or absent fields) are no change
    return (old or []) != (new or [])


def _keyed_diff(old: Mapping[str, Any], new: Mapping[str, Any]
                ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    added = tuple(sorted(set(new) - set(old)))
    removed = tuple(sorted(set(old) - set(new)))
    changed = tuple(sorted(key for key in set(old) & set(new) if old[key] != new[key]))
    return added, changed, removed


def compute_diff(old_mc: AnyConfig, new_mc: AnyConfig, force: bool = False) -> MachineConfigDiff:
    """The difference between two MachineConfigs; `force` (the forcefile) means an OS update."""
    old, new = RenderedConfig.of(old_mc), RenderedConfig.of(new_mc)
    old_spec, new_spec, old_ign, new_ign = old.spec, new.spec, old.ignition, new.ignition
    files_added, files_changed, files_removed = _keyed_diff(files_by_path(old_ign),
                                                            files_by_path(new_ign))
    units_added, units_changed, units_removed = _keyed_diff(units_by_name(old_ign),
                                                            units_by_name(new_ign))
    diff = MachineConfigDiff(
        os_update=force or old_spec.os_image_url != new_spec.os_image_url,
        kargs=_list_changed(old_spec.kernel_arguments, new_spec.kernel_arguments),
        fips=old_spec.fips != new_spec.fips,
        passwd=(old_ign.get("passwd") or {}) != (new_ign.get("passwd") or {}),
        kernel_type=(canonical_kernel_type(old_spec.kernel_type)
                     != canonical_kernel_type(new_spec.kernel_type)),
        extensions=_list_changed(old_spec.extensions, new_spec.extensions),
        files_added=files_added, files_changed=files_changed, files_removed=files_removed,
        units_added=units_added, units_changed=units_changed, units_removed=units_removed,
    )
    log.debug("diff %s", diff)
    return diff


def decoded_contents(entry: Mapping[str, Any]) -> bytes:
    """The bytes an Ignition file entry stands for: data URL decoded, then gunzipped."""
    contents = entry.get("contents") or {}
    source = contents.get("source")
    if source is None:
        return b""
    compression = contents.get("compression") or ""
    if compression not in ("", "gzip"):
        raise ValueError(f"file {entry.get('path')}: unsupported compression {compression!r}")
    # decoded afresh each time (a capped stream): a cache of decoded bytes could hold gigabytes
    return decode_contents(source, compression, str(entry.get("path") or ""))


# --- Node Disruption Policies ----------------------------------------------------------------

REGISTRIES_CONF = "/etc/containers/registries.conf"
DIGEST_ONLY = "digest-only"


class ActionType(str, enum.Enum):
    NONE = "None"
    RELOAD = "Reload"
    RESTART = "Restart"
    DAEMON_RELOAD = "DaemonReload"
    DRAIN = "Drain"
    REBOOT = "Reboot"
    # crio reload plus a drain unless the registries.conf change is safe
    SPECIAL = "Special"


@dataclass(frozen=True)
class Action:
    type: ActionType
    service: str = ""

    def __str__(self) -> str:
        if self.type is ActionType.SPECIAL:
            return "reload crio.service (registries)"
        return f"{self.type.value.lower()} {self.service}".strip()


NONE = Action(ActionType.NONE)
REBOOT = Action(ActionType.REBOOT)
DAEMON_RELOAD = Action(ActionType.DAEMON_RELOAD)


def reload(service: str) -> Action:
    return Action(ActionType.RELOAD, service)


def restart(service: str) -> Action:
    return Action(ActionType.RESTART, service)


@dataclass(frozen=True)
class NodeDisruptionPolicy:
    """File paths (exact or parent directory), unit names and the SSH key policy -> actions."""

    files: Mapping[str, tuple[Action, ...]] = field(default_factory=dict)
    units: Mapping[str, tuple[Action, ...]] = field(default_factory=dict)
    sshkey: tuple[Action, ...] = (NONE,)


_CRIO = "crio.service"
_KUBELET = "kubelet.service"
_CA_TRUST = "coreos-update-ca-trust.service"
_IRI = "iri-registry.service"

# MCO's defaultClusterPolicies (pkg/apihelpers).
DEFAULT_POLICY = NodeDisruptionPolicy(
    files={
        "/var/lib/kubelet/config.json": (NONE,),
        "/etc/machine-config-daemon/no-reboot/containers-gpg.pub": (reload(_CRIO),),
        "/etc/containers/policy.json": (reload(_CRIO),),
        REGISTRIES_CONF: (Action(ActionType.SPECIAL),),
        "/etc/containers/registries.d": (reload(_CRIO),),
        "/etc/crio/policies": (reload(_CRIO),),
        "/etc/nmstate/openshift": (NONE,),
        "/etc/pki/ca-trust/source/anchors/openshift-config-user-ca-bundle.crt":
            (restart(_CA_TRUST), restart(_CRIO)),
        "/etc/kubernetes/credential-providers": (restart(_KUBELET),),
        "/etc/systemd/system/kubelet.service.d/40-kubelet-crio-image-credential-provider.conf":
            (DAEMON_RELOAD, restart(_KUBELET)),
        "/etc/iri-registry": (restart(_IRI),),
        "/usr/local/bin/load-registry-image.sh": (restart(_IRI),),
        "/etc/pki/ca-trust/source/anchors/iri-root-ca.crt": (restart(_CA_TRUST),),
    },
    units={_IRI: (DAEMON_RELOAD, restart(_IRI))},
    sshkey=(NONE,),
)


class PolicyError(MachineConfigError, ValueError):
    """A user policy file that does not have the nodeDisruptionPolicy shape."""


def _parse_actions(raw: object, where: str) -> tuple[Action, ...]:
    if not isinstance(raw, list) or not raw:
        raise PolicyError(f"{where}.actions: a non-empty list is required")
    actions = []
    for index, item in enumerate(raw):
        try:
            kind = ActionType(item["type"])
        except (KeyError, TypeError, ValueError):
            raise PolicyError(f"{where}.actions[{index}].type: one of "
                              f"{', '.join(t.value for t in ActionType)} is required") from None
        service = ""
        if kind in (ActionType.RELOAD, ActionType.RESTART):
            detail = item.get(kind.value.lower())
            named = detail.get("serviceName") if isinstance(detail, Mapping) else None
            if not isinstance(named, str) or not named:
                raise PolicyError(f"{where}.actions[{index}].{kind.value.lower()}.serviceName: "
                                  "required")
            service = named
        actions.append(Action(kind, service))
    return tuple(actions)


def _entries(body: Mapping[str, Any], field_name: str, key: str, where: str
             ) -> dict[str, tuple[Action, ...]]:
    raw = body.get(field_name) or []
    if not isinstance(raw, list):
        raise PolicyError(f"{where}.{field_name}: a list is required")
    out: dict[str, tuple[Action, ...]] = {}
    for index, entry in enumerate(raw):
        name = entry.get(key) if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or not name:
            raise PolicyError(f"{where}.{field_name}[{index}].{key}: a string is required")
        out[name] = _parse_actions(entry.get("actions"), f"{where}.{field_name}[{name}]")
    return out


def parse_policy(document: Mapping[str, Any], where: str = "nodeDisruptionPolicy"
                 ) -> NodeDisruptionPolicy:
    """User policies from a MachineConfiguration object or its bare `nodeDisruptionPolicy` (or
    the `clusterPolicies` the controller publishes: the same shape). PolicyError names the
    field of anything malformed."""
    if "spec" in document:
        spec = document.get("spec")
        body = spec.get("nodeDisruptionPolicy") if isinstance(spec, Mapping) else None
        where = "spec.nodeDisruptionPolicy"
    else:
        body = document
    body = body or {}
    if not isinstance(body, Mapping):
        raise PolicyError(f"{where}: a mapping is required")
    sshkey = body.get("sshkey")
    if sshkey is not None and not isinstance(sshkey, Mapping):
        raise PolicyError(f"{where}.sshkey: a mapping is required")
    return NodeDisruptionPolicy(
        files=_entries(body, "files", "path", where),
        units=_entries(body, "units", "name", where),
        sshkey=_parse_actions(sshkey.get("actions"), f"{where}.sshkey") if sshkey else (),
    )


def _action_status(action: Action) -> dict[str, Any]:
    if action.type in (ActionType.RELOAD, ActionType.RESTART):
        return {"type": action.type.value,
                action.type.value.lower(): {"serviceName": action.service}}
    return {"type": action.type.value}


def policy_status(policy: NodeDisruptionPolicy) -> dict[str, Any]:
    """`status.nodeDisruptionPolicyStatus.clusterPolicies` as MCO publishes it: the defaults in
    their order with user entries for the same path or unit in place, other user entries after."""
    return {
        "files": [{"path": path, "actions": [_action_status(a) for a in actions]}
                  for path, actions in policy.files.items()],
        "units": [{"name": name, "actions": [_action_status(a) for a in actions]}
                  for name, actions in policy.units.items()],
        "sshkey": {"actions": [_action_status(a) for a in policy.sshkey]},
    }


def load_policy(path: Path) -> NodeDisruptionPolicy:
    """The cluster policy: the defaults merged with the user policy file at `path`."""
    document = safe_load(path.read_text(), str(path)) or {}
    if not isinstance(document, dict):
        raise PolicyError(f"{path}: a MachineConfiguration object is required")
    return merge_policies(DEFAULT_POLICY, parse_policy(document))


def merge_policies(defaults: NodeDisruptionPolicy,
                   user: NodeDisruptionPolicy) -> NodeDisruptionPolicy:
    # a user entry for the same path or unit replaces the default one
    return NodeDisruptionPolicy(files={**defaults.files, **user.files},
                                units={**defaults.units, **user.units},
                                sshkey=user.sshkey or defaults.sshkey)


def match_file_policy(policy: NodeDisruptionPolicy, path: str) -> tuple[Action, ...] | None:
    """The actions of the longest policy path equal to `path` or a parent directory of it."""
    best: str | None = None
    for candidate in policy.files:
        prefix = candidate.rstrip("/")
        if (path == candidate or path.startswith(prefix + "/")) and (
                best is None or len(candidate) > len(best)):
            best = candidate
    return policy.files[best] if best is not None else None


def post_config_actions(diff: MachineConfigDiff, policy: NodeDisruptionPolicy = DEFAULT_POLICY,
                        force: bool = False) -> list[Action]:
    """The ordered actions after writing; `[REBOOT]` or `[NONE]` alone, or service actions."""
    if force:
        log.info("forcefile present: reboot")
        return [REBOOT]
    if diff.os_level or diff.fips:
        log.info("OS-level change (image, kargs, kernel type, extensions or FIPS): reboot")
        return [REBOOT]
    if not (diff.files or diff.units or diff.passwd):
        log.info("no file, unit or passwd change: no action")
        return [NONE]
    actions: list[Action] = []
    for path in diff.file_paths:
        matched = match_file_policy(policy, path)
        if matched is None:
            log.info("file %s matches no disruption policy: reboot", path)
            return [REBOOT]
        log.debug("file %s: %s", path, ", ".join(map(str, matched)))
        actions.extend(matched)
    for name in diff.unit_names:
        if name not in policy.units:
            log.info("unit %s matches no disruption policy: reboot", name)
            return [REBOOT]
        log.debug("unit %s: %s", name, ", ".join(map(str, policy.units[name])))
        actions.extend(policy.units[name])
    log.info("%d files and %d units matched disruption policies", len(diff.file_paths),
             len(diff.unit_names))
    if diff.passwd:
        actions.extend(policy.sshkey)
    if REBOOT in actions:
        return [REBOOT]
    # one reload of crio is enough however many files asked for it
    unique = list(dict.fromkeys(a for a in actions if a.type is not ActionType.NONE))
    return unique or [NONE]


def drain_required(actions: Sequence[Action], old_ign: Mapping[str, Any],
                   new_ign: Mapping[str, Any]) -> bool:
    """Whether the node must be drained before acting (MCO's NDP rule)."""
    kinds = {action.type for action in actions}
    if kinds & {ActionType.REBOOT, ActionType.DRAIN}:
        return True
    if ActionType.SPECIAL in kinds:
        old_file = files_by_path(old_ign).get(REGISTRIES_CONF, {})
        new_file = files_by_path(new_ign).get(REGISTRIES_CONF, {})
        safe = is_safe_registries_change(decoded_contents(old_file), decoded_contents(new_file))
        log.info("registries.conf change is %s: %s", "safe" if safe else "unsafe",
                 "no drain" if safe else "drain")
        return not safe
    return False


def _scope(registry: Mapping[str, Any]) -> str:
    return str(registry.get("prefix") or registry.get("location") or "")


def _mirrors(registry: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(m.get("location", "")): m for m in registry.get("mirror") or []}


def _all_mirrors_digest_only(registry: Mapping[str, Any]) -> bool:
    mirrors = registry.get("mirror") or []
    if not mirrors:
        return bool(registry.get("mirror-by-digest-only"))
    return all(m.get("pull-from-mirror") == DIGEST_ONLY for m in mirrors)


def is_safe_registries_change(old_text: bytes, new_text: bytes) -> bool:
    """True when crio can take the new registries.conf without running pods being drained."""
    import tomllib  # here: only a registries.conf change needs it, not every update

    try:
        old, new = tomllib.loads(old_text.decode()), tomllib.loads(new_text.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        log.info("registries.conf does not parse (%s): treated as unsafe", err)
        return False
    old_search = old.get("unqualified-search-registries") or []
    new_search = new.get("unqualified-search-registries") or []
    # lookups go in order, so only appending keeps every existing image name resolving the same
    if new_search[:len(old_search)] != old_search:
        return False
    old_regs = {_scope(r): r for r in old.get("registry") or []}
    new_regs = {_scope(r): r for r in new.get("registry") or []}
    if set(old_regs) - set(new_regs):
        return False
    for scope, new_reg in new_regs.items():
        old_reg = old_regs.get(scope)
        if old_reg is None:
            if not _all_mirrors_digest_only(new_reg):
                return False
            continue
        if old_reg == new_reg:
            continue
        if any(old_reg.get(key, False if key in ("blocked", "insecure") else "")
               != new_reg.get(key, False if key in ("blocked", "insecure") else "")
               for key in ("prefix", "location", "blocked", "insecure")):
            return False
        old_mirrors, new_mirrors = _mirrors(old_reg), _mirrors(new_reg)
        if set(old_mirrors) - set(new_mirrors):
            return False
        for location, mirror in new_mirrors.items():
            pull = mirror.get("pull-from-mirror", "")
            if location in old_mirrors:
                if pull != old_mirrors[location].get("pull-from-mirror", "") and pull != DIGEST_ONLY:
                    return False
            elif pull != DIGEST_ONLY and not new_reg.get("mirror-by-digest-only"):
                return False
    return True


def describe(actions: Iterable[Action], drain: bool) -> str:
    """One line for `mcd plan` and the logs: "drain, reboot" or "reload crio.service"."""
    words = [str(a) for a in actions]
    return ", ".join((["drain"] if drain else []) + words) or "none"
