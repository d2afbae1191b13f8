"""The rule for systemd unit, drop-in and `[Install]` names, shared by the controller (mcc
validate/render refuse them) and the daemon (mcd never writes outside the unit directory).

Ignition checks only a unit name's suffix, so `../../etc/x.service` passes its validation; systemd
itself never accepts a unit name with a `/`. `[Install]` WantedBy=/RequiredBy=/Alias= name the
links the daemon creates (`<target>.wants/<name>`, `<alias>`), so they obey the same rule.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

INSTALL_KEYS = ("WantedBy", "RequiredBy", "Alias")


def unit_name_problem(name: str, what: str = "unit") -> str | None:
    """Why `name` is not one plain file name (None when it is)."""
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        return f"{what} name {name!r} is not a plain file name"
    return None


def install_section(text: str) -> dict[str, list[str]]:
    """WantedBy/RequiredBy/Alias values of a unit file's `[Install]` section."""
    install: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Install]" and "=" in line:
            key, _, value = line.partition("=")
            if key.strip() in INSTALL_KEYS:
                install.setdefault(key.strip(), []).extend(value.split())
    return install


def unit_name_findings(config: Any) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(path under the Ignition config, message) for every bad unit, drop-in or `[Install]`
    name of an Ignition config (any spec version: the fields have the same shape)."""
    systemd = config.get("systemd") if isinstance(config, dict) else None
    units = systemd.get("units") if isinstance(systemd, dict) else None
    for i, unit in enumerate(units if isinstance(units, list) else []):
        if not isinstance(unit, dict):
            continue
        base: tuple[str | int, ...] = ("systemd", "units", i)
        name = unit.get("name")
        if isinstance(name, str) and (problem := unit_name_problem(name)):
            yield base + ("name",), problem
        dropins = unit.get("dropins")
        for j, dropin in enumerate(dropins if isinstance(dropins, list) else []):
            dname = dropin.get("name") if isinstance(dropin, dict) else None
            if isinstance(dname, str) and (problem := unit_name_problem(dname, "drop-in")):
                yield base + ("dropins", j, "name"), problem
        contents = unit.get("contents")
        if isinstance(contents, str):
            for key, values in install_section(contents).items():
                for value in values:
                    if problem := unit_name_problem(value, f"[Install] {key}"):
                        yield base + ("contents",), problem
