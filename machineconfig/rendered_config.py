"""One rendered MachineConfig as it travels through the house: created by the controller, kept by
the store, served by the server, applied by the daemon.

It holds the object as stored (a Kubernetes MachineConfig), the raw bytes of `spec.config` as MCO
sees them (the Ignition JSON text that is served and parsed), and parses each part at most once:
the typed spec (`rendered_spec.RenderedSpec`) and the Ignition config converted to the internal spec
(3.5.0). Nothing else needs to look inside the object's dicts.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cached_property
from typing import Any

from machineconfig.errors import InputError
from machineconfig.ignition.decode import tree_of_object
from machineconfig.mcoparse import JSON, converted_config, raw_config
from machineconfig.rendered_spec import RenderedSpec, SpecFieldError, read_spec


class RenderedConfig:
    """A rendered MachineConfig. Immutable by convention: the object and the parsed Ignition config
    are shared (parse caches hand the same dict to every holder), so nobody modifies them."""

    def __init__(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if obj.get("kind", "MachineConfig") != "MachineConfig" or not isinstance(name, str) \
                or not name:
            raise InputError("not a MachineConfig with a name", path="$.metadata.name")
        spec = obj.get("spec")
        if spec is not None and not isinstance(spec, Mapping):
            raise InputError("spec is not an object", path="$.spec")
        self.object: Mapping[str, Any] = obj
        self.name: str = name

    @classmethod
    def of(cls, value: RenderedConfig | Mapping[str, Any]) -> RenderedConfig:
        """`value` itself when it already is one, else the config of the MachineConfig object."""
        return value if isinstance(value, RenderedConfig) else cls(value)

    @classmethod
    def from_json(cls, data: bytes | str) -> RenderedConfig:
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise InputError(f"rendered config is not JSON: {' '.join(str(e).split())[:200]}") \
                from None
        if not isinstance(obj, dict):
            raise InputError("rendered config is not a JSON object")
        return cls(obj)

    @cached_property
    def config_raw(self) -> bytes | None:
        """The raw JSON of `spec.config` MCO sees (a RawExtension), None without one; bytes
        already raw are kept as they are."""
        spec = self.object.get("spec")
        return raw_config(spec.get("config") if isinstance(spec, Mapping) else None)

    @property
    def metadata(self) -> Mapping[str, Any]:
        meta = self.object.get("metadata")
        return meta if isinstance(meta, Mapping) else {}

    @property
    def annotations(self) -> Mapping[str, str]:
        annotations = self.metadata.get("annotations")
        return annotations if isinstance(annotations, Mapping) else {}

    @property
    def labels(self) -> Mapping[str, str]:
        labels = self.metadata.get("labels")
        return labels if isinstance(labels, Mapping) else {}

    @cached_property
    def spec(self) -> RenderedSpec:
        """The typed spec (kernelArguments, extensions, fips, kernelType, osImageURL, ...); its
        `config` is left out: the Ignition config is `ignition`."""
        spec = self.object.get("spec")
        try:
            return read_spec(spec if isinstance(spec, Mapping) else {})
        except SpecFieldError as e:
            raise InputError(f"rendered config {self.name}: {e.message}",
                             path=f"$.spec{e.where}") from None

    @cached_property
    def ignition(self) -> JSON:
        """The Ignition config converted to the internal spec (MCO's ParseAndConvertConfig), `{}`
        when there is none; shared, never modify it. IgnitionConfigError with MCO's text when it
        does not parse."""
        raw = self.config_raw
        if raw is None:
            return {}
        spec = self.object.get("spec")
        config = spec.get("config") if isinstance(spec, Mapping) else None
        if isinstance(config, (bytes, bytearray)):
            return converted_config(raw)
        # the parse tree is built from the object `raw` was dumped from, not decoded again
        return converted_config(raw, lambda: tree_of_object(config, raw))

    def to_dict(self) -> dict[str, Any]:
        """The object with `spec.config` as parsed JSON (what the store and the node API write)."""
        obj = dict(self.object)
        spec = obj.get("spec")
        if isinstance(spec, Mapping) and isinstance(spec.get("config"), (bytes, bytearray)):
            obj["spec"] = {**spec, "config": json.loads(spec["config"])}
        return obj

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RenderedConfig):
            return NotImplemented
        return self.name == other.name and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"RenderedConfig({self.name!r})"
