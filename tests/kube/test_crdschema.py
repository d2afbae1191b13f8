"""tests/kube/crdschema.py against kube-apiserver's own texts.

The expected strings are the ones apiextensions-apiserver's validation tests and kube-openapi's
error formats give for the same schema and value (field: ErrorBody), so the fake kube-apiserver
answers a bad custom resource the way a real one does.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.kube import crdschema

REPO = Path(__file__).resolve().parents[2]


def crd_of(schema: dict[str, Any], kind: str = "Thing") -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Cluster",
            "names": {"kind": kind, "plural": "things", "singular": "thing", "listKind": kind + "List"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }


def errors(schema: dict[str, Any], obj: dict[str, Any]) -> set[str]:
    """The causes as kube prints field errors: '<field>: <ErrorBody>'."""
    return {f"{c['field']}: {c['message']}" for c in crdschema.validate(crd_of(schema), obj)}


INT_OR_STRING = {"type": "object", "properties": {"field": {"x-kubernetes-int-or-string": True}}}
NULLABLE_INT_OR_STRING = {
    "type": "object",
    "properties": {"field": {"x-kubernetes-int-or-string": True, "nullable": True}},
}
INT_OR_STRING_ANYOF = {
    "type": "object",
    "properties": {
        "field": {
            "x-kubernetes-int-or-string": True,
            "nullable": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
        }
    },
}


@pytest.mark.parametrize("value", [42, "foo", 2.0])
def test_int_or_string_accepts_ints_and_strings(value: Any) -> None:
    assert errors(INT_OR_STRING, {"field": value}) == set()
    assert errors(INT_OR_STRING_ANYOF, {"field": value}) == set()


@pytest.mark.parametrize(
    ("value", "typename"), [(True, "boolean"), (1.2, "number"), ({}, "object"), ([], "array")]
)
def test_int_or_string_rejects_other_types(value: Any, typename: str) -> None:
    assert errors(INT_OR_STRING, {"field": value}) == {
        f'field: Invalid value: "{typename}": field in body must be of type integer,string: "{typename}"'
    }
    assert errors(NULLABLE_INT_OR_STRING, {"field": value}) == {
        f'field: Invalid value: "{typename}": field in body must be of type integer,string: "{typename}"'
    }
    # With OpenShift's anyOf [integer, string] next to the marker, kube-openapi adds the anyOf
    # failure (with no field path) and the first branch's error.
    assert errors(INT_OR_STRING_ANYOF, {"field": value}) == {
        f'<nil>: Invalid value: "": "field" must validate at least one schema (anyOf)',
        f'field: Invalid value: "{typename}": field in body must be of type integer,string: "{typename}"',
        f'field: Invalid value: "{typename}": field in body must be of type integer: "{typename}"',
    }


def test_null_in_non_nullable_field_is_dropped_not_rejected() -> None:
    # kube-apiserver prunes non-nullable nulls without a default before validating.
    crd = crd_of(INT_OR_STRING)
    assert crdschema.validate(crd, {"field": None}) == []
    assert crdschema.prune(crd, {"field": None}) == {}
    assert crdschema.prune(crd_of(NULLABLE_INT_OR_STRING), {"field": None}) == {"field": None}


def test_null_array_item_is_a_type_error() -> None:
    schema = {"type": "object", "properties": {"l": {"type": "array", "items": {"type": "string"}}}}
    assert errors(schema, {"l": ["a", None]}) == {
        'l[1]: Invalid value: "null": l[1] in body must be of type string: "null"'
    }


def test_required_nested() -> None:
    schema = {
        "type": "object",
        "required": ["field"],
        "properties": {"field": {"type": "object", "required": ["nested"], "properties": {"nested": {}}}},
    }
    assert errors(schema, {"test": "a"}) == {"field: Required value"}
    assert errors(schema, {"field": {}}) == {"field.nested: Required value"}
    cause = crdschema.validate(crd_of(schema), {"field": {}})[0]
    assert cause == {"reason": "FieldValueRequired", "message": "Required value", "field": "field.nested"}


def test_enum_and_type_errors_together() -> None:
    schema = {
        "type": "object",
        "properties": {
            "field": {
                "type": "object",
                "required": ["nestedint", "nestedstring"],
                "properties": {
                    "nestedint": {"type": "integer", "enum": [1, 2]},
                    "nestedstring": {"type": "string", "enum": ["a", "b"]},
                },
            }
        },
    }
    assert errors(schema, {"field": {}}) == {"field.nestedint: Required value", "field.nestedstring: Required value"}
    assert errors(schema, {"field": {"nestedint": "x", "nestedstring": True}}) == {
        'field.nestedint: Invalid value: "string": field.nestedint in body must be of type integer: "string"',
        'field.nestedint: Unsupported value: "x": supported values: "1", "2"',
        'field.nestedstring: Invalid value: "boolean": field.nestedstring in body must be of type string: "boolean"',
        'field.nestedstring: Unsupported value: true: supported values: "a", "b"',
    }
    reasons = {c["reason"] for c in crdschema.validate(crd_of(schema), {"field": {"nestedint": 3, "nestedstring": "a"}})}
    assert reasons == {"FieldValueNotSupported"}


def test_bounds_lengths_and_counts() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 0, "maximum": 10},
            "x": {"type": "number", "minimum": 0.5, "exclusiveMinimum": True},
            "s": {"type": "string", "maxLength": 2, "minLength": 1, "pattern": "^[a-z]+$"},
            "l": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
            "m": {"type": "object", "maxProperties": 2, "additionalProperties": {"type": "boolean"}},
        },
    }
    assert errors(schema, {"n": 11}) == {"n: Invalid value: 11: n in body should be less than or equal to 10"}
    assert errors(schema, {"n": -1}) == {"n: Invalid value: -1: n in body should be greater than or equal to 0"}
    assert errors(schema, {"x": 0.5}) == {"x: Invalid value: 0.5: x in body should be greater than 0.5"}
    assert errors(schema, {"s": "abc"}) == {"s: Too long: may not be more than 2 bytes"}
    assert errors(schema, {"s": ""}) == {
        's: Invalid value: "": s in body should be at least 1 chars long',
        's: Invalid value: "": s in body should match \'^[a-z]+$\'',
    }
    assert errors(schema, {"s": "A"}) == {"s: Invalid value: \"A\": s in body should match '^[a-z]+$'"}
    assert errors(schema, {"l": ["a", "b", "c"]}) == {"l: Too many: 3: must have at most 2 items"}
    assert errors(schema, {"m": {"a": True, "b": True, "c": True}}) == {"m: Too many: 3: must have at most 2 items"}


def test_formats() -> None:
    schema = {
        "type": "object",
        "properties": {
            "t": {"type": "string", "format": "date-time"},
            "b": {"type": "string", "format": "byte"},
            "i": {"type": "integer", "format": "int32"},
        },
    }
    assert errors(schema, {"t": "2026-11-27T16:00:00Z", "b": "aGVsbG8=", "i": 7}) == set()
    # kube-openapi checks formats of strings only: an int32 field takes a bigger integer.
    assert errors(schema, {"i": 2**40}) == set()
    assert errors(schema, {"t": "yesterday"}) == {
        't: Invalid value: "yesterday": t in body must be of type date-time: "yesterday"'
    }
    assert errors(schema, {"b": "not base64!"}) == {
        'b: Invalid value: "not base64!": b in body must be of type byte: "not base64!"'
    }


def test_list_type_set_and_map_duplicates() -> None:
    schema = {
        "type": "object",
        "properties": {
            "s": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
            "m": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "v": {"type": "integer"}}},
            },
        },
    }
    assert errors(schema, {"s": ["a", "b", "a"]}) == {'s[2]: Duplicate value: "a"'}
    assert errors(schema, {"m": [{"name": "x", "v": 1}, {"name": "x", "v": 2}]}) == {
        'm[1]: Duplicate value: {"name":"x"}'
    }


# --------------------------------------------------------------------------------------------
# pruning / unknown fields

PRUNE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "known": {"type": "string"},
                "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "mixed": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {"typed": {"type": "object", "properties": {"a": {"type": "string"}}}},
                },
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "items": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                },
                "embedded": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": True,
                    "properties": {"spec": {"type": "object", "properties": {"x": {"type": "string"}}}},
                },
            },
        },
    },
}


def test_unknown_fields_paths_and_prune() -> None:
    crd = crd_of(PRUNE_SCHEMA)
    obj = {
        "apiVersion": "example.com/v1",
        "kind": "Thing",
        "metadata": {"name": "t", "labels": {"a": "b"}, "bogusMeta": 1},
        "spec": {
            "known": "k",
            "unknown": 1,
            "raw": {"anything": {"goes": [1, 2]}},
            "mixed": {"free": 1, "typed": {"a": "x", "b": "pruned"}},
            "labels": {"any": "key"},
            "items": [{"name": "a"}, {"name": "b", "extra": True}],
            "embedded": {"apiVersion": "v1", "kind": "K", "metadata": {"name": "e"}, "spec": {"x": "1", "y": 2}},
        },
        "status": {"gone": True},
    }
    before = copy.deepcopy(obj)
    assert crdschema.unknown_fields(crd, obj) == [
        "metadata.bogusMeta",
        "spec.embedded.spec.y",
        "spec.items[1].extra",
        "spec.mixed.typed.b",
        "spec.unknown",
        "status",
    ]
    pruned = crdschema.prune(crd, obj)
    assert obj == before, "prune must not change its argument"
    assert pruned == {
        "apiVersion": "example.com/v1",
        "kind": "Thing",
        "metadata": {"name": "t", "labels": {"a": "b"}},
        "spec": {
            "known": "k",
            "raw": {"anything": {"goes": [1, 2]}},
            "mixed": {"free": 1, "typed": {"a": "x"}},
            "labels": {"any": "key"},
            "items": [{"name": "a"}, {"name": "b"}],
            "embedded": {"apiVersion": "v1", "kind": "K", "metadata": {"name": "e"}, "spec": {"x": "1"}},
        },
    }


def test_defaults_are_applied() -> None:
    schema = {
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {"d": {"type": "string", "default": "", "enum": ["a", ""]}}}},
    }
    crd = crd_of(schema)
    assert crdschema.prune(crd, {"spec": {}}) == {"spec": {"d": ""}}
    assert crdschema.prune(crd, {"spec": {"d": None}}) == {"spec": {"d": ""}}
    assert crdschema.validate(crd, {"spec": {"d": None}}) == []


def test_invalid_message() -> None:
    crd = crd_of(INT_OR_STRING, kind="Thing")
    causes = crdschema.validate(crd, {"field": True})
    assert crdschema.invalid_message(crd, "t1", causes) == (
        'Thing.example.com "t1" is invalid: field: Invalid value: "boolean": '
        'field in body must be of type integer,string: "boolean"'
    )


def test_go_quote() -> None:
    assert crdschema.go_quote('a"b\\c\n\x00é') == '"a\\"b\\\\c\\n\\x00é"'


# --------------------------------------------------------------------------------------------
# loading


def test_load_crds_keys_and_errors(tmp_path: Path) -> None:
    crds = crdschema.load_crds(REPO / "manifests" / "crds")
    group = "machineconfiguration.openshift.io"
    assert set(crds) == {
        (group, "machineconfigs"),
        (group, "machineconfigpools"),
        (group, "controllerconfigs"),
        (group, "kubeletconfigs"),
        (group, "containerruntimeconfigs"),
    }
    (tmp_path / "bad.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(crdschema.CRDError, match="bad.yaml"):
        crdschema.load_crds(tmp_path)
    (tmp_path / "bad.yaml").unlink()
    doc = crd_of({"type": "object"})
    import yaml

    (tmp_path / "a.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(crdschema.CRDError, match=r"b\.yaml: things\.example\.com is also defined in .*a\.yaml"):
        crdschema.load_crds(tmp_path)


def test_embedded_resource_needs_apiversion_and_kind() -> None:
    crd = crd_of(PRUNE_SCHEMA)
    good = {"spec": {"embedded": {"apiVersion": "config.openshift.io/v1", "kind": "DNS", "spec": {}}}}
    assert crdschema.validate(crd, good) == []
    assert {f"{c['field']}: {c['message']}" for c in crdschema.validate(crd, {"spec": {"embedded": {"spec": {}}}})} == {
        "spec.embedded.apiVersion: Required value: must not be empty",
        "spec.embedded.kind: Required value: must not be empty",
    }
    bad = {"spec": {"embedded": {"apiVersion": "a/b/c", "kind": ""}}}
    assert {f"{c['field']}: {c['message']}" for c in crdschema.validate(crd, bad)} == {
        'spec.embedded.apiVersion: Invalid value: "a/b/c": unexpected GroupVersion string: a/b/c',
        'spec.embedded.kind: Invalid value: "": must not be empty',
    }


def test_shipped_crds_are_structural() -> None:
    for key, crd in crdschema.load_crds(REPO / "manifests" / "crds").items():
        assert crdschema.structural_errors(crd) == [], key


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "object", "properties": {"spec": {"properties": {}}}},
         "properties[spec].type: Required value"),
        ({"type": "object", "properties": {"m": {"type": "object", "properties": {"a": {"type": "string"}},
                                                 "additionalProperties": {"type": "string"}}}},
         "properties and additionalProperties are mutually exclusive"),
        ({"type": "object", "properties": {"l": {"type": "array", "x-kubernetes-list-type": "map",
                                                 "x-kubernetes-list-map-keys": ["name"],
                                                 "items": {"type": "object", "properties": {"name": {"type": "string"}}}}}},
         "name must be required or have a default"),
        ({"type": "object", "properties": {"d": {"type": "string", "enum": ["a"], "default": "b"}}},
         'default: Unsupported value: "b": supported values: "a"'),
        ({"type": "object", "properties": {"x": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}},
         "anyOf[0].type: must not be set inside allOf/anyOf/oneOf/not"),
        ({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}},
         "properties[metadata]: must only have type and properties name/generateName"),
        ({"type": "object", "properties": {"l": {"type": "array"}}}, "properties[l].items: Required value"),
        ({"type": "object", "properties": {"e": {"type": "string", "x-kubernetes-embedded-resource": True}}},
         "x-kubernetes-embedded-resource needs type object"),
    ],
)
def test_structural_errors(schema: dict[str, Any], problem: str) -> None:
    errs = crdschema.structural_errors(crd_of(schema))
    assert any(problem in e for e in errs), errs


def test_structural_errors_outside_the_schema() -> None:
    crd = crd_of({"type": "object"})
    crd["metadata"]["name"] = "wrong.example.com"
    crd["spec"]["versions"][0]["additionalPrinterColumns"] = [{"name": "X", "type": "float", "jsonPath": ".spec.x"}]
    crd["spec"]["versions"][0]["subresources"] = {"status": {}}
    errs = crdschema.structural_errors(crd)
    assert any("metadata.name must be" in e for e in errs)
    assert any("additionalPrinterColumns[0].type: 'float'" in e for e in errs)
    assert any("status subresource without a status property" in e for e in errs)


def test_load_crds_refuses_a_crd_the_api_server_would_refuse(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(crd_of({"type": "object", "properties": {"x": {}}})))
    with pytest.raises(crdschema.CRDError, match=r"bad\.yaml: document 0: .*properties\[x\]\.type"):
        crdschema.load_crds(tmp_path)
