"""Translation between spec versions on canonical dicts: upstream's up-steps, refusing down-steps, 2.2 <-> 3.x."""
from __future__ import annotations

from typing import Any

import pytest

from machineconfig.errors import MachineConfigError
from machineconfig.ignition.translate import SUPPORTED_VERSIONS, TranslationError, translate


def cfg(version: str, **sections: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"ignition": {"version": version}}
    out.update(sections)
    return out


def refused(config: dict[str, Any], to: str) -> str:
    with pytest.raises(TranslationError) as info:
        translate(config, to)
    return str(info.value)


# --- up ---------------------------------------------------------------------------------------------------

def test_error_type() -> None:
    assert issubclass(TranslationError, MachineConfigError)


def test_same_version_is_a_copy() -> None:
    c = cfg("3.4.0", storage={"files": [{"path": "/a"}]})
    out = translate(c, "3.4.0")
    assert out == c and out is not c


def test_v30_resources_become_resources_and_ca_source_becomes_pointer() -> None:
    c = cfg("3.0.0")
    c["ignition"].update(config={"merge": [{"source": "http://m"}], "replace": {"verification": {"hash": "sha512-x"}}},
                         security={"tls": {"certificateAuthorities": [{"verification": {"hash": "sha512-y"}}]}})
    c["storage"] = {"files": [{"path": "/f", "contents": {"compression": "gzip", "source": "data:,"}}]}
    out = translate(c, "3.1.0")
    assert out["ignition"] == {
        "config": {"merge": [{"source": "http://m"}], "replace": {"verification": {"hash": "sha512-x"}}},
        "security": {"tls": {"certificateAuthorities": [{"source": "", "verification": {"hash": "sha512-y"}}]}},
        "version": "3.1.0"}
    assert out["storage"] == c["storage"]


def test_v32_to_v33_plain_strings_become_pointers() -> None:
    c = cfg("3.2.0", storage={"raid": [{"name": "md", "devices": ["/dev/a"]}],
                              "links": [{"path": "/l"}, {"path": "/m", "target": "/t"}],
                              "luks": [{"name": "l", "clevis": {"custom": {"needsNetwork": True}}},
                                       {"name": "k", "clevis": {"tpm2": True}}]})
    out = translate(c, "3.3.0")["storage"]
    assert out["raid"] == [{"devices": ["/dev/a"], "level": "", "name": "md"}]
    assert out["links"] == [{"path": "/l", "target": ""}, {"path": "/m", "target": "/t"}]
    assert out["luks"] == [{"clevis": {"custom": {"config": "", "needsNetwork": True, "pin": ""}}, "name": "l"},
                           {"clevis": {"tpm2": True}, "name": "k"}]


def test_v35_to_v36_masks_special_bits_but_36_keeps_them() -> None:
    c = cfg("3.2.0", storage={"files": [{"path": "/f", "mode": 2541}], "directories": [{"path": "/d", "mode": 1023}]})
    out = translate(c, "3.6.0")["storage"]
    assert out == {"directories": [{"path": "/d", "mode": 511}], "files": [{"path": "/f", "mode": 493}]}
    assert translate(c, "3.5.0")["storage"]["files"][0]["mode"] == 2541
    c6 = cfg("3.6.0", storage={"files": [{"path": "/f", "mode": 2541}]})
    assert translate(c6, "3.7.0-experimental")["storage"]["files"][0]["mode"] == 2541


def test_up_chain_only_changes_version_for_plain_configs() -> None:
    c = cfg("3.0.0", passwd={"users": [{"name": "core", "sshAuthorizedKeys": ["k"]}]},
            systemd={"units": [{"name": "a.service", "enabled": True}]})
    for target in SUPPORTED_VERSIONS[2:]:
        out = translate(c, target)
        assert out["ignition"] == {"version": target}
        assert {k: v for k, v in out.items() if k != "ignition"} == {k: v for k, v in c.items() if k != "ignition"}


def test_unknown_versions_refused() -> None:
    assert "unsupported" in refused(cfg("3.5.0"), "3.6.1")
    with pytest.raises(TranslationError, match="unsupported config version"):
        translate(cfg("3.9.0"), "3.5.0")


# --- 3.x down -------------------------------------------------------------------------------------------------

def test_down_refusals_name_path_and_version() -> None:
    assert refused(cfg("3.3.0", kernelArguments={"shouldExist": ["a"]}), "3.2.0") == \
        "cannot translate to 3.2.0: $.kernelArguments is not supported before 3.3.0"
    assert refused(cfg("3.5.0", storage={"luks": [{"name": "l", "cex": {"enabled": True}}]}), "3.4.0") == \
        "cannot translate to 3.4.0: $.storage.luks.0.cex.enabled is not supported before 3.5.0"
    assert refused(cfg("3.7.0-experimental", storage={"filesystems": [{"device": "tag", "format": "virtiofs"}]}),
                   "3.6.0").startswith("cannot translate to 3.6.0: $.storage.filesystems.0.format")


@pytest.mark.parametrize(("storage", "path"), [
    ({"luks": [{"name": "l", "clevis": {"tang": [{"url": "http://t", "advertisement": "{}"}]}}]},
     "$.storage.luks.0.clevis.tang.0.advertisement"),
    ({"luks": [{"name": "l", "discard": True}]}, "$.storage.luks.0.discard"),
    ({"luks": [{"name": "l", "openOptions": ["x"]}]}, "$.storage.luks.0.openOptions"),
    ({"files": [{"path": "/f", "mode": 2541}]}, "$.storage.files.0.mode"),
    ({"files": [{"path": "/f", "contents": {"source": "arn:aws:s3:::b/k"}}]}, "$.storage.files.0.contents.source"),
])
def test_v34_to_v33_refusals(storage: dict[str, Any], path: str) -> None:
    assert refused(cfg("3.4.0", storage=storage), "3.3.0").startswith(f"cannot translate to 3.3.0: {path} ")


def test_v34_to_v33_drops_meaningless_defaults() -> None:
    c = cfg("3.4.0", storage={"luks": [{"name": "l", "discard": False,
                                        "clevis": {"tang": [{"url": "http://t", "advertisement": ""}]}}]})
    assert translate(c, "3.3.0")["storage"] == {"luks": [{"clevis": {"tang": [{"url": "http://t"}]}, "name": "l"}]}


def test_v36_to_v35_refuses_special_bits_and_new_clevis_pins() -> None:
    assert refused(cfg("3.6.0", storage={"directories": [{"path": "/d", "mode": 1023}]}), "3.5.0") == (
        "cannot translate to 3.5.0: $.storage.directories.0.mode 0o1777 has setuid/setgid/sticky bits, "
        "which are not honoured before 3.6.0")
    c = cfg("3.6.0", storage={"luks": [{"name": "l", "clevis": {"custom": {"pin": "fido", "config": "{}"}}}]})
    assert "$.storage.luks.0.clevis.custom.pin" in refused(c, "3.5.0")


def test_v35_to_v34_drops_disabled_cex_and_keeps_advertisement() -> None:
    c = cfg("3.5.0", storage={"luks": [{"name": "l", "cex": {"enabled": False},
                                        "clevis": {"tang": [{"url": "http://t", "advertisement": "{}"}]}}]})
    # ign-converter's v35tov34 also drops the tang advertisement, which 3.4 can express; we keep it
    assert translate(c, "3.4.0")["storage"] == {
        "luks": [{"clevis": {"tang": [{"advertisement": "{}", "url": "http://t"}]}, "name": "l"}]}


def test_v33_to_v32_pointers_back_to_plain_strings() -> None:
    c = cfg("3.3.0", storage={"raid": [{"name": "md", "level": "", "devices": ["/d"]}],
                              "links": [{"path": "/l", "target": ""}],
                              "luks": [{"name": "l", "clevis": {"custom": {"pin": "", "config": ""}}}]})
    assert translate(c, "3.2.0")["storage"] == {"links": [{"path": "/l"}],
                                                "luks": [{"clevis": {"custom": {}}, "name": "l"}],
                                                "raid": [{"devices": ["/d"], "name": "md"}]}
    none_fs = cfg("3.3.0", storage={"filesystems": [{"device": "/d", "format": "none"}]})
    assert "$.storage.filesystems.0.format" in refused(none_fs, "3.2.0")


@pytest.mark.parametrize(("config", "path"), [
    (cfg("3.2.0", storage={"luks": [{"name": "l"}]}), "$.storage.luks"),
    (cfg("3.2.0", passwd={"users": [{"name": "u", "shouldExist": False}]}), "$.passwd.users.0.shouldExist"),
    (cfg("3.2.0", passwd={"groups": [{"name": "g", "shouldExist": False}]}), "$.passwd.groups.0.shouldExist"),
    (cfg("3.2.0", storage={"disks": [{"device": "/d", "partitions": [{"number": 1, "resize": True}]}]}),
     "$.storage.disks.0.partitions.0.resize"),
    (cfg("3.2.0", storage={"files": [{"path": "/f", "contents": {"source": "gs://b/o"}}]}),
     "$.storage.files.0.contents.source"),
])
def test_v32_to_v31_refusals(config: dict[str, Any], path: str) -> None:
    assert refused(config, "3.1.0").startswith(f"cannot translate to 3.1.0: {path} ")


def test_v32_to_v31_drops_default_true_should_exist() -> None:
    c = cfg("3.2.0", passwd={"users": [{"name": "u", "shouldExist": True}]})
    assert translate(c, "3.1.0") == cfg("3.1.0", passwd={"users": [{"name": "u"}]})


@pytest.mark.parametrize(("ignition", "storage", "path"), [
    ({"proxy": {"httpProxy": "http://p"}}, {}, "$.ignition.proxy"),
    ({"config": {"merge": [{"source": "http://m", "compression": "gzip"}]}}, {},
     "$.ignition.config.merge.0.compression"),
    ({"config": {"replace": {"source": "http://m", "httpHeaders": [{"name": "a", "value": "b"}]}}}, {},
     "$.ignition.config.replace.httpHeaders"),
    ({}, {"filesystems": [{"device": "/d", "format": "ext4", "mountOptions": ["ro"]}]},
     "$.storage.filesystems.0.mountOptions"),
    ({}, {"files": [{"path": "/f", "append": [{"source": "http://x", "verification": {"hash": "sha256-" + "0" * 64}}]}]},
     "$.storage.files.0.append.0.verification.hash"),
])
def test_v31_to_v30_refusals(ignition: dict[str, Any], storage: dict[str, Any], path: str) -> None:
    c = cfg("3.1.0", storage=storage)
    c["ignition"].update(ignition)
    assert refused(c, "3.0.0").startswith(f"cannot translate to 3.0.0: {path} ")


def test_v31_to_v30_keeps_compression_on_file_contents() -> None:
    c = cfg("3.1.0", storage={"files": [{"path": "/f", "contents": {"compression": "gzip", "source": "data:,"},
                                         "append": [{"compression": "", "source": "data:,"}]}]})
    assert translate(c, "3.0.0")["storage"] == c["storage"]


def test_down_chain_from_latest() -> None:
    c = cfg("3.6.0", storage={"files": [{"path": "/f", "mode": 420, "contents": {"source": "data:,x"}}]})
    for target in ("3.5.0", "3.4.0", "3.3.0", "3.2.0", "3.1.0", "3.0.0"):
        assert translate(c, target) == cfg(target, storage=c["storage"])


# --- 3.x -> 2.2 -----------------------------------------------------------------------------------------------

def test_to_v22_files_overwrite_and_append_split() -> None:
    c = cfg("3.5.0", storage={"files": [
        {"path": "/etc/a", "mode": 420, "overwrite": True, "contents": {"source": "data:,a"},
         "append": [{"source": "data:,b"}, {"source": "data:,c", "compression": "gzip"}]},
        {"path": "/etc/b", "contents": {"source": "data:,x"}}]})
    assert translate(c, "2.2.0")["storage"]["files"] == [
        {"filesystem": "root", "overwrite": True, "path": "/etc/a", "contents": {"source": "data:,a"}, "mode": 420},
        {"filesystem": "root", "overwrite": False, "path": "/etc/a", "append": True,
         "contents": {"source": "data:,b"}, "mode": 420},
        {"filesystem": "root", "overwrite": False, "path": "/etc/a", "append": True,
         "contents": {"compression": "gzip", "source": "data:,c"}, "mode": 420},
        {"filesystem": "root", "overwrite": False, "path": "/etc/b", "contents": {"source": "data:,x"}}]


def test_to_v22_filesystems_named_by_path_longest_string_prefix() -> None:
    c = cfg("3.2.0", storage={
        "filesystems": [{"device": "/dev/a", "format": "xfs", "path": "/var"},
                        {"device": "/dev/b", "format": "ext4", "path": "/var/lib"},
                        {"device": "/dev/c", "format": "swap", "label": "s"}],
        "directories": [{"path": "/var/lib/x"}, {"path": "/varnish"}, {"path": "/etc"}]})
    out = translate(c, "2.2.0")["storage"]
    assert out["filesystems"] == [
        {"mount": {"device": "/dev/a", "format": "xfs"}, "name": "/var"},
        {"mount": {"device": "/dev/b", "format": "ext4"}, "name": "/var/lib"},
        {"mount": {"device": "/dev/c", "format": "swap", "label": "s"}, "name": "1"}]
    # upstream matches string prefixes, so /varnish lands on /var as "nish" (kept for compatibility)
    assert out["directories"] == [{"filesystem": "/var/lib", "path": "/x"}, {"filesystem": "/var", "path": "nish"},
                                  {"filesystem": "root", "path": "/etc"}]


def test_to_v22_other_sections() -> None:
    c = cfg("3.5.0", passwd={"users": [{"name": "core", "sshAuthorizedKeys": ["k"], "shouldExist": True}]},
            systemd={"units": [{"name": "a.service", "enabled": False, "mask": True, "contents": "x",
                                "dropins": [{"name": "d.conf", "contents": "y"}]}]},
            storage={"links": [{"path": "/l", "target": "/t", "hard": False}],
                     "disks": [{"device": "/dev/sda", "wipeTable": True,
                                "partitions": [{"number": 1, "label": "root", "shouldExist": True}]}]})
    c["ignition"]["config"] = {"merge": [{"source": "http://m"}], "replace": {}}
    out = translate(c, "2.2.0")
    assert out == {
        "ignition": {"config": {"append": [{"source": "http://m"}]}, "version": "2.2.0"},
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["k"]}]},
        "storage": {"disks": [{"device": "/dev/sda", "partitions": [{"label": "root", "number": 1}],
                               "wipeTable": True}],
                    "links": [{"filesystem": "root", "path": "/l", "target": "/t"}]},
        "systemd": {"units": [{"contents": "x", "dropins": [{"contents": "y", "name": "d.conf"}], "enabled": False,
                               "mask": True, "name": "a.service"}]}}


@pytest.mark.parametrize(("config", "path"), [
    (cfg("3.5.0", storage={"luks": [{"name": "l"}]}), "$.storage.luks"),
    (cfg("3.5.0", storage={"disks": [{"device": "/d", "partitions": [{"number": 1, "sizeMiB": 5}]}]}),
     "$.storage.disks.0.partitions.0.sizeMiB"),
    (cfg("3.5.0", storage={"disks": [{"device": "/d", "partitions": [{"number": 1, "shouldExist": False}]}]}),
     "$.storage.disks.0.partitions.0.shouldExist"),
    (cfg("3.5.0", storage={"files": [{"path": "/f", "contents": {"source": "http://x",
                                                                 "httpHeaders": [{"name": "a", "value": "b"}]}}]}),
     "$.storage.files.0.contents.httpHeaders"),
    (cfg("3.5.0", storage={"filesystems": [{"device": "/d", "format": "ext4", "mountOptions": ["ro"]}]}),
     "$.storage.filesystems.0.mountOptions"),
    (cfg("3.2.0", storage={"files": [{"path": "/f", "contents": {"source": "gs://b/o"}}]}),
     "$.storage.files.0.contents.source"),
])
def test_to_v22_refusals(config: dict[str, Any], path: str) -> None:
    assert refused(config, "2.2.0").startswith(f"cannot translate to 2.2.0: {path} ")


def test_to_v22_refuses_kernel_arguments_and_proxy() -> None:
    assert "$.kernelArguments" in refused(cfg("3.5.0", kernelArguments={"shouldExist": ["a"]}), "2.2.0")
    proxied = cfg("3.2.0")
    proxied["ignition"]["proxy"] = {"noProxy": ["x"]}
    assert "$.ignition.proxy" in refused(proxied, "2.2.0")


# --- 2.2 -> 3.x -----------------------------------------------------------------------------------------------

def v22(**sections: Any) -> dict[str, Any]:
    return cfg("2.2.0", **sections)


def test_from_v22_files_fold_appends_and_overwrite_defaults_true() -> None:
    c = v22(storage={"files": [
        {"filesystem": "root", "path": "/etc/a", "mode": 420, "contents": {"source": "data:,a"}},
        {"filesystem": "root", "path": "/etc/a", "append": True, "mode": 420, "contents": {"source": "data:,b"}},
        {"filesystem": "root", "path": "/etc/b", "overwrite": False, "mode": 384,
         "contents": {"source": "data:,c", "compression": "gzip"}},
        {"filesystem": "root", "path": "/etc/c", "append": True, "mode": 420, "contents": {"source": "data:,d"}},
        {"filesystem": "root", "path": "/etc/../etc//d", "mode": 420}]})
    assert translate(c, "3.5.0") == cfg("3.5.0", storage={"files": [
        {"overwrite": True, "path": "/etc/a", "append": [{"source": "data:,b"}], "contents": {"source": "data:,a"},
         "mode": 420},
        {"overwrite": False, "path": "/etc/b", "contents": {"compression": "gzip", "source": "data:,c"}, "mode": 384},
        {"overwrite": False, "path": "/etc/c", "append": [{"source": "data:,d"}], "mode": 420},
        {"overwrite": True, "path": "/etc/d", "contents": {"source": ""}, "mode": 420}]})


def test_from_v22_later_full_write_replaces_earlier_entry() -> None:
    c = v22(storage={"files": [
        {"filesystem": "root", "path": "/a", "mode": 420, "contents": {"source": "data:,1"}},
        {"filesystem": "root", "path": "/a", "mode": 384, "contents": {"source": "data:,2"}}]})
    assert translate(c, "3.0.0")["storage"]["files"] == [
        {"overwrite": True, "path": "/a", "contents": {"source": "data:,2"}, "mode": 384}]


def test_from_v22_ignition_passwd_units() -> None:
    c = v22(passwd={"users": [{"name": "core", "sshAuthorizedKeys": ["k"], "passwordHash": ""}],
                    "groups": [{"name": "g", "gid": 0}]},
            systemd={"units": [{"name": "a.service", "enable": True, "contents": "[Unit]"},
                               {"name": "b.service", "enabled": False, "mask": True}]})
    c["ignition"].update(config={"append": [{"source": "http://a"}], "replace": {"source": "http://r"}},
                         timeouts={"httpTotal": 3},
                         security={"tls": {"certificateAuthorities": [{"source": "http://ca"}]}})
    assert translate(c, "3.1.0") == {
        "ignition": {"config": {"merge": [{"source": "http://a"}], "replace": {"source": "http://r"}},
                     "security": {"tls": {"certificateAuthorities": [{"source": "http://ca"}]}},
                     "timeouts": {"httpTotal": 3}, "version": "3.1.0"},
        "passwd": {"groups": [{"gid": 0, "name": "g"}],
                   "users": [{"name": "core", "passwordHash": "", "sshAuthorizedKeys": ["k"]}]},
        "systemd": {"units": [{"contents": "[Unit]", "enabled": True, "name": "a.service"},
                              {"enabled": False, "mask": True, "name": "b.service"}]}}


@pytest.mark.parametrize(("config", "needle"), [
    (v22(networkd={"units": [{"name": "a.network", "contents": "x"}]}), "$.networkd"),
    (v22(storage={"filesystems": [{"name": "data", "mount": {"device": "/dev/b", "format": "xfs"}}]}),
     "$.storage.filesystems.0"),
    (v22(storage={"files": [{"filesystem": "oem", "path": "/x", "mode": 420}]}), "$.storage.files.0.filesystem"),
    (v22(storage={"disks": [{"device": "/dev/a", "partitions": [{"number": 1, "size": 2048}]}]}),
     "$.storage.disks.0.partitions.0.size"),
    (v22(storage={"files": [{"filesystem": "root", "path": "x", "mode": 420}]}), "path not absolute"),
    (v22(storage={"files": [{"filesystem": "root", "path": "/x", "mode": 420}],
                  "links": [{"filesystem": "root", "path": "/x", "target": "/y"}]}), "/x is both"),
])
def test_from_v22_refusals(config: dict[str, Any], needle: str) -> None:
    assert needle in refused(config, "3.5.0")


def test_v22_round_trip_through_v35() -> None:
    c = v22(storage={"files": [
        {"filesystem": "root", "overwrite": True, "path": "/etc/a", "mode": 420, "contents": {"source": "data:,a"}},
        {"filesystem": "root", "overwrite": False, "path": "/etc/a", "append": True, "mode": 420,
         "contents": {"source": "data:,b"}}],
        "directories": [{"filesystem": "root", "path": "/d", "mode": 493}]},
        systemd={"units": [{"name": "a.service", "enabled": True, "contents": "x"}]})
    assert translate(translate(c, "3.5.0"), "2.2.0") == c


def _vector_configs() -> list[tuple[str, dict[str, Any], str]]:
    import json
    from pathlib import Path

    from machineconfig.ignition.parse import IgnitionParseError, parse

    out = []
    for path in sorted((Path(__file__).parents[2] / "data" / "vectors" / "ignition").glob("*.json")):
        case = json.loads(path.read_text())
        try:
            result = parse(case["config"])
        except IgnitionParseError:
            continue
        out.append((path.stem, result.config, result.version))
    return out


@pytest.mark.parametrize(("name", "config", "version"), _vector_configs())
def test_vectors_translate_round_trip(name: str, config: dict[str, Any], version: str) -> None:
    from tests.unit.ignition.test_ignition_merge_translate_properties import rebound

    minor = SUPPORTED_VERSIONS.index(version) - 1
    for target in SUPPORTED_VERSIONS:
        try:
            out = translate(config, target)
        except TranslationError:
            assert target == "2.2.0" or SUPPORTED_VERSIONS.index(target) - 1 < minor, (name, target)
            continue
        assert out["ignition"]["version"] == target
        if target in ("3.5.0", "3.6.0"):
            assert rebound(out) == out
        if target != "2.2.0" and SUPPORTED_VERSIONS.index(target) - 1 > minor:
            crosses_mask = minor <= 5 < SUPPORTED_VERSIONS.index(target) - 1
            try:
                back = translate(out, version)
            except TranslationError:
                assert crosses_mask, (name, target)
                continue
            assert back == config or crosses_mask, (name, target)


def test_to_v22_config_references_need_a_source() -> None:
    c = cfg("3.5.0")
    c["ignition"]["config"] = {"merge": [{"source": ""}]}
    assert refused(c, "2.2.0") == ("cannot translate to 2.2.0: $.ignition.config.merge.0.source must be a "
                                   "non-empty URL in spec 2")
    c["ignition"]["config"] = {"replace": {"source": "http://r", "verification": {"hash": "sha512-" + "0" * 128}}}
    assert translate(c, "2.2.0")["ignition"]["config"] == c["ignition"]["config"]
    c["ignition"]["config"] = {"replace": {"verification": {"hash": "sha512-" + "0" * 128}}}
    assert "$.ignition.config.replace.source" in refused(c, "2.2.0")


def test_to_v22_ign_converter_exhaustive_case() -> None:
    # ign-converter's DowntranslateConfig3_2 -> ExhaustiveConfig2_2, in canonical form
    sha = "sha512-" + "c6" * 64
    uuid = "9d6e42cd-dcef-4177-b4c6-2a0c979e3d82"
    ref = {"source": "https://example.com", "verification": {"hash": sha}}
    owner = {"user": {"id": 1000}, "group": {"name": "groupname"}}
    c = {"ignition": {"config": {"merge": [ref], "replace": ref}, "security": {"tls": {"certificateAuthorities": [ref]}},
                      "timeouts": {"httpResponseHeaders": 5, "httpTotal": 10}, "version": "3.2.0"},
         "storage": {
             "directories": [dict(owner, overwrite=True, path="/rootdir", mode=420)],
             "disks": [{"device": "/dev/sda", "wipeTable": True, "partitions": [
                 {"guid": uuid, "label": "var", "number": 1, "shouldExist": True, "typeGuid": uuid,
                  "wipePartitionEntry": True}]}],
             "files": [dict(owner, overwrite=False, path="/var/varfile", mode=420,
                            append=[{"compression": "gzip", **ref}]),
                       {"path": "/etc/motd", "mode": 420, "append": [{"source": "data:text/plain;base64,Zm9vCg=="}]},
                       {"path": "/empty", "mode": 420, "contents": {"source": ""}}],
             "filesystems": [{"device": "/dev/disk/by-partlabel/var", "format": "xfs", "label": "var",
                              "options": ["rw"], "path": "/var", "uuid": uuid, "wipeFilesystem": True}],
             "links": [dict(owner, overwrite=True, path="/rootlink", target="/foobar")],
             "raid": [{"devices": ["/dev/sdb", "/dev/sdc"], "level": "raid10", "name": "array", "options": ["foobar"],
                       "spares": 1}]}}
    out = translate(c, "2.2.0")
    assert out == {
        "ignition": {"config": {"append": [ref], "replace": ref}, "security": {"tls": {"certificateAuthorities": [ref]}},
                     "timeouts": {"httpResponseHeaders": 5, "httpTotal": 10}, "version": "2.2.0"},
        "storage": {
            "directories": [{"filesystem": "root", "group": {"name": "groupname"}, "overwrite": True,
                             "path": "/rootdir", "user": {"id": 1000}, "mode": 420}],
            "disks": [{"device": "/dev/sda", "partitions": [{"guid": uuid, "label": "var", "number": 1,
                                                             "typeGuid": uuid}], "wipeTable": True}],
            "files": [{"filesystem": "/var", "group": {"name": "groupname"}, "overwrite": False, "path": "/varfile",
                       "user": {"id": 1000}, "append": True,
                       "contents": {"compression": "gzip", "source": "https://example.com",
                                    "verification": {"hash": sha}}, "mode": 420},
                      {"filesystem": "root", "overwrite": False, "path": "/etc/motd", "append": True,
                       "contents": {"source": "data:text/plain;base64,Zm9vCg=="}, "mode": 420},
                      {"filesystem": "root", "overwrite": False, "path": "/empty", "mode": 420}],
            "filesystems": [{"mount": {"device": "/dev/disk/by-partlabel/var", "format": "xfs", "label": "var",
                                       "options": ["rw"], "uuid": uuid, "wipeFilesystem": True}, "name": "/var"}],
            "links": [{"filesystem": "root", "group": {"name": "groupname"}, "overwrite": True, "path": "/rootlink",
                       "user": {"id": 1000}, "target": "/foobar"}],
            "raid": [{"devices": ["/dev/sdb", "/dev/sdc"], "level": "raid10", "name": "array", "options": ["foobar"],
                      "spares": 1}]}}
    # key order is Go's marshal order, so the JSON text matches too
    assert list(out["storage"]["files"][0]) == ["filesystem", "group", "overwrite", "path", "user", "append",
                                                "contents", "mode"]


def test_from_v22_ign_converter_exhaustive_case_root_parts() -> None:
    # ign-converter's ExhaustiveConfig2_3 -> ExhaustiveConfig3_0, minus the non-root filesystem (MCO maps
    # only "root") and the 2.3-only partition fields, in canonical form
    sha = "sha512-" + "c6" * 64
    uuid = "9d6e42cd-dcef-4177-b4c6-2a0c979e3d82"
    ref = {"source": "https://example.com", "verification": {"hash": sha}}
    c = {"ignition": {"config": {"append": [ref], "replace": ref}, "security": {"tls": {"certificateAuthorities": [ref]}},
                      "timeouts": {"httpResponseHeaders": 5, "httpTotal": 10}, "version": "2.2.0"},
         "storage": {
             "disks": [{"device": "/dev/sda", "partitions": [{"guid": uuid, "label": "var", "number": 1,
                                                              "typeGuid": uuid}], "wipeTable": True}],
             "raid": [{"devices": ["/dev/sdb", "/dev/sdc"], "level": "raid10", "name": "array", "options": ["foobar"],
                       "spares": 1}],
             "files": [{"filesystem": "root", "path": "/empty", "mode": 420}],
             "directories": [{"filesystem": "root", "group": {"name": "groupname"}, "overwrite": True,
                              "path": "/rootdir", "user": {"id": 1000}, "mode": 420}],
             "links": [{"filesystem": "root", "group": {"name": "groupname"}, "overwrite": True, "path": "/rootlink",
                        "user": {"id": 1000}, "target": "/foobar"}]}}
    owner = {"group": {"name": "groupname"}, "user": {"id": 1000}}
    assert translate(c, "3.0.0") == {
        "ignition": {"config": {"merge": [ref], "replace": ref}, "security": {"tls": {"certificateAuthorities": [ref]}},
                     "timeouts": {"httpResponseHeaders": 5, "httpTotal": 10}, "version": "3.0.0"},
        "storage": {
            "directories": [dict(owner, overwrite=True, path="/rootdir", mode=420)],
            "disks": [{"device": "/dev/sda", "partitions": [{"guid": uuid, "label": "var", "number": 1,
                                                             "typeGuid": uuid}], "wipeTable": True}],
            "files": [{"overwrite": True, "path": "/empty", "contents": {"source": ""}, "mode": 420}],
            "links": [dict(owner, overwrite=True, path="/rootlink", target="/foobar")],
            "raid": [{"devices": ["/dev/sdb", "/dev/sdc"], "level": "raid10", "name": "array", "options": ["foobar"],
                      "spares": 1}]}}
