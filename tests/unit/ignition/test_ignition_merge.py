"""Ignition merge (child over parent) on canonical 3.5 dicts: every observed upstream merge, plus edge rules."""
from __future__ import annotations

import copy
from typing import Any

from machineconfig.ignition.merge import merge

V = "3.5.0"


def cfg(**sections: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"ignition": {"version": V}}
    out.update(sections)
    return out


def test_files_contents_replaced_append_concatenated_mode_kept() -> None:
    parent = cfg(storage={"files": [{"path": "/a", "mode": 420, "contents": {"source": "p"},
                                     "append": [{"source": "p1"}]}]})
    child = cfg(storage={"files": [{"path": "/a", "contents": {"source": "c"},
                                    "append": [{"source": "p1"}, {"source": "c1"}]}]})
    assert merge(parent, child)["storage"]["files"] == [
        {"path": "/a", "append": [{"source": "p1"}, {"source": "p1"}, {"source": "c1"}],
         "contents": {"source": "c"}, "mode": 420}]


def test_child_link_displaces_parent_file() -> None:
    parent = cfg(storage={"files": [{"path": "/b", "contents": {"source": "data:,x"}}]})
    child = cfg(storage={"links": [{"path": "/b", "target": "/t"}]})
    assert merge(parent, child)["storage"] == {"links": [{"path": "/b", "target": "/t"}]}


def test_child_directory_displaces_parent_link_and_keeps_other_entries() -> None:
    parent = cfg(storage={"links": [{"path": "/x", "target": "/t"}, {"path": "/y", "target": "/u"}]})
    child = cfg(storage={"directories": [{"path": "/x", "mode": 493}]})
    assert merge(parent, child)["storage"] == {"directories": [{"path": "/x", "mode": 493}],
                                               "links": [{"path": "/y", "target": "/u"}]}


def test_units_merge_fields_and_dropins_by_name() -> None:
    parent = cfg(systemd={"units": [{"name": "a.service", "enabled": True, "contents": "[Unit]",
                                     "dropins": [{"name": "x.conf", "contents": "x"},
                                                 {"name": "y.conf", "contents": "y"}]}]})
    child = cfg(systemd={"units": [{"name": "a.service", "mask": True,
                                    "dropins": [{"name": "y.conf", "contents": "y2"},
                                                {"name": "z.conf", "contents": "z"}]}]})
    assert merge(parent, child)["systemd"]["units"] == [
        {"contents": "[Unit]", "dropins": [{"contents": "x", "name": "x.conf"}, {"contents": "y2", "name": "y.conf"},
                                           {"contents": "z", "name": "z.conf"}],
         "enabled": True, "mask": True, "name": "a.service"}]


def test_users_string_lists_union_and_new_user_appended() -> None:
    parent = cfg(passwd={"users": [{"name": "core", "sshAuthorizedKeys": ["k1", "k2"], "groups": ["wheel"]}]})
    child = cfg(passwd={"users": [{"name": "core", "sshAuthorizedKeys": ["k2", "k3"], "groups": ["docker"]},
                                  {"name": "bob"}]})
    assert merge(parent, child)["passwd"]["users"] == [
        {"groups": ["wheel", "docker"], "name": "core", "sshAuthorizedKeys": ["k1", "k2", "k3"]}, {"name": "bob"}]


def test_mco_ssh_keys_example() -> None:
    # TestMergeMachineConfigs: ["5678"] merged with ["1234"] gives ["5678", "1234"]
    parent = cfg(passwd={"users": [{"name": "core", "sshAuthorizedKeys": ["5678"]}]})
    child = cfg(passwd={"users": [{"name": "core", "sshAuthorizedKeys": ["1234"]}]})
    assert merge(parent, child)["passwd"]["users"][0]["sshAuthorizedKeys"] == ["5678", "1234"]


def test_kernel_arguments_share_one_key_space() -> None:
    parent = cfg(kernelArguments={"shouldExist": ["a", "b"], "shouldNotExist": ["c"]})
    child = cfg(kernelArguments={"shouldExist": ["c"], "shouldNotExist": ["a"]})
    assert merge(parent, child)["kernelArguments"] == {"shouldExist": ["b", "c"], "shouldNotExist": ["a"]}


def test_partitions_by_number_then_label() -> None:
    parent = cfg(storage={"disks": [{"device": "/dev/sda", "partitions": [
        {"number": 1, "label": "a", "sizeMiB": 10}, {"label": "b"}]}]})
    child = cfg(storage={"disks": [{"device": "/dev/sda", "partitions": [
        {"number": 1, "sizeMiB": 20}, {"number": 2, "label": "b"}]}]})
    assert merge(parent, child)["storage"]["disks"][0]["partitions"] == [
        {"label": "a", "number": 1, "sizeMiB": 20}, {"label": "b"}, {"label": "b", "number": 2}]


def test_filesystem_options_concatenate_format_from_child() -> None:
    parent = cfg(storage={"filesystems": [{"device": "/dev/x", "format": "ext4", "options": ["-L x"],
                                           "mountOptions": ["ro"]}]})
    child = cfg(storage={"filesystems": [{"device": "/dev/x", "format": "xfs", "options": ["-L y"],
                                          "mountOptions": ["ro"]}]})
    assert merge(parent, child)["storage"]["filesystems"] == [
        {"device": "/dev/x", "format": "xfs", "mountOptions": ["ro", "ro"], "options": ["-L x", "-L y"]}]


def test_ignition_refs_timeouts_and_replace_kept() -> None:
    parent = cfg(ignition={"version": V, "config": {"merge": [{"source": "http://a"}],
                                                    "replace": {"source": "http://r"}},
                           "timeouts": {"httpTotal": 5, "httpResponseHeaders": 3}})
    child = cfg(ignition={"version": V, "config": {"merge": [{"source": "http://a", "verification": {"hash": "h"}},
                                                             {"source": "http://b"}]},
                          "timeouts": {"httpTotal": 9}})
    assert merge(parent, child)["ignition"] == {
        "config": {"merge": [{"source": "http://a", "verification": {"hash": "h"}}, {"source": "http://b"}],
                   "replace": {"source": "http://r"}},
        "timeouts": {"httpResponseHeaders": 3, "httpTotal": 9}, "version": V}


def test_http_header_without_value_deletes_parent_header() -> None:
    headers = {"A": "1", "B": "2"}
    parent = cfg(storage={"files": [{"path": "/f", "contents": {
        "source": "http://h/f", "httpHeaders": [{"name": k, "value": v} for k, v in headers.items()]}}]})
    child = cfg(storage={"files": [{"path": "/f", "contents": {
        "httpHeaders": [{"name": "A"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}}]})
    assert merge(parent, child)["storage"]["files"][0]["contents"]["httpHeaders"] == [
        {"name": "B", "value": "3"}, {"name": "C", "value": "4"}]


def test_compression_is_inherited_unless_child_sets_it() -> None:
    parent = cfg(storage={"files": [{"path": "/f", "contents": {"compression": "gzip", "source": "data:,a"}}]})
    child = cfg(storage={"files": [{"path": "/f", "contents": {"source": "data:,b"}}]})
    assert merge(parent, child)["storage"]["files"][0]["contents"] == {"compression": "gzip", "source": "data:,b"}
    child["storage"]["files"][0]["contents"]["compression"] = ""
    assert merge(parent, child)["storage"]["files"][0]["contents"] == {"compression": "", "source": "data:,b"}


def test_nullable_child_values_win_even_when_zero() -> None:
    parent = cfg(systemd={"units": [{"name": "a.service", "enabled": True, "contents": "x"}]},
                 storage={"files": [{"path": "/f", "mode": 420, "overwrite": True}]})
    child = cfg(systemd={"units": [{"name": "a.service", "enabled": False, "contents": ""}]},
                storage={"files": [{"path": "/f", "mode": 0, "overwrite": False}]})
    out = merge(parent, child)
    assert out["systemd"]["units"] == [{"contents": "", "enabled": False, "name": "a.service"}]
    assert out["storage"]["files"] == [{"overwrite": False, "path": "/f", "mode": 0}]


def test_empty_child_object_keeps_parent_object() -> None:
    parent = cfg(storage={"files": [{"path": "/f", "user": {"name": "core"}, "contents": {"source": "s"}}]})
    child = cfg(storage={"files": [{"path": "/f", "mode": 384}]})
    assert merge(parent, child)["storage"]["files"] == [
        {"path": "/f", "user": {"name": "core"}, "contents": {"source": "s"}, "mode": 384}]


def test_raid_luks_options_append_devices_union() -> None:
    parent = cfg(storage={"raid": [{"name": "md", "devices": ["/d1"], "options": ["x"], "level": "raid1"}],
                          "luks": [{"name": "l", "options": ["o"], "openOptions": ["p"]}]})
    child = cfg(storage={"raid": [{"name": "md", "devices": ["/d1", "/d2"], "options": ["x"]}],
                         "luks": [{"name": "l", "options": ["o"], "openOptions": ["p", "q"]}]})
    out = merge(parent, child)["storage"]
    assert out["raid"] == [{"devices": ["/d1", "/d2"], "level": "raid1", "name": "md", "options": ["x", "x"]}]
    assert out["luks"] == [{"name": "l", "openOptions": ["p", "q"], "options": ["o", "o"]}]


def test_tang_merged_by_url() -> None:
    parent = cfg(storage={"luks": [{"name": "l", "clevis": {"tang": [{"url": "http://t", "thumbprint": "a"}]}}]})
    child = cfg(storage={"luks": [{"name": "l", "clevis": {"tang": [{"url": "http://t", "advertisement": "{}"}],
                                                           "threshold": 1}}]})
    assert merge(parent, child)["storage"]["luks"][0]["clevis"] == {
        "tang": [{"advertisement": "{}", "thumbprint": "a", "url": "http://t"}], "threshold": 1}


def test_version_comes_from_child_and_inputs_untouched() -> None:
    parent = cfg(storage={"files": [{"path": "/a"}]})
    child = {"ignition": {"version": "3.6.0"}, "storage": {"files": [{"path": "/a", "mode": 1}]}}
    before = copy.deepcopy((parent, child))
    out = merge(parent, child)
    assert out["ignition"]["version"] == "3.6.0"
    out["storage"]["files"][0]["mode"] = 7
    assert (parent, child) == before


def test_merge_is_not_associative_upstream() -> None:
    # (A+B)+C: B's link removes A's file, then C's file removes the link -> only C's file.
    # A+(B+C): B+C is just C's file, which then merges *with* A's file -> A's mode survives.
    a = cfg(storage={"files": [{"path": "/p", "mode": 384}]})
    b = cfg(storage={"links": [{"path": "/p", "target": "/t"}]})
    c = cfg(storage={"files": [{"path": "/p", "contents": {"source": "s"}}]})
    left = merge(merge(a, b), c)
    right = merge(a, merge(b, c))
    assert left["storage"] == {"files": [{"path": "/p", "contents": {"source": "s"}}]}
    assert right["storage"] == {"files": [{"path": "/p", "contents": {"source": "s"}, "mode": 384}]}


def test_child_duplicates_kept_and_last_one_merges() -> None:
    parent = cfg(passwd={"groups": [{"name": "g", "gid": 1}]})
    child = cfg(passwd={"groups": [{"name": "g", "gid": 2}, {"name": "g", "gid": 3}, {"name": "h"}, {"name": "h"}]})
    assert merge(parent, child)["passwd"]["groups"] == [{"gid": 3, "name": "g"}, {"name": "h"}, {"name": "h"}]


def test_no_empty_containers_in_result() -> None:
    parent = cfg(storage={"files": [{"path": "/a"}]})
    child = cfg(storage={"links": [{"path": "/a", "target": "/t"}]}, systemd={})
    out = merge(parent, child)
    assert out == {"ignition": {"version": V}, "storage": {"links": [{"path": "/a", "target": "/t"}]}}


def test_upstream_table_case_disks_files_dirs_links_users() -> None:
    # the mixed case of upstream's merge table, in canonical form
    parent = {"storage": {
        "disks": [{"device": "foo", "partitions": [{"label": "label", "number": 1, "startMiB": 4}], "wipeTable": True},
                  {"device": "bar", "wipeTable": True}],
        "files": [{"path": "/foo", "append": [{"source": "source1"}]},
                  {"path": "/bar", "contents": {"compression": "gzip"}}]},
        "passwd": {"users": [{"name": "bovik", "sshAuthorizedKeys": ["one", "two"]}]}}
    child = {"storage": {
        "disks": [{"device": "foo", "partitions": [{"label": "labelchanged", "number": 1},
                                                   {"label": "label2", "number": 2}], "wipeTable": False},
                  {"device": "bar"}, {"device": "baz", "wipeTable": True}],
        "files": [{"path": "/foo", "append": [{"source": "source1"}, {"source": "source2"}]}],
        "directories": [{"path": "/bar"}], "links": [{"path": "/baz"}]},
        "passwd": {"users": [{"name": "bovik", "sshAuthorizedKeys": ["three", "two"]}]}}
    assert merge(parent, child) == {
        "passwd": {"users": [{"name": "bovik", "sshAuthorizedKeys": ["one", "two", "three"]}]},
        "storage": {
            "directories": [{"path": "/bar"}],
            "disks": [{"device": "foo", "partitions": [{"label": "labelchanged", "number": 1, "startMiB": 4},
                                                       {"label": "label2", "number": 2}], "wipeTable": False},
                      {"device": "bar", "wipeTable": True}, {"device": "baz", "wipeTable": True}],
            "files": [{"path": "/foo", "append": [{"source": "source1"}, {"source": "source1"},
                                                  {"source": "source2"}]}],
            "links": [{"path": "/baz"}]}}


def test_upstream_table_case_unvalidated_version_from_child() -> None:
    assert merge({"ignition": {"version": "1234"}}, {"ignition": {"version": "haha"}}) == {
        "ignition": {"version": "haha"}}
    assert merge({}, {}) == {}


def _headers(*pairs: tuple[str, str | None]) -> list[dict[str, str]]:
    return [{"name": n} if v is None else {"name": n, "value": v} for n, v in pairs]


OLD = _headers(("old-header", "old-value"), ("same-header", "old-value"), ("to-remove-header", "some-value"))
NEW = _headers(("to-remove-header", None), ("new-header", "new-value"), ("same-header", "new-value"))
MERGED = _headers(("old-header", "old-value"), ("same-header", "new-value"), ("new-header", "new-value"))


def test_upstream_header_cases_merge_replace_ca_contents() -> None:
    def ign(where: str, headers: list[dict[str, str]]) -> dict[str, Any]:
        res = {"source": "http://example.com/x", "httpHeaders": headers}
        if where == "merge":
            return {"ignition": {"config": {"merge": [res]}}}
        if where == "replace":
            return {"ignition": {"config": {"replace": res}}}
        if where == "ca":
            return {"ignition": {"security": {"tls": {"certificateAuthorities": [res]}}}}
        return {"storage": {"files": [{"path": "/f", "contents": res}]}}

    for where in ("merge", "replace", "ca", "contents"):
        assert merge(ign(where, OLD), ign(where, NEW)) == ign(where, MERGED), where


def test_upstream_header_case_append_fragments_not_merged() -> None:
    old = _headers(("old-header", "old-value"), ("same-header", "old-value"))
    new = _headers(("new-header", "new-value"), ("same-header", "new-value"))
    parent = {"storage": {"files": [{"path": "/f", "append": [{"source": "u", "httpHeaders": old}]}]}}
    child = {"storage": {"files": [{"path": "/f", "append": [{"source": "u", "httpHeaders": new}]}]}}
    assert merge(parent, child)["storage"]["files"][0]["append"] == [
        {"source": "u", "httpHeaders": old}, {"source": "u", "httpHeaders": new}]


def test_merge_without_copy_shares_structure_but_equal() -> None:
    parent = cfg(storage={"files": [{"path": "/a", "mode": 420}]})
    child = cfg(storage={"files": [{"path": "/b"}]})
    shared = merge(parent, child, copy_result=False)
    assert shared == merge(parent, child)
    assert shared["storage"]["files"][0] is parent["storage"]["files"][0]
