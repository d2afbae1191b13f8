"""Reconcilability texts: one case per MCO rule (spec 2.7)."""
from __future__ import annotations

from typing import Any

import pytest

from machineconfig.reconcile import NotReconcilableError, check_reconcilable, reconcile_reason


def mc(name: str, ign: dict[str, Any] | None = None, fips: bool = False) -> dict[str, Any]:
    config = {"ignition": {"version": "3.5.0"}, **(ign or {})}
    return {"metadata": {"name": name}, "spec": {"config": config, "fips": fips}}


def core(**fields: Any) -> dict[str, Any]:
    return {"passwd": {"users": [{"name": "core", **fields}]}}


def test_identical_configs_are_reconcilable() -> None:
    check_reconcilable(mc("a", core(sshAuthorizedKeys=["k"])), mc("b", core(sshAuthorizedKeys=["k"])))


def test_files_and_units_changes_are_reconcilable() -> None:
    new = {"storage": {"files": [{"path": "/etc/x", "contents": {"source": "data:,x"}}]},
           "systemd": {"units": [{"name": "a.service", "enabled": True}]},
           "storage_luks_ignored": None}
    check_reconcilable(mc("a"), mc("b", new))


@pytest.mark.parametrize(("old", "new", "reason"), [
    ({}, {"passwd": {"groups": [{"name": "g"}]}},
     "invalid passwd change(s): ignition Passwd Groups section contains changes"),
    ({}, {"passwd": {"users": [{"name": "alice", "sshAuthorizedKeys": ["k"]}]}},
     "invalid passwd change(s): ignition passwd user section contains unsupported changes: "
     "non-core user"),
    ({}, core(sshAuthorizedKeys=["k"], uid=1000),
     "invalid passwd change(s): SSH keys and password hash are not reconcilable"),
    ({}, core(homeDir="/home/core"),
     "invalid passwd change(s): ignition passwd user section contains unsupported changes: "
     "user must be core and have 1 or more sshKeys"),
    ({}, {"kernelArguments": {"shouldExist": ["quiet"]}}, "ignition kargs section contains changes"),
    ({}, {"storage": {"disks": [{"device": "/dev/sdb"}]}}, "ignition disks section contains changes"),
    ({}, {"storage": {"filesystems": [{"device": "/dev/sdb1", "format": "xfs"}]}},
     "ignition filesystems section contains changes"),
    ({}, {"storage": {"raid": [{"name": "md0", "level": "raid1", "devices": ["/dev/a"]}]}},
     "ignition raid section contains changes"),
    ({}, {"storage": {"directories": [{"path": "/var/d"}]}},
     "ignition directories section contains changes"),
    ({}, {"storage": {"links": [{"path": "/etc/l", "target": "/etc/t"}]}},
     "ignition links section contains changes"),
    ({}, {"storage": {"files": [{"path": "/etc/a", "append": [{"source": "data:,x"}]}]}},
     "ignition file /etc/a includes append"),
    ({}, {"storage": {"files": [{"path": "/run/machine-config-daemon-force"}]}},
     "cannot create /run/machine-config-daemon-force via Ignition"),
])
def test_unreconcilable_texts(old: dict[str, Any], new: dict[str, Any], reason: str) -> None:
    with pytest.raises(NotReconcilableError) as err:
        check_reconcilable(mc("rendered-old", old), mc("rendered-new", new))
    assert err.value.reason == reason
    assert str(err.value) == (f'new machineconfig "rendered-old" is not reconcilable against '
                              f'"rendered-new": {reason}')


def test_fips_change_text() -> None:
    with pytest.raises(NotReconcilableError) as err:
        check_reconcilable(mc("a"), mc("b", fips=True))
    assert err.value.reason == ("detected change to FIPS flag; refusing to modify FIPS on a "
                                "running cluster")


def test_password_hash_alone_is_reconcilable() -> None:
    check_reconcilable(mc("a", core(sshAuthorizedKeys=["k"])), mc("b", core(passwordHash="$6$x")))


def test_empty_user_list_is_reconcilable() -> None:
    check_reconcilable(mc("a", core(sshAuthorizedKeys=["k"])), mc("b", {"passwd": {"users": []}}))


def test_only_last_user_is_checked() -> None:
    # MCO inspects the last entry only (duplicates never get past parsing; the rule still holds)
    users = [{"name": "core", "uid": 1}, {"name": "core", "sshAuthorizedKeys": ["k"]}]
    assert reconcile_reason({}, {"passwd": {"users": users}}, False, False) is None


def test_unparsable_config_text() -> None:
    bad = {"metadata": {"name": "b"}, "spec": {"config": {"ignition": {"version": "9.9.9"}}}}
    with pytest.raises(NotReconcilableError) as err:
        check_reconcilable(mc("a"), bad)
    assert str(err.value).startswith(
        'parsing new Ignition config from machineconfig "b" failed: failed to parse Ignition '
        "config: parsing Ignition config failed: unknown version")


def test_spec_2_config_is_converted_before_comparing() -> None:
    v2 = {"metadata": {"name": "a"}, "spec": {"config": {
        "ignition": {"version": "2.2.0"},
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["k"]}]}}}}
    check_reconcilable(v2, mc("b", core(sshAuthorizedKeys=["k"])))


def test_removing_links_is_allowed() -> None:
    old = {"storage": {"links": [{"path": "/etc/l", "target": "/etc/t"}]}}
    check_reconcilable(mc("a", old), mc("b"))


def test_storage_overrides_waive_disks_filesystems_raid() -> None:
    new = {"storage": {"disks": [{"device": "/dev/sdb"}], "raid": [{"name": "md0"}],
                       "filesystems": [{"device": "/dev/sdb1"}]}}
    assert reconcile_reason({}, new, False, False, ("Disks", "FileSystems", "Raid")) is None
    assert reconcile_reason({}, new, False, False, ("Disks",)) == \
        "ignition filesystems section contains changes"


def test_directories_cannot_be_waived() -> None:
    new = {"storage": {"directories": [{"path": "/var/d"}]}}
    assert reconcile_reason({}, new, False, False, ("Disks", "FileSystems", "Raid")) == \
        "ignition directories section contains changes"
