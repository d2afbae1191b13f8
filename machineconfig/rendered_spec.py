"""The typed fields of a rendered config's spec (kernelArguments, fips, osImageURL, ...), read
without pydantic: the node daemon reads them on every `mcd apply`, and importing pydantic and
building the API models cost it more CPU than parsing both configs' specs many times over.

`api.MachineConfigSpec` stays the model of record (the controller validates its inputs with it);
this reader accepts and refuses exactly what that model does, with its first error's text and
place, which tests/unit/daemon/test_rendered_spec.py holds equal for generated inputs.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SpecFieldError(ValueError):
    """A spec field of the wrong type: `message` is pydantic's text, `where` the JSON place
    under `spec` (`.fips`, `.kernelArguments[1]`)."""

    def __init__(self, message: str, where: str) -> None:
        super().__init__(f"{where}: {message}")
        self.message = message
        self.where = where


@dataclass(frozen=True, slots=True)
class RenderedSpec:
    """What the daemon and the server read of a MachineConfig's spec besides its config."""

    os_image_url: str = ""
    base_os_extensions_container_image: str = ""
    kernel_arguments: list[str] | None = None
    extensions: list[str] | None = None
    fips: bool = False
    kernel_type: str = ""


_STRING = "Input should be a valid string"
_LIST = "Input should be a valid list"
_BOOLEAN = "Input should be a valid boolean"

# (attribute, its JSON name, kind) in api.MachineConfigSpec's field order (the order pydantic
# reports errors in); the attribute name is accepted as a key too (populate_by_name), the JSON
# name winning when both are there.
_FIELDS = (
    ("os_image_url", "osImageURL", "str"),
    ("base_os_extensions_container_image", "baseOSExtensionsContainerImage", "str"),
    ("kernel_arguments", "kernelArguments", "list"),
    ("extensions", "extensions", "list"),
    ("fips", "fips", "bool"),
    ("kernel_type", "kernelType", "str"),
)


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list):
        raise SpecFieldError(_LIST, where)
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise SpecFieldError(_STRING, f"{where}[{index}]")
    return [str(item) for item in value]


def read_spec(fields: Mapping[str, Any]) -> RenderedSpec:
    """The typed spec of `fields` (the spec without `config`); strict like the API's model: no
    coercion (`fips: "true"` is refused), null leaves a field at its default, unknown keys are
    ignored. Raises SpecFieldError for the first field of the wrong type."""
    values: dict[str, Any] = {}
    for attribute, json_name, kind in _FIELDS:
        key = json_name if fields.get(json_name) is not None else attribute
        value = fields.get(key)
        if value is None:
            continue
        where = f".{key}"
        if kind == "str":
            if not isinstance(value, str):
                raise SpecFieldError(_STRING, where)
            values[attribute] = str(value)
        elif kind == "bool":
            if not isinstance(value, bool):
                raise SpecFieldError(_BOOLEAN, where)
            values[attribute] = value
        else:
            values[attribute] = _strings(value, where)
    return RenderedSpec(**values)
