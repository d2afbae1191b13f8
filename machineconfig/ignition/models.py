"""Pydantic models of the spec 3.5 config tree (also the 3.6 shape) for typed use by renderer, server, daemon.

`Config.from_canonical(d)` / `.to_canonical()` round-trip canonical dicts exactly: None is "unset" for
nullable fields, plain fields default to their zero value, and zero/empty values are omitted on output.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    # strict: canonical dicts are already typed; lax coercion ("420" -> 420, true -> 1) would hide bugs
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


class HTTPHeader(_Model):
    name: str = ""
    value: str | None = None


class Verification(_Model):
    hash: str | None = None


class Resource(_Model):
    compression: str | None = None
    http_headers: list[HTTPHeader] = Field(default_factory=list, alias="httpHeaders")
    source: str | None = None
    verification: Verification = Field(default_factory=Verification)


class IgnitionConfig(_Model):
    merge: list[Resource] = Field(default_factory=list)
    replace: Resource = Field(default_factory=Resource)


class Proxy(_Model):
    http_proxy: str | None = Field(default=None, alias="httpProxy")
    https_proxy: str | None = Field(default=None, alias="httpsProxy")
    no_proxy: list[str] = Field(default_factory=list, alias="noProxy")


class TLS(_Model):
    certificate_authorities: list[Resource] = Field(default_factory=list, alias="certificateAuthorities")


class Security(_Model):
    tls: TLS = Field(default_factory=TLS)


class Timeouts(_Model):
    http_response_headers: int | None = Field(default=None, alias="httpResponseHeaders")
    http_total: int | None = Field(default=None, alias="httpTotal")


class Ignition(_Model):
    config: IgnitionConfig = Field(default_factory=IgnitionConfig)
    proxy: Proxy = Field(default_factory=Proxy)
    security: Security = Field(default_factory=Security)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    version: str = ""


class KernelArguments(_Model):
    should_exist: list[str] = Field(default_factory=list, alias="shouldExist")
    should_not_exist: list[str] = Field(default_factory=list, alias="shouldNotExist")


class PasswdGroup(_Model):
    gid: int | None = None
    name: str = ""
    password_hash: str | None = Field(default=None, alias="passwordHash")
    should_exist: bool | None = Field(default=None, alias="shouldExist")
    system: bool | None = None


class PasswdUser(_Model):
    gecos: str | None = None
    groups: list[str] = Field(default_factory=list)
    home_dir: str | None = Field(default=None, alias="homeDir")
    name: str = ""
    no_create_home: bool | None = Field(default=None, alias="noCreateHome")
    no_log_init: bool | None = Field(default=None, alias="noLogInit")
    no_user_group: bool | None = Field(default=None, alias="noUserGroup")
    password_hash: str | None = Field(default=None, alias="passwordHash")
    primary_group: str | None = Field(default=None, alias="primaryGroup")
    ssh_authorized_keys: list[str] = Field(default_factory=list, alias="sshAuthorizedKeys")
    shell: str | None = None
    should_exist: bool | None = Field(default=None, alias="shouldExist")
    system: bool | None = None
    uid: int | None = None


class Passwd(_Model):
    groups: list[PasswdGroup] = Field(default_factory=list)
    users: list[PasswdUser] = Field(default_factory=list)


class NodeUser(_Model):
    id: int | None = None
    name: str | None = None


class NodeGroup(_Model):
    id: int | None = None
    name: str | None = None


class _Node(_Model):
    """Fields shared by files, directories and links (upstream's embedded Node); one path key space."""

    group: NodeGroup = Field(default_factory=NodeGroup)
    overwrite: bool | None = None
    path: str = ""
    user: NodeUser = Field(default_factory=NodeUser)


class Directory(_Node):
    mode: int | None = None


class File(_Node):
    append: list[Resource] = Field(default_factory=list)
    contents: Resource = Field(default_factory=Resource)
    mode: int | None = None


class Link(_Node):
    hard: bool | None = None
    target: str | None = None


class Partition(_Model):
    guid: str | None = None
    label: str | None = None
    number: int = 0
    resize: bool | None = None
    should_exist: bool | None = Field(default=None, alias="shouldExist")
    size_mib: int | None = Field(default=None, alias="sizeMiB")
    start_mib: int | None = Field(default=None, alias="startMiB")
    type_guid: str | None = Field(default=None, alias="typeGuid")
    wipe_partition_entry: bool | None = Field(default=None, alias="wipePartitionEntry")


class Disk(_Model):
    device: str = ""
    partitions: list[Partition] = Field(default_factory=list)
    wipe_table: bool | None = Field(default=None, alias="wipeTable")


class Filesystem(_Model):
    device: str = ""
    format: str | None = None
    label: str | None = None
    mount_options: list[str] = Field(default_factory=list, alias="mountOptions")
    options: list[str] = Field(default_factory=list)
    path: str | None = None
    uuid: str | None = None
    wipe_filesystem: bool | None = Field(default=None, alias="wipeFilesystem")


class Cex(_Model):
    enabled: bool | None = None


class ClevisCustom(_Model):
    config: str | None = None
    needs_network: bool | None = Field(default=None, alias="needsNetwork")
    pin: str | None = None


class Tang(_Model):
    advertisement: str | None = None
    thumbprint: str | None = None
    url: str = ""


class Clevis(_Model):
    custom: ClevisCustom = Field(default_factory=ClevisCustom)
    tang: list[Tang] = Field(default_factory=list)
    threshold: int | None = None
    tpm2: bool | None = None


class Luks(_Model):
    cex: Cex = Field(default_factory=Cex)
    clevis: Clevis = Field(default_factory=Clevis)
    device: str | None = None
    discard: bool | None = None
    key_file: Resource = Field(default_factory=Resource, alias="keyFile")
    label: str | None = None
    name: str = ""
    open_options: list[str] = Field(default_factory=list, alias="openOptions")
    options: list[str] = Field(default_factory=list)
    uuid: str | None = None
    wipe_volume: bool | None = Field(default=None, alias="wipeVolume")


class Raid(_Model):
    devices: list[str] = Field(default_factory=list)
    level: str | None = None
    name: str = ""
    options: list[str] = Field(default_factory=list)
    spares: int | None = None


class Storage(_Model):
    directories: list[Directory] = Field(default_factory=list)
    disks: list[Disk] = Field(default_factory=list)
    files: list[File] = Field(default_factory=list)
    filesystems: list[Filesystem] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)
    luks: list[Luks] = Field(default_factory=list)
    raid: list[Raid] = Field(default_factory=list)


class Dropin(_Model):
    contents: str | None = None
    name: str = ""


class Unit(_Model):
    contents: str | None = None
    dropins: list[Dropin] = Field(default_factory=list)
    enabled: bool | None = None
    mask: bool | None = None
    name: str = ""


class Systemd(_Model):
    units: list[Unit] = Field(default_factory=list)


class Config(_Model):
    ignition: Ignition = Field(default_factory=Ignition)
    kernel_arguments: KernelArguments = Field(default_factory=KernelArguments, alias="kernelArguments")
    passwd: Passwd = Field(default_factory=Passwd)
    storage: Storage = Field(default_factory=Storage)
    systemd: Systemd = Field(default_factory=Systemd)

    @classmethod
    def from_canonical(cls, data: dict[str, Any]) -> Config:
        """Build from a canonical 3.5/3.6 dict (unknown keys are an error: canonical dicts have none)."""
        return cls.model_validate(data)

    def to_canonical(self) -> dict[str, Any]:
        """The canonical dict: unset pointers, zero plain values and empty lists/objects omitted."""
        return _canonical(self)


def _canonical(model: BaseModel) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        key = info.alias or name
        if isinstance(value, BaseModel):
            sub = _canonical(value)
            if sub:
                out[key] = sub
        elif isinstance(value, list):
            if value:
                out[key] = [_canonical(v) if isinstance(v, BaseModel) else v for v in value]
        elif value is None:
            continue
        elif value == info.default:
            continue  # a plain (non-pointer) field at its zero value, which Go's omitempty drops
        else:
            out[key] = value
    return out


__all__ = ["Cex", "Clevis", "ClevisCustom", "Config", "Directory", "Disk", "Dropin", "File", "Filesystem",
           "HTTPHeader", "Ignition", "IgnitionConfig", "KernelArguments", "Link", "Luks", "NodeGroup", "NodeUser",
           "Partition", "Passwd", "PasswdGroup", "PasswdUser", "Proxy", "Raid", "Resource", "Security", "Storage",
           "Systemd", "TLS", "Tang", "Timeouts", "Unit", "Verification"]
