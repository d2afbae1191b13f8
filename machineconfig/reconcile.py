"""Reconcilability: can a node move from one MachineConfig to another in place?

MCO's rule set (isConfigReconcilable) with its exact error texts; shared by the controller at render
time and by the daemon before an update, where a failure means the node is Unreconcilable.
"""
from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any, TypeAlias

from machineconfig.constants import FORCE_FILE_PATH
from machineconfig.errors import MachineConfigError
from machineconfig.mcoparse import JSON, IgnitionConfigError
from machineconfig.rendered_config import RenderedConfig

log = logging.getLogger(__name__)

CORE_USER = "core"

# Names of MachineConfiguration.spec.irreconcilableValidationOverrides.storage entries.
STORAGE_OVERRIDES = ("Disks", "FileSystems", "Raid")


class NotReconcilableError(MachineConfigError):
    """The change between two configs cannot be applied to a running node.

    `reason` is MCO's inner text (e.g. "ignition disks section contains changes"); `str()` is the
    wrapped message naming both configs.
    """

    def __init__(self, old_name: str, new_name: str, reason: str,
                 message: str | None = None) -> None:
        self.old_name = old_name
        self.new_name = new_name
        self.reason = reason
        # MCO passes the names in this order; the swapped wording is its text, kept on purpose.
        super().__init__(message or f'new machineconfig "{old_name}" is not reconcilable '
                                    f'against "{new_name}": {reason}')


# A rendered config, or a MachineConfig object the callers hold as a dict (the controller's).
AnyConfig: TypeAlias = RenderedConfig | Mapping[str, Any]


def ignition_config_of(mc: AnyConfig) -> JSON:
    """The Ignition config of a MachineConfig as a 3.5.0 canonical dict, whatever spec it was
    written in (MCO's ParseAndConvertConfig); `{}` when it has none. Shared: do not modify it.

    Raises IgnitionConfigError with MCO's text when the config does not parse.
    """
    return RenderedConfig.of(mc).ignition


def check_reconcilable(old_mc: AnyConfig, new_mc: AnyConfig,
                       storage_overrides: Collection[str] = ()) -> None:
    """Raise NotReconcilableError when `new_mc` cannot be applied in place over `old_mc`."""
    old, new = RenderedConfig.of(old_mc), RenderedConfig.of(new_mc)
    configs = []
    for which, mc in (("old", old), ("new", new)):
        try:
            configs.append(mc.ignition)
        except IgnitionConfigError as err:
            raise NotReconcilableError(
                old.name, new.name, str(err),
                message=f"parsing {which} Ignition config from machineconfig "
                        f"{mc.name!r} failed: {err}".replace("'", '"')) from err
    reason = reconcile_reason(configs[0], configs[1], old.spec.fips, new.spec.fips,
                              storage_overrides)
    if reason is not None:
        log.info("config %s -> %s not reconcilable: %s", old.name, new.name, reason)
        raise NotReconcilableError(old.name, new.name, reason)


def reconcile_reason(old_ign: Mapping[str, Any], new_ign: Mapping[str, Any], old_fips: bool,
                     new_fips: bool, storage_overrides: Collection[str] = ()) -> str | None:
    """MCO's inner reason text for the first unreconcilable change, or None."""
    old_passwd, new_passwd = old_ign.get("passwd") or {}, new_ign.get("passwd") or {}
    if old_passwd != new_passwd:
        passwd_reason = _passwd_reason(old_passwd, new_passwd)
        if passwd_reason is not None:
            return f"invalid passwd change(s): {passwd_reason}"
    if old_ign.get("kernelArguments") != new_ign.get("kernelArguments"):
        return "ignition kargs section contains changes"
    old_storage, new_storage = old_ign.get("storage") or {}, new_ign.get("storage") or {}
    for key, override, label in (("disks", "Disks", "disks"),
                                 ("filesystems", "FileSystems", "filesystems"),
                                 ("raid", "Raid", "raid")):
        if override not in storage_overrides and old_storage.get(key) != new_storage.get(key):
            return f"ignition {label} section contains changes"
    if old_storage.get("directories") != new_storage.get("directories"):
        return "ignition directories section contains changes"
    # removing links is allowed so old configs that carried links can still be upgraded from
    if old_storage.get("links") != new_storage.get("links") and new_storage.get("links"):
        return "ignition links section contains changes"
    for entry in new_storage.get("files") or []:
        if entry.get("append"):
            return f"ignition file {entry.get('path')} includes append"
        if entry.get("path") == FORCE_FILE_PATH:
            return f"cannot create {FORCE_FILE_PATH} via Ignition"
    if old_fips != new_fips:
        return "detected change to FIPS flag; refusing to modify FIPS on a running cluster"
    return None


def _passwd_reason(old_passwd: Mapping[str, Any], new_passwd: Mapping[str, Any]) -> str | None:
    if old_passwd.get("groups") != new_passwd.get("groups"):
        return "ignition Passwd Groups section contains changes"
    new_users = new_passwd.get("users") or []
    if (old_passwd.get("users") or []) == new_users:
        return None
    if any(user.get("name") != CORE_USER for user in new_users):
        return "ignition passwd user section contains unsupported changes: non-core user"
    # an empty list is fine: it does not mean "delete the user"
    if not new_users:
        return None
    # like MCO, only the last entry is inspected
    last = new_users[-1]
    if "passwordHash" in last or last.get("sshAuthorizedKeys"):
        extra = set(last) - {"name", "passwordHash", "sshAuthorizedKeys"}
        if extra:
            return "SSH keys and password hash are not reconcilable"
        return None
    return ("ignition passwd user section contains unsupported changes: user must be core and "
            "have 1 or more sshKeys")
