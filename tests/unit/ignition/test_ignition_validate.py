"""Semantic rules of spec 3.x (spec sections 2.2-2.7), checked on canonical configs with
`validate_config` and, where positions or ordering matter, through `parse`."""
from __future__ import annotations

import json
from typing import Any

import pytest

from machineconfig.ignition.parse import IgnitionParseError, parse
from machineconfig.ignition.report import Report, ReportEntry
from machineconfig.ignition.validate import validate_config


def check(version: str = "3.6.0", **sections: Any) -> list[str]:
    config = {"ignition": {"version": version}, **sections}
    return validate_config(config, version).lines()


def files(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"files": list(entries)}


def test_report_entry_formats() -> None:
    assert str(ReportEntry("error", ("storage", "files", 0, "path"), 1, 61, "path not absolute")) == \
        "error at $.storage.files.0.path, line 1 col 61: path not absolute"
    assert str(ReportEntry("error", (), 0, 0, "x")) == "error at line 0 col 0: x"
    assert str(ReportEntry("warning", ("a",), None, None, "y")) == "warning at $.a: y"
    assert Report([ReportEntry("warning", (), 1, 1, "w")]).is_fatal is False
    assert Report([ReportEntry("error", (), 1, 1, "e")]).is_fatal is True


@pytest.mark.parametrize("path, message", [
    ("", "path not specified"), ("etc/x", "path not absolute"), ("/etc/x/", "path is not fully simplified"),
    ("/etc//x", "path is not fully simplified"), ("/etc/./x", "path is not fully simplified"),
    ("/etc/../x", "path is not fully simplified"), ("/", None), ("/etc/x", None),
])
def test_paths(path: str, message: str | None) -> None:
    expected = [f"error at $.storage.files.0.path: {message}"] if message else []
    assert check(storage=files({"path": path})) == expected


def test_device_paths() -> None:
    assert check(storage={"disks": [{"device": ""}], "raid": [{"name": "md", "level": "raid1", "devices": ["sda"]}],
                          "filesystems": [{"device": "/dev/a/", "format": "xfs"}]}) == [
        "error at $.storage.disks.0.device: disk device is required",
        "error at $.storage.filesystems.0.device: path is not fully simplified",
        "error at $.storage.raid.0.devices.0: path not absolute",
    ]


def test_modes_and_special_bits_per_version() -> None:
    assert check(storage=files({"path": "/a", "mode": 4096})) == ["error at $.storage.files.0.mode: illegal file mode"]
    assert check(storage=files({"path": "/a", "mode": -1})) == [
        "error at $.storage.files.0.mode: illegal file mode",
        "warning at $.storage.files.0.mode: setuid/setgid/sticky bits are not supported or functional in spec "
        "versions older than 3.6.0"][:1]
    assert check("3.5.0", storage={"directories": [{"path": "/d", "mode": 0o1755}]}) == [
        "warning at $.storage.directories.0.mode: setuid/setgid/sticky bits are not supported or functional in "
        "spec versions older than 3.6.0"]
    assert check("3.6.0", storage={"directories": [{"path": "/d", "mode": 0o1755}]}) == []


def test_overwrite_needs_a_source_but_empty_counts() -> None:
    assert check(storage=files({"path": "/a", "overwrite": True})) == [
        "error at $.storage.files.0.overwrite: overwrite must be false if source is unspecified"]
    assert check(storage=files({"path": "/a", "overwrite": True, "contents": {"source": ""}})) == []


def test_owner_id_and_name() -> None:
    assert check(storage=files({"path": "/a", "user": {"id": 1, "name": "core"}, "group": {"id": 1, "name": ""}})) == [
        "error at $.storage.files.0.user: cannot set both id and name"]


def test_resource_rules() -> None:
    bad = {"path": "/a", "contents": {"compression": "xz", "verification": {"hash": "sha512-" + "a" * 128}}}
    assert check(storage=files(bad)) == [
        "error at $.storage.files.0.contents.compression: invalid compression method",
        "error at $.storage.files.0.contents.verification.hash: source must be specified if verification is specified",
    ]
    hashes = [("nodash", "malformed hash specifier"), ("SHA256-" + "a" * 64, "unrecognized hash function"),
              ("sha256-" + "a" * 63, "incorrect size for hash sum"), ("sha256-" + "z" * 64, None)]
    for value, message in hashes:
        res = {"path": "/a", "contents": {"source": "", "verification": {"hash": value}}}
        expected = [f"error at $.storage.files.0.contents.verification.hash: {message}"] if message else []
        assert check(storage=files(res)) == expected
    assert check("3.0.0", storage=files({"path": "/a", "contents": {"source": "", "verification": {
        "hash": "sha256-" + "a" * 64}}})) == [
        "error at $.storage.files.0.contents.verification.hash: unrecognized hash function"]


def test_http_headers() -> None:
    res = {"source": "s3://b/k", "httpHeaders": [{"name": "", "value": "v"}, {"name": "a", "value": ""},
                                                   {"name": "b"}, {"name": "b", "value": "x"}]}
    assert check(storage=files({"path": "/a", "contents": res})) == [
        "error at $.storage.files.0.contents.httpHeaders: cannot use HTTP headers with this source scheme",
        "error at $.storage.files.0.contents.httpHeaders.0.name: HTTP header name can't be empty",
        "error at $.storage.files.0.contents.httpHeaders.1.value: unable to parse HTTP header",
        "error at $.storage.files.0.contents.httpHeaders.3: duplicate entry defined",
    ]


def test_merge_and_ca_sources() -> None:
    ign = {"version": "3.6.0", "config": {"merge": [{"source": "ftp://x"}], "replace": {"source": "gs://b/o"}},
           "security": {"tls": {"certificateAuthorities": [{"source": "http://ca"}]}}}
    assert validate_config({"ignition": ign}, "3.6.0").lines() == [
        "error at $.ignition.config.merge.0: invalid url scheme",
        "error at $.ignition.config.merge.0.source: invalid url scheme",
    ]
    assert check("3.0.0", ignition={"version": "3.0.0", "config": {"merge": [{}]},
                                    "security": {"tls": {"certificateAuthorities": [{}]}}}) == [
        "error at $.ignition.security.tls.certificateAuthorities.0.source: invalid url scheme"]


@pytest.mark.parametrize("version, source, message", [
    ("3.6.0", "HTTP://h/f", None), ("3.6.0", "tftp://h/f", None), ("3.6.0", "http:", None),
    ("3.1.0", "gs://b/k", "invalid url scheme"), ("3.2.0", "gs://b/k", None),
    ("3.3.0", "arn:aws:s3:::bucket/key", "invalid url scheme"), ("3.4.0", "arn:aws:s3:::bucket/key", None),
    ("3.6.0", "arn:aws:s3:::bucket-no-key", "invalid S3 ARN format"),
    ("3.6.0", "arn:aws:sqs:::bucket/key", "invalid S3 ARN format"),
    ("3.6.0", "arn:aws:s3:us-west-2:123456789012:accesspoint/name", "invalid S3 ARN format"),
    ("3.6.0", "s3://b/k?versionId=", "invalid S3 object VersionId"), ("3.6.0", "s3://b/k?versionId=1", None),
    ("3.6.0", "/etc/x", "invalid url scheme"), ("3.6.0", "file:///etc/x", "invalid url scheme"),
    ("3.6.0", "http://h/%zz", "unable to parse url"), ("3.6.0", "http://h/a\nb", "unable to parse url"),
    ("3.6.0", "http://h:port/", "unable to parse url"), ("3.6.0", "DATA:,x", "missing data prefix"),
    ("3.6.0", "data:,a b", "invalid data character"),
])
def test_url_rules(version: str, source: str, message: str | None) -> None:
    expected = [f"error at $.storage.files.0.contents.source: {message}"] if message else []
    assert check(version, storage=files({"path": "/a", "contents": {"source": source}})) == expected


def test_proxy() -> None:
    ign = {"version": "3.6.0", "proxy": {"httpProxy": "ftp://p", "httpsProxy": "http://p", "noProxy": ["a", "a"]}}
    assert validate_config({"ignition": ign}, "3.6.0").lines() == [
        "error at $.ignition.proxy.httpProxy: proxies must be http(s)",
        "warning at $.ignition.proxy.httpsProxy: insecure plaintext HTTP proxy specified for HTTPS resources",
        "error at $.ignition.proxy.noProxy.1: duplicate entry defined",
    ]


def test_links() -> None:
    storage = {"links": [{"path": "/l", "target": "/t"}, {"path": "/l/sub", "target": "/t"},
                         {"path": "/h", "hard": True, "target": "d", "user": {"name": ""}}],
               "files": [{"path": "/l/f"}], "directories": [{"path": "/l/d"}, {"path": "/h/d"}]}
    assert check(storage=storage) == [
        "error at $.storage.directories.0: directory path includes link in config",
        "error at $.storage.directories.1: directory path includes link in config",
        "error at $.storage.files.0: file path includes link in config",
        "error at $.storage.links.1: link path includes link in config",
        "error at $.storage.links.2: hard link target is a directory",
        "warning at $.storage.links.2.user.name: user/group ignored for hard link",
    ]
    assert check("3.3.0", storage={"links": [{"path": "/l"}]}) == [
        "error at $.storage.links.0.target: link target is required"]
    assert check("3.2.0", storage={"links": [{"path": "/l"}]}) == []


def test_systemd_path_conflicts_come_first() -> None:
    assert check(storage={"directories": [{"path": "/etc/systemd/system/a.service"}], "files": [{"path": "rel"}]},
                 systemd={"units": [{"name": "a.service", "contents": "[Unit]\n"}]}) == [
        "error at $.storage.directories.0.path: path conflicts with systemd unit or dropin",
        "error at $.storage.files.0.path: path not absolute",
    ]


def test_filesystems() -> None:
    fs = [{"device": "/dev/a", "label": "x"}, {"device": "/dev/b", "format": "ext4", "label": "L" * 17},
          {"device": "/dev/c", "format": "none"}, {"device": "/dev/d", "format": "ntfs"}]
    assert check(storage={"filesystems": fs}) == [
        "error at $.storage.filesystems.0.format: format cannot be empty when path, label, uuid, wipeFilesystem, "
        "options, or mountOptions is specified",
        "error at $.storage.filesystems.0.label: filesystem must specify format if label is specified",
        "error at $.storage.filesystems.1.label: filesystem labels cannot be longer than 16 characters when using ext4",
        "error at $.storage.filesystems.3.format: invalid filesystem format",
    ]
    assert check("3.2.0", storage={"filesystems": [{"device": "/dev/c", "format": "none"}]}) == [
        "error at $.storage.filesystems.0.format: invalid filesystem format"]


def test_virtiofs_only_in_experimental() -> None:
    fs = {"device": "t" * 37, "format": "virtiofs", "label": "x", "uuid": "u", "wipeFilesystem": True,
          "options": ["o"]}
    assert check("3.7.0-experimental", storage={"filesystems": [fs]}) == [
        "error at $.storage.filesystems.0.device: virtiofs device tag cannot be longer than 36 bytes",
        "error at $.storage.filesystems.0.label: filesystem labels cannot be set when using virtiofs",
        "error at $.storage.filesystems.0.uuid: filesystem uuid cannot be set for non-block-device filesystems",
        "error at $.storage.filesystems.0.wipeFilesystem: wipeFilesystem cannot be set for non-block-device "
        "filesystems",
        "error at $.storage.filesystems.0.options: filesystem options (mkfs) cannot be set for non-block-device "
        "filesystems",
    ]
    assert check("3.6.0", storage={"filesystems": [{"device": "tag", "format": "virtiofs"}]}) == [
        "error at $.storage.filesystems.0.device: path not absolute",
        "error at $.storage.filesystems.0.format: invalid filesystem format",
    ]


def test_filesystem_on_disks() -> None:
    storage = {"disks": [{"device": "/dev/a", "partitions": [{"number": 1}]}, {"device": "/dev/b", "wipeTable": True}],
               "filesystems": [{"device": "/dev/a", "format": "xfs"}, {"device": "/dev/b", "format": "xfs"}]}
    assert check(storage=storage) == [
        "warning at $.storage.filesystems.0.device: filesystem overwrites partitioned device",
        "warning at $.storage.filesystems.1.device: device matches disk with wipeTable enabled; filesystem will be "
        "wiped",
    ]


def test_partitions() -> None:
    parts = [{"number": 1, "label": "a", "startMiB": 10, "sizeMiB": 10}, {"number": 1, "label": "b"},
             {"number": 2, "startMiB": 15, "sizeMiB": 1}, {"label": "a"}, {"label": "x" * 37},
             {"label": "c:d", "guid": "nope"}, {}]
    assert check(storage={"disks": [{"device": "/dev/sda", "partitions": parts}]}) == [
        "error at $.storage.disks.0.partitions.1: partition numbers collide",
        "error at $.storage.disks.0.partitions.2: partitions overlap",
        "error at $.storage.disks.0.partitions.3: cannot use the same partition label twice",
        "error at $.storage.disks.0.partitions.4.label: partition labels may not exceed 36 characters",
        "error at $.storage.disks.0.partitions.5.label: partition label will be truncated to text before the colon",
        'error at $.storage.disks.0.partitions.5.guid: doesn\'t match the form "01234567-89AB-CDEF-EDCB-A98765432101"',
        "error at $.storage.disks.0.partitions.6: a partition number >= 1 or a label must be specified",
        "error at $.storage.disks.0.partitions.1: duplicate entry defined",
    ]
    assert check(storage={"disks": [{"device": "/dev/sda", "partitions": [
        {"number": 1, "shouldExist": False, "sizeMiB": 0}]}]}) == [
        "error at $.storage.disks.0.partitions.0: shouldExist specified false with other options also specified"]


def test_raid() -> None:
    raid = [{"name": "a", "level": "raid0", "spares": 1, "devices": ["/dev/x"]}, {"name": "b", "level": "raid7"},
            {"name": "c", "devices": ["/dev/y", "/dev/y"], "options": ["o", "o"]}]
    assert check(storage={"raid": raid}) == [
        "error at $.storage.raid.0.level: spares unsupported for linear and raid0 arrays",
        "error at $.storage.raid.1.level: unrecognized raid level",
        "error at $.storage.raid.1.devices: raid devices required",
        "error at $.storage.raid.2.level: raid level is required",
        "error at $.storage.raid.2.devices.1: duplicate entry defined",
    ]
    assert check("3.2.0", storage={"raid": [{"name": "c", "devices": ["/dev/y"]}]}) == [
        "error at $.storage.raid.0.level: unrecognized raid level"]


def test_luks() -> None:
    luks = {"name": "a/b", "label": "L" * 48, "keyFile": {"source": "ftp://k"},
            "clevis": {"tang": [{"url": "ftp://t", "advertisement": "{bad"}], "custom": {"pin": "tpm2", "config": "{}"}}}
    assert check(storage={"luks": [luks]}) == [
        "error at $.storage.luks.0.name: device names cannot contain slashes",
        "error at $.storage.luks.0.label: luks device labels cannot be longer than 47 characters",
        "error at $.storage.luks.0.device: disk device is required",
        "error at $.storage.luks.0.clevis: cannot use custom clevis config with tpm2, tang, or threshold",
        "error at $.storage.luks.0.keys: invalid key-file source",
        "error at $.storage.luks.0.clevis.tang.0.url: invalid url scheme",
        "error at $.storage.luks.0.clevis.tang.0.thumbprint: thumbprint is required",
        "error at $.storage.luks.0.clevis.tang.0.advertisement: advertisement is not valid JSON",
        "error at $.storage.luks.0.keyFile.source: invalid url scheme",
    ]


def test_clevis_custom_pins_per_version() -> None:
    def luks(custom: dict[str, Any]) -> dict[str, Any]:
        return {"luks": [{"name": "c", "device": "/dev/sdb", "clevis": {"custom": custom}}]}
    assert check("3.5.0", storage=luks({"pin": "foo", "config": "{}"})) == [
        "error at $.storage.luks.0.clevis.custom.pin: unsupported clevis pin"]
    assert check("3.6.0", storage=luks({"pin": "foo", "config": "{}"})) == []
    assert check("3.6.0", storage=luks({"needsNetwork": True})) == [
        "error at $.storage.luks.0.clevis.custom.pin: missing required custom clevis pin",
        "error at $.storage.luks.0.clevis.custom.config: missing required custom clevis config",
    ]


def test_cex() -> None:
    luks = {"name": "c", "device": "/dev/sdb", "cex": {"enabled": True}, "clevis": {"tpm2": True},
            "keyFile": {"source": "data:,k"}}
    assert check("3.5.0", storage={"luks": [luks]}) == [
        "error at $.storage.luks.0.cex: cannot use cex with clevis",
        "error at $.storage.luks.0.cex: cannot use key file with cex",
    ]


def test_units() -> None:
    units = [{"name": "a.Service"}, {"name": ".service"},
             {"name": "b.service", "enabled": True, "contents": "[Unit]\nA=b\n"},
             {"name": "c.service", "contents": "[Unit]x\n", "dropins": [{"name": "d.txt", "contents": "A=b"}]},
             {"name": "e.service", "contents": "[Unit]\nA"}, {"name": "f.service", "contents": "x" * 2100}]
    assert check(systemd={"units": units}) == [
        "error at $.systemd.units.0.name: invalid systemd unit extension",
        "warning at $.systemd.units.2.contents: unit \"b.service\" is enabled, but has no install section so enable "
        "does nothing",
        'error at $.systemd.units.3.contents: invalid unit content: found garbage after section name : "x"',
        "error at $.systemd.units.3.dropins.0.name: invalid systemd drop-in extension",
        "error at $.systemd.units.4.contents: invalid unit content: EOF",
        "error at $.systemd.units.5.contents: invalid unit content: line too long (max 2048 bytes)",
    ]


def test_duplicates_and_shared_key_spaces() -> None:
    assert check(storage={"directories": [{"path": "/x"}], "files": [{"path": "/x"}], "links": [
        {"path": "/x", "target": "/t"}]}, passwd={"users": [{"name": "u", "groups": ["g", "g"],
                                                              "sshAuthorizedKeys": ["k", "k"]}, {"name": "u"}]},
        kernelArguments={"shouldExist": ["a"], "shouldNotExist": ["a"]}) == [
        "error at $.kernelArguments.shouldNotExist.0: duplicate entry defined",
        "error at $.passwd.users.1: duplicate entry defined",
        "error at $.passwd.users.0.groups.1: duplicate entry defined",
        "error at $.passwd.users.0.sshAuthorizedKeys.1: duplicate entry defined",
        "error at $.storage.files.0: duplicate entry defined",
        "error at $.storage.links.0: duplicate entry defined",
    ]
    # Lists that concatenate on merge are never checked.
    assert check(storage={"files": [{"path": "/a", "append": [{"source": "data:,x"}, {"source": "data:,x"}]}],
                          "filesystems": [{"device": "/dev/a", "format": "xfs", "options": ["o", "o"],
                                           "mountOptions": ["m", "m"]}]}) == []


def test_report_order_and_positions_through_parse() -> None:
    text = json.dumps({"ignition": {"version": "3.6.0"}, "storage": {
        "files": [{"path": "rel"}, {"path": "/b", "bogus": 1}, {"path": "rel"}],
        "directories": [{"path": "rel2"}]}}, separators=(",", ":"))
    with pytest.raises(IgnitionParseError) as info:
        parse(text)
    assert info.value.reason == "config is not valid"
    assert [line.split(":", 1)[0].split(",")[0] for line in info.value.report.lines()] == [
        "error at $.storage.directories.0.path", "error at $.storage.files.0.path",
        "error at $.storage.files.2.path", "error at $.storage.files.2", "warning at $.storage.files.1.bogus"]


def test_luks_keyfile_error_is_positioned_at_the_luks_object() -> None:
    text = ('{"ignition":{"version":"3.6.0"},"storage":{"luks":[{"name":"c","device":"/dev/sdb",'
            '"keyFile":{"source":"ftp://k"}}]}}')
    with pytest.raises(IgnitionParseError) as info:
        parse(text)
    assert info.value.report.lines() == [
        "error at $.storage.luks.0.keys, line 1 col 53: invalid key-file source",
        "error at $.storage.luks.0.keyFile.source, line 1 col 104: invalid url scheme",
    ]


def test_warnings_only_parse_succeeds() -> None:
    result = parse('{"ignition":{"version":"3.6.0","proxy":{"httpsProxy":"http://p:3128"}}}')
    assert not result.report.is_fatal
    assert result.config == {"ignition": {"version": "3.6.0", "proxy": {"httpsProxy": "http://p:3128"}}}


def test_cli_checks_every_file_and_reads_stdin(tmp_path: Any, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    from mcc.cli import main

    good = tmp_path / "good.ign"
    good.write_text('{"ignition":{"version":"3.6.0"}}')
    bad = tmp_path / "bad.ign"
    bad.write_text('{"ignition":{"version":"9.9.9"}}')
    assert main(["validate", str(good), str(bad), str(good)]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", "couldn't parse config: unsupported config version\n")
    assert main(["validate", str(good)]) == 0

    class Stdin:
        buffer = io.BytesIO(b'{"ignition":{"version":"3.6.0"},"x":1}')

    monkeypatch.setattr(sys, "stdin", Stdin)
    assert main(["validate", "-"]) == 0
    assert capsys.readouterr().out == "warning at $.x, line 1 col 33: unused key x\n"


@pytest.mark.parametrize("version, reason", [
    ("3.6", "invalid config version (couldn't parse)"), ("v3.6.0", "invalid config version (couldn't parse)"),
    ("3.6.0+build", "unsupported config version"), ("3.6.0-Experimental", "unsupported config version"),
    ("3.7.0", "unsupported config version"), ("2.2.0", "unsupported config version"),
    ("3.6.0-experimental", "unsupported config version"),
])
def test_version_reasons(version: str, reason: str) -> None:
    with pytest.raises(IgnitionParseError) as info:
        parse(json.dumps({"ignition": {"version": version}}))
    assert info.value.reason == reason and len(info.value.report) == 0


@pytest.mark.parametrize("version, spec", [("03.6.0", "3.6.0"), ("3.06.0", "3.6.0"), ("3.6.00", "3.6.0"),
                                           ("3.6.0-", "3.6.0"), ("3.7.0-experimental", "3.7.0-experimental")])
def test_go_semver_quirks_accept(version: str, spec: str) -> None:
    assert parse(json.dumps({"ignition": {"version": version}})).version == spec


def test_empty_input() -> None:
    with pytest.raises(IgnitionParseError) as info:
        parse(b"")
    assert info.value.reason == "not a config (empty)"


def test_should_exist_false_with_a_label() -> None:
    disk = {"disks": [{"device": "/dev/sda", "partitions": [{"number": 3, "label": "old", "shouldExist": False}]}]}
    for version in ("3.0.0", "3.6.0", "3.7.0-experimental"):
        assert check(version, storage=disk) == [
            "error at $.storage.disks.0.partitions.0: shouldExist specified false with other options also specified"]


def test_unnumbered_partition_next_to_a_deleted_one() -> None:
    disk = {"disks": [{"device": "/dev/sda", "partitions": [{"number": 3, "shouldExist": False}, {"label": "new"}]}]}
    assert check(storage=disk) == [
        "error at $.storage.disks.0.partitions: shouldExist is false for a partition and other partition(s) has "
        "start or size 0"]
