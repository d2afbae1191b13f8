"""machineconfig.rendered_spec: the daemon's pydantic-free reading of a MachineConfig's spec
accepts and refuses exactly what api.MachineConfigSpec (the model of record) does."""
from __future__ import annotations

import subprocess
import sys
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from machineconfig.api import MachineConfigSpec
from machineconfig.errors import InputError
from machineconfig.rendered_config import RenderedConfig
from machineconfig.rendered_spec import RenderedSpec, SpecFieldError, read_spec

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = ("osImageURL", "os_image_url", "baseOSExtensionsContainerImage",
        "base_os_extensions_container_image", "kernelArguments", "kernel_arguments",
        "extensions", "fips", "kernelType", "kernel_type", "config", "somethingElse")
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=5), st.binary(max_size=3))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.lists(st.text(max_size=3)),
                   st.tuples(st.text(max_size=3)), st.dictionaries(st.text(max_size=2), SCALARS,
                                                                   max_size=2))
ATTRIBUTES = ("os_image_url", "base_os_extensions_container_image", "kernel_arguments",
              "extensions", "fips", "kernel_type")


def _model(fields: dict[str, Any]) -> RenderedSpec | tuple[str, str]:
    try:
        spec = MachineConfigSpec.model_validate(fields)
    except ValidationError as e:
        first = e.errors()[0]
        return first["msg"], "".join(f"[{p}]" if isinstance(p, int) else f".{p}"
                                     for p in first["loc"])
    return RenderedSpec(**{name: getattr(spec, name) for name in ATTRIBUTES})


def _reader(fields: dict[str, Any]) -> RenderedSpec | tuple[str, str]:
    try:
        return read_spec(fields)
    except SpecFieldError as e:
        return e.message, e.where


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
def test_the_reader_agrees_with_the_api_model(fields: dict[str, Any]) -> None:
    assert _reader(fields) == _model(fields)


def test_known_cases_agree() -> None:
    for fields in ({}, {"fips": True, "kernelArguments": ["nosmt", "a=b"], "kernelType": "realtime",
                        "osImageURL": "quay.io/x@sha256:0", "extensions": ["usbguard"]},
                   {"fips": "true"}, {"kernelArguments": ["a", 2]}, {"kernel_arguments": ("a",)},
                   {"osImageURL": "a", "os_image_url": 2}, {"osImageURL": None, "os_image_url": 2},
                   {"fips": None, "kernelType": None}, {"fips": 1, "osImageURL": 2}):
        assert _reader(fields) == _model(fields), fields


def test_a_wrong_type_names_the_config_and_the_place() -> None:
    rc = RenderedConfig({"metadata": {"name": "rendered-x"},
                         "spec": {"config": None, "kernelArguments": ["a", 7]}})
    try:
        rc.spec
    except InputError as e:
        assert str(e) == "$.spec.kernelArguments[1]: rendered config rendered-x: " \
                         "Input should be a valid string"
    else:
        raise AssertionError("a number in kernelArguments was accepted")


def test_reading_a_rendered_config_imports_no_pydantic() -> None:
    # `mcd apply` reads both configs' specs; pydantic and the API models cost it ~0.2 s of CPU
    program = ("import sys; from machineconfig.rendered_config import RenderedConfig; "
               "rc = RenderedConfig({'metadata': {'name': 'x'}, 'spec': {'fips': False, "
               "'config': {'ignition': {'version': '3.5.0'}}}}); rc.spec; rc.ignition; "
               "print(sorted(m for m in sys.modules if m.startswith(('pydantic', 'machineconfig.api'))))")
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_the_reader_knows_every_typed_field_of_the_api_model() -> None:
    """A field added to api.MachineConfigSpec must be added to the reader too (or this fails):
    the same attributes, JSON names and kinds, in the model's order."""
    from machineconfig import rendered_spec
    kinds = {str: "str", bool: "bool", list[str] | None: "list"}
    expected = tuple((name, field.alias or field.validation_alias or name, kinds[field.annotation])
                     for name, field in MachineConfigSpec.model_fields.items() if name != "config")
    assert rendered_spec._FIELDS == expected
