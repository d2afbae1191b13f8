"""What differs between two MachineConfigs: the daemon's view of an update.

Mirrors MCO's machineConfigDiff plus the file and unit name sets the action and the writers need.
"""
from __future__ import annotations

import functools
import gzip
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from machineconfig.ignition.dataurl import decode
from machineconfig.reconcile import ignition_config_of

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
        """Changes only rpm-ostree can apply (and that always reboot)."""
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


def compute_diff(old_mc: Mapping[str, Any], new_mc: Mapping[str, Any],
                 force: bool = False) -> MachineConfigDiff:
    """The difference between two MachineConfigs; `force` (the forcefile) means an OS update."""
    old_spec, new_spec = old_mc.get("spec") or {}, new_mc.get("spec") or {}
    old_ign, new_ign = ignition_config_of(old_mc), ignition_config_of(new_mc)
    files_added, files_changed, files_removed = _keyed_diff(files_by_path(old_ign),
                                                            files_by_path(new_ign))
    units_added, units_changed, units_removed = _keyed_diff(units_by_name(old_ign),
                                                            units_by_name(new_ign))
    diff = MachineConfigDiff(
        os_update=force or old_spec.get("osImageURL", "") != new_spec.get("osImageURL", ""),
        kargs=_list_changed(old_spec.get("kernelArguments"), new_spec.get("kernelArguments")),
        fips=bool(old_spec.get("fips")) != bool(new_spec.get("fips")),
        passwd=(old_ign.get("passwd") or {}) != (new_ign.get("passwd") or {}),
        kernel_type=(canonical_kernel_type(old_spec.get("kernelType"))
                     != canonical_kernel_type(new_spec.get("kernelType"))),
        extensions=_list_changed(old_spec.get("extensions"), new_spec.get("extensions")),
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
    return _decode(source, compression)


@functools.lru_cache(maxsize=4096)
def _decode(source: str, compression: str) -> bytes:
    # an update decodes each file twice (write, then validate): decode once
    data = decode(source)
    return gzip.decompress(data) if compression == "gzip" else data
