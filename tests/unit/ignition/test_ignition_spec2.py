"""Spec 2.2: decoding into canonical dicts (Go json semantics) and the legacy validator's main rules."""
from __future__ import annotations

import json
from typing import Any

import pytest

from machineconfig.errors import InputError
from machineconfig.ignition.spec2 import parse_v2, validate_v2

MCO_LIKE = """{
  "ignition": {"version": "2.2.0", "config": {}, "security": {"tls": {}}, "timeouts": {}},
  "networkd": {},
  "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["ssh-rsa AAA"]}]},
  "storage": {"files": [{"filesystem": "root", "path": "/etc/kubernetes/kubelet.conf",
                         "contents": {"source": "data:,hello%20world", "verification": {}},
                         "mode": 420, "user": {"name": "root"}, "overwrite": null}]},
  "systemd": {"units": [{"name": "kubelet.service", "enabled": true, "contents": "[Unit]\\n"},
                        {"name": "x.service", "enable": false, "mask": false, "dropins": []}]}
}"""


def test_mco_like_config_canonical() -> None:
    assert parse_v2(json.loads(MCO_LIKE)) == {
        "ignition": {"version": "2.2.0"},
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["ssh-rsa AAA"]}]},
        "storage": {"files": [{"filesystem": "root", "path": "/etc/kubernetes/kubelet.conf", "user": {"name": "root"},
                               "contents": {"source": "data:,hello%20world"}, "mode": 420}]},
        "systemd": {"units": [{"contents": "[Unit]\n", "enabled": True, "name": "kubelet.service"},
                              {"name": "x.service"}]}}


def test_keys_case_insensitive_last_wins_and_unknown_dropped() -> None:
    raw = {"Ignition": {"VERSION": "2.2.0"}, "passwd": {"users": [{"NAME": "a", "name": "b", "bogus": 1}]}}
    assert parse_v2(raw) == {"ignition": {"version": "2.2.0"}, "passwd": {"users": [{"name": "b"}]}}


def test_pointer_fields_keep_zero_values() -> None:
    raw = {"ignition": {"version": "2.2.0", "timeouts": {"httpTotal": 0}},
           "passwd": {"users": [{"name": "a", "passwordHash": "", "uid": 0}]},
           "systemd": {"units": [{"name": "a.service", "enabled": False}]}}
    assert parse_v2(raw)["passwd"] == {"users": [{"name": "a", "passwordHash": "", "uid": 0}]}
    assert parse_v2(raw)["systemd"] == {"units": [{"enabled": False, "name": "a.service"}]}
    assert parse_v2(raw)["ignition"] == {"timeouts": {"httpTotal": 0}, "version": "2.2.0"}
    # replace {} is a pointer to an empty reference; its empty source then fails the URL rule
    with pytest.raises(InputError, match="replace.source: invalid url scheme"):
        parse_v2(dict(raw, ignition={"version": "2.2.0", "config": {"replace": {}}}))


@pytest.mark.parametrize("raw", [
    {"ignition": {"version": "2.2.0"}, "storage": {"files": [{"mode": "420"}]}},
    {"ignition": {"version": "2.2.0"}, "storage": {"files": [{"mode": True}]}},
    {"ignition": {"version": "2.2.0"}, "systemd": {"units": [{"enabled": "true"}]}},
    {"ignition": {"version": "2.2.0"}, "storage": []},
    {"ignition": {"version": 2}},
])
def test_type_mismatch_is_fatal(raw: dict[str, Any]) -> None:
    with pytest.raises(InputError, match="cannot unmarshal|expected"):
        parse_v2(raw)


@pytest.mark.parametrize("version", ["2.1.0", "3.0.0", None])
def test_only_22_accepted(version: str | None) -> None:
    with pytest.raises(InputError, match="unsupported config version"):
        parse_v2({"ignition": {"version": version}})


def v22(**storage: Any) -> dict[str, Any]:
    return {"ignition": {"version": "2.2.0"}, "storage": storage}


@pytest.mark.parametrize(("config", "entry"), [
    (v22(files=[{"path": "/a", "mode": 420}]), "error at $.storage.files.0.filesystem: no filesystem specified"),
    (v22(files=[{"filesystem": "root", "path": "a", "mode": 420}]),
     "error at $.storage.files.0.path: path not absolute"),
    (v22(files=[{"filesystem": "root", "path": "/a"}]),
     "warning at $.storage.files.0.mode: permissions unset, defaulting to 0644"),
    (v22(directories=[{"filesystem": "root", "path": "/a"}]),
     "warning at $.storage.directories.0.mode: permissions unset, defaulting to 0755"),
    (v22(files=[{"filesystem": "root", "path": "/a", "mode": 4096}]),
     "error at $.storage.files.0.mode: illegal file mode"),
    (v22(files=[{"filesystem": "data", "path": "/a", "mode": 420}]),
     'warning at $.storage.files.0.filesystem: File "/a" references nonexistent filesystem "data". '
     "(This is ok if it is defined in a referenced config)"),
    (v22(files=[{"filesystem": "root", "path": "/a", "mode": 420, "contents": {"source": "ftp://x"}}]),
     "error at $.storage.files.0.contents.source: invalid url scheme"),
    (v22(files=[{"filesystem": "root", "path": "/a", "mode": 420, "contents": {"compression": "xz"}}]),
     "error at $.storage.files.0.contents.compression: invalid compression method"),
    (v22(files=[{"filesystem": "root", "path": "/a", "mode": 420,
                 "contents": {"source": "http://x", "verification": {"hash": "sha256-" + "0" * 64}}}]),
     "error at $.storage.files.0.contents.verification.hash: unrecognized hash function"),
    (v22(files=[{"filesystem": "root", "path": "/a", "mode": 420, "append": True, "overwrite": True}]),
     "error at $.storage.files.0.overwrite: cannot set both append and overwrite to true"),
    (v22(filesystems=[{"name": "a", "path": "/x"}, {"name": "a", "path": "/y"}]),
     'warning at $.storage.filesystems.1.name: Filesystem "a" shadows exising filesystem definition'),
    (v22(filesystems=[{"name": "a"}]), "error at $.storage.filesystems.0: filesystem is missing mount or path"),
    (v22(filesystems=[{"name": "a", "mount": {"device": "/dev/a", "format": "zfs"}}]),
     "error at $.storage.filesystems.0.mount.format: invalid filesystem format"),
    (v22(filesystems=[{"name": "a", "mount": {"device": "/dev/a", "format": "xfs", "label": "x" * 13}}]),
     "error at $.storage.filesystems.0.mount.label: filesystem labels cannot be longer than 12 characters when "
     "using xfs"),
    (v22(raid=[{"name": "md", "level": "raid0", "spares": 1, "devices": ["/d"]}]),
     "error at $.storage.raid.0.spares: spares unsupported for linear and raid0 arrays"),
    (v22(raid=[{"name": "md", "level": "raid9", "devices": ["/d"]}]),
     "error at $.storage.raid.0.level: unrecognized raid level"),
    (v22(disks=[{"device": "/d", "partitions": [{"number": 1}, {"number": 1}]}]),
     "error at $.storage.disks.0.partitions.1: partition numbers collide"),
    (v22(disks=[{"device": "/d", "partitions": [{"number": 1, "start": 10, "size": 10},
                                                 {"number": 2, "start": 15, "size": 10}]}]),
     "error at $.storage.disks.0.partitions.1: partitions overlap"),
    (v22(disks=[{"device": "/d", "partitions": [{"label": "a:b", "typeGuid": "nope"}]}]),
     "error at $.storage.disks.0.partitions.0.label: partition label will be truncated to text before the colon"),
])
def test_validation_entries(config: dict[str, Any], entry: str) -> None:
    assert entry in validate_v2(config)


def test_units_and_networkd_rules() -> None:
    config = {"ignition": {"version": "2.2.0"},
              "systemd": {"units": [{"name": "a.txt", "enable": True, "dropins": [{"name": "x"}]}]},
              "networkd": {"units": [{"name": "eth0.net", "dropins": [{"name": "y"}]}]}}
    assert validate_v2(config) == [
        "error at $.systemd.units.0.name: invalid systemd unit extension",
        "warning at $.systemd.units.0.enable: the enable field has been deprecated in favor of enabled",
        "error at $.systemd.units.0.dropins.0.name: invalid systemd drop-in extension",
        "error at $.networkd.units.0.name: invalid networkd unit extension",
        "error at $.networkd.units.0.dropins.0.name: invalid networkd drop-in extension"]


def test_data_url_errors_come_from_the_dataurl_parser() -> None:
    config = v22(files=[{"filesystem": "root", "path": "/a", "mode": 420, "contents": {"source": "data:a b"}}])
    entries = validate_v2(config)
    assert len(entries) == 1 and entries[0].startswith("error at $.storage.files.0.contents.source: ")


def test_parse_refuses_errors_but_not_warnings() -> None:
    assert parse_v2(v22(files=[{"filesystem": "root", "path": "/a"}]))["storage"]["files"] == [
        {"filesystem": "root", "path": "/a"}]
    with pytest.raises(InputError, match="path not absolute"):
        parse_v2(v22(files=[{"filesystem": "root", "path": "a", "mode": 420}]))
