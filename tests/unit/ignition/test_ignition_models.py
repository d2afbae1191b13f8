"""Pydantic models of the 3.5 tree: exact canonical round trip, aliases, strictness, typed access."""
from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from machineconfig.ignition.models import Config, File, Resource, Unit

FULL: dict[str, Any] = {
    "ignition": {"config": {"merge": [{"source": "http://m", "httpHeaders": [{"name": "A"}, {"name": "B", "value": ""}]}],
                            "replace": {"compression": ""}},
                 "proxy": {"httpProxy": "", "noProxy": ["x"]},
                 "security": {"tls": {"certificateAuthorities": [{"source": "data:,ca"}]}},
                 "timeouts": {"httpResponseHeaders": 0}, "version": "3.5.0"},
    "kernelArguments": {"shouldExist": ["a"], "shouldNotExist": ["b"]},
    "passwd": {"groups": [{"gid": 0, "name": "g", "shouldExist": False}],
               "users": [{"groups": ["wheel"], "homeDir": "", "name": "core", "sshAuthorizedKeys": ["k"],
                          "uid": 1000}]},
    "storage": {
        "directories": [{"group": {"id": 0}, "overwrite": False, "path": "/d", "user": {"name": ""}, "mode": 493}],
        "disks": [{"device": "/dev/sda", "partitions": [{"label": "", "number": 1, "sizeMiB": 0}], "wipeTable": False}],
        "files": [{"path": "/f", "append": [{"source": "data:,a"}], "contents": {"compression": "gzip", "source": ""},
                   "mode": 420}],
        "filesystems": [{"device": "/dev/sdb", "format": "xfs", "mountOptions": ["ro"], "path": "/var"}],
        "links": [{"path": "/l", "hard": False, "target": ""}],
        "luks": [{"cex": {"enabled": False}, "clevis": {"custom": {"config": "{}", "pin": "tpm2"}, "tpm2": True},
                  "device": "/dev/sdc", "keyFile": {"source": "data:,k"}, "name": "root", "openOptions": ["x"]}],
        "raid": [{"devices": ["/dev/a"], "level": "raid1", "name": "md", "options": ["o"], "spares": 0}]},
    "systemd": {"units": [{"contents": "", "dropins": [{"contents": "x", "name": "d.conf"}], "enabled": False,
                           "name": "a.service"}]},
}


@pytest.mark.parametrize("data", [FULL, {"ignition": {"version": "3.5.0"}},
                                  {"ignition": {"version": "3.6.0"}, "storage": {"files": [{"path": "/x"}]}}])
def test_round_trip_exact(data: dict[str, Any]) -> None:
    assert Config.from_canonical(data).to_canonical() == data


def test_round_trip_keeps_go_key_order() -> None:
    out = Config.from_canonical(FULL).to_canonical()
    assert list(out) == list(FULL)
    assert list(out["storage"]["files"][0]) == ["path", "append", "contents", "mode"]


def test_typed_access_and_nullability() -> None:
    cfg = Config.from_canonical(FULL)
    f = cfg.storage.files[0]
    assert isinstance(f, File) and f.mode == 420 and f.overwrite is None
    assert f.contents.source == "" and f.contents.compression == "gzip"
    assert cfg.storage.links[0].target == "" and cfg.storage.links[0].hard is False
    assert cfg.ignition.config.merge[0].http_headers[0].value is None
    assert cfg.kernel_arguments.should_exist == ["a"]
    assert cfg.storage.luks[0].key_file.source == "data:,k"


def test_build_by_field_name_and_serialise() -> None:
    cfg = Config(ignition={"version": "3.5.0"},  # type: ignore[arg-type]
                 systemd={"units": [Unit(name="a.service", enabled=True)]})
    cfg.storage.files.append(File(path="/etc/x", mode=384, contents=Resource(source="data:,")))
    assert cfg.to_canonical() == {
        "ignition": {"version": "3.5.0"},
        "storage": {"files": [{"path": "/etc/x", "contents": {"source": "data:,"}, "mode": 384}]},
        "systemd": {"units": [{"enabled": True, "name": "a.service"}]}}


@pytest.mark.parametrize("bad", [
    {"ignition": {"version": "3.5.0"}, "storage": {"files": [{"path": "/a", "bogus": 1}]}},
    {"ignition": {"version": "3.5.0"}, "storage": {"files": [{"path": "/a", "mode": "420"}]}},
    {"ignition": {"version": "3.5.0"}, "systemd": {"units": [{"name": "a", "enabled": 1}]}},
    {"ignition": {"version": "3.5.0"}, "storage": {"disks": [{"device": "/d", "partitions": [{"number": True}]}]}},
])
def test_unknown_keys_and_wrong_types_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Config.from_canonical(bad)


def _model_shape(annotation: Any) -> tuple[str, bool, str]:
    """(schema kind, nullable, struct ref) of a model field's annotation."""
    import types
    import typing

    from pydantic import BaseModel

    from machineconfig.ignition import schema

    args = typing.get_args(annotation)
    nullable = isinstance(annotation, types.UnionType) and type(None) in args
    if nullable:
        (annotation,) = [a for a in args if a is not type(None)]
    if typing.get_origin(annotation) is list:
        (elem,) = typing.get_args(annotation)
        return schema.LIST, False, elem.__name__ if issubclass(elem, BaseModel) else ""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return schema.STRUCT, nullable, annotation.__name__
    return {str: schema.STRING, int: schema.INT, bool: schema.BOOL}[annotation], nullable, ""


@pytest.mark.parametrize("minor", [5, 6])
def test_models_follow_the_schema_tree(minor: int) -> None:
    # the models are a hand-written typed view of the 3.5/3.6 tree: same fields, order, kinds and pointers
    from machineconfig.ignition import models, schema

    seen: set[str] = set()
    todo = ["Config"]
    while todo:
        struct = todo.pop()
        if struct in seen:
            continue
        seen.add(struct)
        model = getattr(models, struct)
        mine = [(info.alias or name, _model_shape(info.annotation)) for name, info in model.model_fields.items()]
        theirs = [(f.name, (f.kind, f.nullable, f.ref)) for f in schema.fields(struct, minor)]
        assert mine == theirs, struct
        todo.extend(f.ref for f in schema.fields(struct, minor) if f.ref)
    assert seen == set(models.__all__)  # every model is checked
