"""Structural-schema handling of custom resources, the way kube-apiserver does it.

The HTTP fake kube-apiserver in ``tests/kube/fakeapi`` uses this module so that a custom resource
it is sent is pruned, defaulted and validated as a real API server would, against the CRDs shipped
in ``manifests/crds``. What it reproduces (apiextensions-apiserver + kube-openapi behaviour):

* decoding: unknown fields are pruned (``unknown_fields`` lists their paths, sorted, as
  ``spec.foo`` / ``spec.list[0].bar``; the fake turns them into
  ``strict decoding error: unknown field "spec.foo"``); ``apiVersion``, ``kind`` and ``metadata``
  are never pruned at the root or in an ``x-kubernetes-embedded-resource``; inside
  ``x-kubernetes-preserve-unknown-fields`` nothing is pruned except below declared properties;
  ``additionalProperties`` schemas apply to every key. ``null`` in a field that is not
  ``nullable`` and has no ``default`` is dropped silently (it is not an error). Unknown
  ``metadata`` fields are dropped and reported as ``metadata.foo``.
* defaulting: ``default`` values are filled in for absent fields (and for non-nullable nulls).
* validation: type (with ``nullable`` and ``x-kubernetes-int-or-string``), ``required``,
  ``enum``, ``pattern``, ``minLength``/``maxLength``, ``minimum``/``maximum`` (and exclusive),
  ``multipleOf``, ``minItems``/``maxItems``, ``uniqueItems``, ``minProperties``/``maxProperties``,
  formats ``date-time`` and ``byte`` on strings (kube-openapi checks formats of strings only, so
  ``int32``/``int64`` bound nothing; most other formats are stripped by kube-apiserver),
  ``x-kubernetes-list-type: set|map`` duplicates.

Each problem is returned as a ``metav1.StatusCause``-shaped dict
``{"reason": ..., "message": ..., "field": ...}`` with kube-apiserver's texts, e.g.::

    {"reason": "FieldValueTypeInvalid", "field": "spec.maxUnavailable",
     "message": 'Invalid value: "boolean": spec.maxUnavailable in body must be of type '
                'integer,string: "boolean"'}

(``reason`` is the ``field.ErrorType`` reason: ``FieldValueTypeInvalid`` for a wrong type,
``FieldValueRequired``, ``FieldValueNotSupported`` for enum, ``FieldValueInvalid`` for pattern /
bounds / formats, ``FieldValueTooLong``, ``FieldValueTooMany``, ``FieldValueDuplicate``.)
``invalid_message`` builds the Status message of the 422 answer from them.

Not reproduced: ``x-kubernetes-validations`` CEL rules (none of the shipped CRDs depend on them
for the objects the tests send; ``validate`` reports a rule it cannot evaluate only when asked
with ``cel=True``), validation ratcheting on update, and ObjectMeta validation (names, label
syntax), which is the fake's generic object code.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime
import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CRDError",
    "load_crds",
    "schema_for",
    "validate",
    "unknown_fields",
    "prune",
    "invalid_message",
    "structural_errors",
    "go_quote",
]

Cause = dict[str, str]

# ObjectMeta's JSON fields; anything else under metadata is unknown (schemaobjectmeta.Coerce).
OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
_META_FIELDS = ("apiVersion", "kind", "metadata")


class CRDError(ValueError):
    """A CRD file that cannot be used (bad YAML, not a v1 CRD, no schema); names the file."""


# --------------------------------------------------------------------------------------------
# loading


def load_crds(directory: str | Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every ``CustomResourceDefinition`` in the YAML/JSON files under ``directory`` (recursive).

    Keyed by ``(spec.group, spec.names.plural)``. Other kinds in the files are ignored. A file
    that does not parse, a CRD of another apiVersion, a CRD without a schema for a served
    version, one kube-apiserver would refuse (``structural_errors``), or the same resource twice
    raises ``CRDError`` naming the file.
    """
    root = Path(directory)
    if not root.is_dir():
        raise CRDError(f"{root}: not a directory")
    out: dict[tuple[str, str], dict[str, Any]] = {}
    where: dict[tuple[str, str], Path] = {}
    files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file())
    for path in files:
        try:
            docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise CRDError(f"{path}: {exc}") from exc
        for index, doc in enumerate(docs):
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                continue
            if doc.get("apiVersion") != "apiextensions.k8s.io/v1":
                raise CRDError(f"{path}: document {index}: apiVersion must be apiextensions.k8s.io/v1")
            spec = doc.get("spec")
            if not isinstance(spec, dict):
                raise CRDError(f"{path}: document {index}: spec missing")
            group = spec.get("group")
            names = spec.get("names") or {}
            plural = names.get("plural") if isinstance(names, dict) else None
            if not isinstance(group, str) or not isinstance(plural, str):
                raise CRDError(f"{path}: document {index}: spec.group and spec.names.plural are required")
            versions = spec.get("versions")
            if not isinstance(versions, list) or not versions:
                raise CRDError(f"{path}: document {index}: spec.versions is empty")
            for v in versions:
                if v.get("served") and not isinstance(
                    ((v.get("schema") or {}).get("openAPIV3Schema")), dict
                ):
                    raise CRDError(
                        f"{path}: document {index}: version {v.get('name')} has no openAPIV3Schema"
                    )
            if sum(1 for v in versions if v.get("storage")) != 1:
                raise CRDError(f"{path}: document {index}: exactly one version must be the storage version")
            problems = structural_errors(doc)
            if problems:
                raise CRDError(f"{path}: document {index}: " + "; ".join(problems))
            key = (group, plural)
            if key in out:
                raise CRDError(f"{path}: {plural}.{group} is also defined in {where[key]}")
            out[key] = doc
            where[key] = path
    return out


def schema_for(crd: dict[str, Any], obj: dict[str, Any] | None = None) -> dict[str, Any]:
    """The openAPIV3Schema for ``obj``'s apiVersion version, or the storage version's."""
    versions = crd["spec"]["versions"]
    wanted = None
    if obj is not None and isinstance(obj.get("apiVersion"), str) and "/" in obj["apiVersion"]:
        wanted = obj["apiVersion"].rsplit("/", 1)[1]
    chosen = None
    for v in versions:
        if wanted is not None and v.get("name") == wanted and v.get("served"):
            chosen = v
            break
    if chosen is None:
        chosen = next(v for v in versions if v.get("storage"))
    schema: dict[str, Any] = chosen["schema"]["openAPIV3Schema"]
    return schema


# --------------------------------------------------------------------------------------------
# pruning, null pruning, defaulting


def _props(s: dict[str, Any] | None) -> dict[str, Any]:
    if not s:
        return {}
    p = s.get("properties")
    return p if isinstance(p, dict) else {}


def _additional(s: dict[str, Any] | None) -> dict[str, Any] | None:
    """The additionalProperties schema, {} for ``true``, None when absent or false."""
    if not s:
        return None
    ap = s.get("additionalProperties")
    if ap is True:
        return {"x-kubernetes-preserve-unknown-fields": True}
    if isinstance(ap, dict):
        return ap
    return None


def _child_schema(s: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    props = _props(s)
    if key in props:
        child: dict[str, Any] = props[key]
        return child
    return _additional(s)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _prune(x: Any, s: dict[str, Any] | None, path: str, unknown: list[str], embedded: bool) -> None:
    if s is not None and s.get("x-kubernetes-preserve-unknown-fields"):
        _skip_prune(x, s, path, unknown)
        return
    if isinstance(x, dict):
        if s is None:
            for k in list(x):
                unknown.append(_join(path, k))
                del x[k]
            return
        emb = embedded or bool(s.get("x-kubernetes-embedded-resource"))
        props = _props(s)
        ap = _additional(s)
        for k in list(x):
            if emb and k in _META_FIELDS:
                if k == "metadata" and isinstance(x[k], dict):
                    _prune_meta(x[k], _join(path, k), unknown)
                continue
            if k in props:
                _prune(x[k], props[k], _join(path, k), unknown, False)
            elif ap is not None:
                _prune(x[k], ap, _join(path, k), unknown, False)
            else:
                unknown.append(_join(path, k))
                del x[k]
    elif isinstance(x, list):
        items = s.get("items") if s is not None else None
        for i, v in enumerate(x):
            _prune(v, items if isinstance(items, dict) else None, f"{path}[{i}]", unknown, False)


def _skip_prune(x: Any, s: dict[str, Any], path: str, unknown: list[str]) -> None:
    if isinstance(x, dict):
        emb = bool(s.get("x-kubernetes-embedded-resource"))
        props = _props(s)
        ap = _additional(s)
        for k in list(x):
            if emb and k in _META_FIELDS:
                if k == "metadata" and isinstance(x[k], dict):
                    _prune_meta(x[k], _join(path, k), unknown)
                continue
            if k in props:
                _prune(x[k], props[k], _join(path, k), unknown, False)
            elif ap is not None and not ap.get("x-kubernetes-preserve-unknown-fields"):
                _prune(x[k], ap, _join(path, k), unknown, False)
    elif isinstance(x, list):
        items = s.get("items")
        if isinstance(items, dict):
            for i, v in enumerate(x):
                _skip_prune(v, items, f"{path}[{i}]", unknown)


def _prune_meta(meta: dict[str, Any], path: str, unknown: list[str]) -> None:
    for k in list(meta):
        if k not in OBJECT_META_FIELDS:
            unknown.append(_join(path, k))
            del meta[k]


def _prune_nulls(x: Any, s: dict[str, Any] | None) -> None:
    """structuraldefaulting.PruneNonNullableNullsWithoutDefaults."""
    if isinstance(x, dict):
        for k in list(x):
            cs = _child_schema(s, k)
            v = x[k]
            if v is None and cs is not None and not cs.get("nullable") and "default" not in cs:
                del x[k]
            else:
                _prune_nulls(v, cs)
    elif isinstance(x, list):
        items = s.get("items") if s is not None else None
        for v in x:
            _prune_nulls(v, items if isinstance(items, dict) else None)


def _default(x: Any, s: dict[str, Any] | None) -> None:
    """structuraldefaulting.Default: fill absent (or non-nullable null) fields from ``default``."""
    if s is None:
        return
    if isinstance(x, dict):
        for k, ps in _props(s).items():
            if "default" in ps and (k not in x or (x[k] is None and not ps.get("nullable"))):
                x[k] = copy.deepcopy(ps["default"])
        ap = _additional(s)
        for k, v in x.items():
            cs = _props(s).get(k, ap)
            _default(v, cs)
    elif isinstance(x, list):
        items = s.get("items")
        if isinstance(items, dict):
            for i, v in enumerate(x):
                if v is None and "default" in items and not items.get("nullable"):
                    x[i] = copy.deepcopy(items["default"])
                _default(x[i], items)


def _decode(crd: dict[str, Any], obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """What kube-apiserver keeps of ``obj`` after decoding and defaulting, and what it pruned."""
    schema = schema_for(crd, obj)
    out = copy.deepcopy(obj)
    unknown: list[str] = []
    _prune(out, schema, "", unknown, True)
    _prune_nulls(out, schema)
    _default(out, schema)
    return out, sorted(unknown)


def unknown_fields(crd: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Dotted paths (sorted) of the fields of ``obj`` its CRD's structural schema does not declare."""
    return _decode(crd, obj)[1]


def prune(crd: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` as kube-apiserver stores it on the non-strict path: unknown fields
    removed, non-nullable nulls removed, schema defaults applied. ``obj`` is not changed."""
    return _decode(crd, obj)[0]


# --------------------------------------------------------------------------------------------
# validation


_GO_ESCAPES = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f",
               "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def go_quote(s: str) -> str:
    """Go's ``strconv.Quote``/``%q`` for a string (printable Unicode kept, the rest escaped)."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


def _go_number(v: float | int) -> str:
    """Go's ``%v`` of a float64 (or an int)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    if v == int(v) and abs(v) < 1e21:
        return str(int(v))
    r = repr(v)
    if "e" in r:
        mant, exp = r.split("e")
        sign = "-" if exp.startswith("-") else "+"
        digits = exp.lstrip("+-").rjust(2, "0")
        return f"{mant}e{sign}{digits}"
    return r


def _bad_value(v: Any) -> str:
    """How field.Error.ErrorBody prints a bad value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return _go_number(v)
    if isinstance(v, str):
        return go_quote(v)
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def _type_of(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _cause(reason: str, field: str, body: str) -> Cause:
    return {"reason": reason, "message": body, "field": field}


def _type_invalid(field: str, value: Any, detail: str) -> Cause:
    return _cause("FieldValueTypeInvalid", field, f"Invalid value: {_bad_value(value)}: {detail}")


def _invalid(field: str, value: Any, detail: str) -> Cause:
    return _cause("FieldValueInvalid", field, f"Invalid value: {_bad_value(value)}: {detail}")


def _types(s: dict[str, Any]) -> list[str]:
    if s.get("x-kubernetes-int-or-string"):
        return ["integer", "string"]
    t = s.get("type")
    if isinstance(t, str) and t:
        return [t]
    return []


_DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def _valid_format(fmt: str, value: str) -> bool:
    if fmt == "date-time":
        m = _DATE_TIME.match(value)
        if not m:
            return False
        try:
            datetime.datetime(*(int(m.group(i)) for i in range(1, 7)))
        except ValueError:
            return False
        return True
    if fmt == "byte":
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return False
        return True
    return True


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    return bool(type(a) is type(b) and a == b)


def _validate(x: Any, s: dict[str, Any], path: str, out: list[Cause]) -> None:
    name = path or "."
    types = _types(s)
    nullable = bool(s.get("nullable"))
    if x is None:
        if types and not nullable:
            out.append(
                _type_invalid(path, "null", f"{name} in body must be of type {','.join(types)}: \"null\"")
            )
        _validate_enum(x, s, path, out)
        return
    kind = _type_of(x)
    if types:
        ok = kind in types
        if not ok and kind == "number" and "integer" in types and float(x).is_integer():
            ok = True  # isFloatInt
        if not ok and kind == "integer" and "number" in types:
            ok = True  # isIntFloat
        if not ok:
            out.append(
                _type_invalid(path, kind, f"{name} in body must be of type {','.join(types)}: {go_quote(kind)}")
            )
    fmt = s.get("format")
    if kind == "string":
        _validate_string(x, s, name, path, out)
        if isinstance(fmt, str) and fmt and "string" in types and not _valid_format(fmt, x):
            out.append(_type_invalid(path, x, f"{name} in body must be of type {fmt}: {go_quote(x)}"))
    elif kind in ("integer", "number"):
        _validate_number(x, s, name, path, out)
    elif kind == "array":
        _validate_array(x, s, name, path, out)
    _validate_enum(x, s, path, out)
    _validate_combinators(x, s, path, out)
    if kind == "object":
        _validate_object(x, s, name, path, out)
        if path and s.get("x-kubernetes-embedded-resource"):
            _validate_embedded(x, path, out)


_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)


def _validate_embedded(x: dict[str, Any], path: str, out: list[Cause]) -> None:
    """schemaobjectmeta's checks of an x-kubernetes-embedded-resource below the root."""
    for key in ("apiVersion", "kind"):
        if key not in x:
            out.append(_cause("FieldValueRequired", f"{path}.{key}", "Required value: must not be empty"))
    if "apiVersion" in x:
        v = x["apiVersion"]
        field = f"{path}.apiVersion"
        if not isinstance(v, str):
            out.append(_invalid(field, v, "must be a string"))
        elif not v:
            out.append(_invalid(field, v, "must not be empty"))
        elif v.count("/") > 1 or v.startswith("/") or (v.count("/") == 1 and not v.split("/")[1]):
            out.append(_invalid(field, v, f"unexpected GroupVersion string: {v}"))
    if "kind" in x:
        v = x["kind"]
        field = f"{path}.kind"
        if not isinstance(v, str):
            out.append(_invalid(field, v, "must be a string"))
        elif not v:
            out.append(_invalid(field, v, "must not be empty"))
        elif len(v) > 63 or not _DNS1035.match(v.lower()):
            out.append(_invalid(field, v, "may have mixed case, but should otherwise match: " + _DNS1035_MSG))


def _combinator_error(path: str, what: str) -> Cause:
    # kube-openapi gives these errors no field name: apiextensions reports them at the root
    # path, which prints as "<nil>".
    return _cause("FieldValueInvalid", "<nil>", f'Invalid value: "": {go_quote(path)} {what}')


def _validate_combinators(x: Any, s: dict[str, Any], path: str, out: list[Cause]) -> None:
    """anyOf / allOf / oneOf / not, as kube-openapi's schemaPropsValidator reports them."""
    any_of = s.get("anyOf")
    if isinstance(any_of, list) and any_of:
        best: list[Cause] | None = None
        for sub in any_of:
            errs: list[Cause] = []
            _validate(x, sub, path, errs)
            if not errs:
                best = None
                break
            if best is None:
                best = errs
        else:
            out.append(_combinator_error(path, "must validate at least one schema (anyOf)"))
        if best:
            out.extend(best)
    all_of = s.get("allOf")
    if isinstance(all_of, list) and all_of:
        failed: list[Cause] = []
        valid = 0
        for sub in all_of:
            errs = []
            _validate(x, sub, path, errs)
            if errs:
                failed.extend(errs)
            else:
                valid += 1
        if failed:
            suffix = ". None validated" if valid == 0 else ""
            out.append(_combinator_error(path, f"must validate all the schemas (allOf){suffix}"))
            out.extend(failed)
    one_of = s.get("oneOf")
    if isinstance(one_of, list) and one_of:
        valid = 0
        first: list[Cause] | None = None
        for sub in one_of:
            errs = []
            _validate(x, sub, path, errs)
            if errs:
                first = first if first is not None else errs
            else:
                valid += 1
        if valid != 1:
            suffix = "" if valid == 0 else ". Found " + str(valid) + " valid alternatives"
            out.append(_combinator_error(path, f"must validate one and only one schema (oneOf){suffix}"))
            if valid == 0 and first:
                out.extend(first)
    not_ = s.get("not")
    if isinstance(not_, dict):
        errs = []
        _validate(x, not_, path, errs)
        if not errs:
            out.append(_combinator_error(path, "must not validate the schema (not)"))


def _validate_enum(x: Any, s: dict[str, Any], path: str, out: list[Cause]) -> None:
    enum = s.get("enum")
    if not isinstance(enum, list) or not enum:
        return
    if any(_json_equal(x, e) for e in enum):
        return
    quoted = [
        go_quote(e) if isinstance(e, str) else go_quote(json.dumps(e, separators=(",", ":"))) for e in enum
    ]
    out.append(
        _cause(
            "FieldValueNotSupported",
            path,
            f"Unsupported value: {_bad_value(x)}: supported values: {', '.join(quoted)}",
        )
    )


def _validate_string(x: str, s: dict[str, Any], name: str, path: str, out: list[Cause]) -> None:
    max_len = s.get("maxLength")
    if isinstance(max_len, int) and len(x) > max_len:
        # kube-openapi counts runes; apiextensions reports field.TooLong.
        unit = "byte" if max_len == 1 else "bytes"
        out.append(_cause("FieldValueTooLong", path, f"Too long: may not be more than {max_len} {unit}"))
    min_len = s.get("minLength")
    if isinstance(min_len, int) and len(x) < min_len:
        out.append(_invalid(path, x, f"{name} in body should be at least {min_len} chars long"))
    pattern = s.get("pattern")
    if isinstance(pattern, str) and pattern:
        if re.search(_go_regex(pattern), x, re.ASCII) is None:
            out.append(_invalid(path, x, f"{name} in body should match '{pattern}'"))


def _go_regex(pattern: str) -> str:
    # RE2 and Python agree on what the shipped CRDs use (with re.ASCII: RE2 classes are ASCII);
    # \z is RE2's end of text.
    return pattern.replace("\\z", "\\Z")


def _validate_number(x: float | int, s: dict[str, Any], name: str, path: str, out: list[Cause]) -> None:
    mult = s.get("multipleOf")
    if isinstance(mult, (int, float)) and not isinstance(mult, bool) and mult > 0:
        q = x / mult
        if not float(q).is_integer():
            out.append(_invalid(path, x, f"{name} in body should be a multiple of {_go_number(mult)}"))
    mx = s.get("maximum")
    if isinstance(mx, (int, float)) and not isinstance(mx, bool):
        if s.get("exclusiveMaximum") and x >= mx:
            out.append(_invalid(path, x, f"{name} in body should be less than {_go_number(mx)}"))
        elif x > mx:
            out.append(_invalid(path, x, f"{name} in body should be less than or equal to {_go_number(mx)}"))
    mn = s.get("minimum")
    if isinstance(mn, (int, float)) and not isinstance(mn, bool):
        if s.get("exclusiveMinimum") and x <= mn:
            out.append(_invalid(path, x, f"{name} in body should be greater than {_go_number(mn)}"))
        elif x < mn:
            out.append(
                _invalid(path, x, f"{name} in body should be greater than or equal to {_go_number(mn)}")
            )


def _validate_array(x: list[Any], s: dict[str, Any], name: str, path: str, out: list[Cause]) -> None:
    items = s.get("items")
    if isinstance(items, dict):
        for i, v in enumerate(x):
            _validate(v, items, f"{path}[{i}]", out)
    min_items = s.get("minItems")
    if isinstance(min_items, int) and len(x) < min_items:
        out.append(_invalid(path, len(x), f"{name} in body should have at least {min_items} items"))
    max_items = s.get("maxItems")
    if isinstance(max_items, int) and len(x) > max_items:
        out.append(_cause("FieldValueTooMany", path, f"Too many: {len(x)}: must have at most {max_items} items"))
    if s.get("uniqueItems"):
        for i, a in enumerate(x):
            if any(_json_equal(a, b) for b in x[:i]):
                out.append(_invalid(path, "", f"{name} in body shouldn't contain duplicates"))
                break
    list_type = s.get("x-kubernetes-list-type")
    if list_type == "set":
        seen: list[Any] = []
        for i, v in enumerate(x):
            if any(_json_equal(v, p) for p in seen):
                out.append(_cause("FieldValueDuplicate", f"{path}[{i}]", f"Duplicate value: {_bad_value(v)}"))
            else:
                seen.append(v)
    elif list_type == "map":
        keys = s.get("x-kubernetes-list-map-keys") or []
        seen_keys: list[dict[str, Any]] = []
        for i, v in enumerate(x):
            if not isinstance(v, dict):
                continue
            key = {k: v.get(k) for k in keys if k in v}
            if any(_json_equal(key, p) for p in seen_keys):
                out.append(_cause("FieldValueDuplicate", f"{path}[{i}]", f"Duplicate value: {_bad_value(key)}"))
            else:
                seen_keys.append(key)


def _validate_object(x: dict[str, Any], s: dict[str, Any], name: str, path: str, out: list[Cause]) -> None:
    min_p = s.get("minProperties")
    if isinstance(min_p, int) and len(x) < min_p:
        out.append(_invalid(path, len(x), f"{name} in body should have at least {min_p} properties"))
        return
    max_p = s.get("maxProperties")
    if isinstance(max_p, int) and len(x) > max_p:
        out.append(_cause("FieldValueTooMany", path, f"Too many: {len(x)}: must have at most {max_p} items"))
        return
    props = _props(s)
    ap = s.get("additionalProperties")
    for k in sorted(x):
        child = _join(path, k)
        if k in props:
            _validate(x[k], props[k], child, out)
        elif isinstance(ap, dict):
            _validate(x[k], ap, child, out)
    for k in s.get("required") or []:
        if k not in x:
            out.append(_cause("FieldValueRequired", _join(path, k), "Required value"))


def validate(crd: dict[str, Any], obj: dict[str, Any]) -> list[Cause]:
    """The schema errors kube-apiserver answers for ``obj`` (after pruning and defaulting it).

    An empty list means the object is valid. Unknown fields are not errors here (they are
    pruned first, as the server does); see ``unknown_fields`` for the strict path.
    """
    decoded, _ = _decode(crd, obj)
    out: list[Cause] = []
    _validate(decoded, schema_for(crd, obj), "", out)
    return out


def invalid_message(crd: dict[str, Any], name: str, causes: list[Cause]) -> str:
    """The ``message`` of the 422 Status kube-apiserver answers for ``causes``, e.g.
    ``MachineConfigPool.machineconfiguration.openshift.io "worker" is invalid: spec.x: ...``."""
    kind = crd["spec"]["names"]["kind"]
    group = crd["spec"]["group"]
    errs = [f"{c['field']}: {c['message']}" if c["field"] else c["message"] for c in causes]
    agg = errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]"
    return f"{kind}.{group} {go_quote(name)} is invalid: {agg}"


# --------------------------------------------------------------------------------------------
# the CRD itself


_PRINTER_TYPES = frozenset({"integer", "number", "string", "boolean", "date"})
_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean"})
_INT_OR_STRING_ANYOF = [{"type": "integer"}, {"type": "string"}]
# What may not appear inside allOf/anyOf/oneOf/not of a structural schema.
_FORBIDDEN_IN_JUNCTORS = ("description", "type", "default", "additionalProperties", "nullable",
                          "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource")


def structural_errors(crd: dict[str, Any]) -> list[str]:
    """The rules kube-apiserver checks before it accepts a v1 CRD (the ones our CRDs could
    break): names, one storage version, structural schemas (a type on every node unless it is
    int-or-string or preserves unknown fields, properties and additionalProperties not both,
    junctors without types except the int-or-string anyOf, embedded resources as objects,
    list-type map keys required or defaulted, defaults that validate), root metadata with no
    properties but name/generateName, printer column types, and the status subresource only
    with a status property. Returns one text per problem, each naming the schema path."""
    errs: list[str] = []
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    plural = names.get("plural", "")
    if crd.get("metadata", {}).get("name") != f"{plural}.{group}":
        errs.append(f"metadata.name must be spec.names.plural+\".\"+spec.group ({plural}.{group})")
    if spec.get("scope") not in ("Cluster", "Namespaced"):
        errs.append("spec.scope must be Cluster or Namespaced")
    for key in ("kind", "listKind", "singular"):
        if not names.get(key):
            errs.append(f"spec.names.{key} is required")
    versions = spec.get("versions") or []
    if sum(1 for v in versions if v.get("storage")) != 1:
        errs.append("spec.versions: exactly one version must be the storage version")
    for i, v in enumerate(versions):
        where = f"spec.versions[{i}]"
        schema = ((v.get("schema") or {}).get("openAPIV3Schema"))
        if not isinstance(schema, dict):
            errs.append(f"{where}.schema.openAPIV3Schema is required")
            continue
        if schema.get("type") != "object":
            errs.append(f"{where}.schema.openAPIV3Schema.type must be object")
        meta = _props(schema).get("metadata")
        if isinstance(meta, dict):
            extra = set(_props(meta)) - {"name", "generateName"}
            if extra or set(meta) - {"type", "description", "properties"}:
                errs.append(f"{where}.schema.openAPIV3Schema.properties[metadata]: must only have type "
                            "and properties name/generateName")
        _check_node(schema, f"{where}.schema.openAPIV3Schema", errs)
        for j, col in enumerate(v.get("additionalPrinterColumns") or []):
            if col.get("type") not in _PRINTER_TYPES:
                errs.append(f"{where}.additionalPrinterColumns[{j}].type: {col.get('type')!r}")
            if not str(col.get("jsonPath", "")).startswith("."):
                errs.append(f"{where}.additionalPrinterColumns[{j}].jsonPath must start with '.'")
        if "status" in (v.get("subresources") or {}) and "status" not in _props(schema):
            errs.append(f"{where}: status subresource without a status property")
    return errs


def _check_node(s: dict[str, Any], path: str, errs: list[str], in_junctor: bool = False) -> None:
    int_or_string = bool(s.get("x-kubernetes-int-or-string"))
    preserve = s.get("x-kubernetes-preserve-unknown-fields") is True
    t = s.get("type")
    if in_junctor:
        for key in _FORBIDDEN_IN_JUNCTORS:
            if key in s and not (key == "type" and in_junctor == "int-or-string"):
                errs.append(f"{path}.{key}: must not be set inside allOf/anyOf/oneOf/not")
    elif t is None:
        if not (int_or_string or preserve):
            errs.append(f"{path}.type: Required value: must not be empty for specified object fields")
    elif t not in _TYPES:
        errs.append(f"{path}.type: unsupported type {t!r}")
    elif int_or_string:
        errs.append(f"{path}.type: must be empty with x-kubernetes-int-or-string")
    if "properties" in s and "additionalProperties" in s:
        errs.append(f"{path}: properties and additionalProperties are mutually exclusive")
    if s.get("additionalProperties") is False:
        errs.append(f"{path}.additionalProperties: must not be false")
    if s.get("x-kubernetes-embedded-resource") and (t != "object" or not ("properties" in s or preserve)):
        errs.append(f"{path}: x-kubernetes-embedded-resource needs type object and properties "
                    "or x-kubernetes-preserve-unknown-fields")
    if t == "array" and not isinstance(s.get("items"), dict):
        errs.append(f"{path}.items: Required value: must be specified for arrays")
    list_type = s.get("x-kubernetes-list-type")
    if list_type is not None and list_type not in ("atomic", "set", "map"):
        errs.append(f"{path}.x-kubernetes-list-type: {list_type!r}")
    if list_type == "map":
        items = s.get("items") or {}
        keys = s.get("x-kubernetes-list-map-keys") or []
        if items.get("type") != "object" or not keys:
            errs.append(f"{path}: list-type map needs object items and x-kubernetes-list-map-keys")
        for k in keys:
            ks = _props(items).get(k)
            if ks is None:
                errs.append(f"{path}.x-kubernetes-list-map-keys: {k} is not a property of the items")
            elif k not in (items.get("required") or []) and "default" not in ks:
                errs.append(f"{path}.x-kubernetes-list-map-keys: {k} must be required or have a default")
    elif "x-kubernetes-list-map-keys" in s:
        errs.append(f"{path}.x-kubernetes-list-map-keys: only with x-kubernetes-list-type map")
    if "default" in s:
        problems: list[Cause] = []
        _validate(copy.deepcopy(s["default"]), s, "default", problems)
        for c in problems:
            errs.append(f"{path}.default: {c['message']}")
    for key in ("properties",):
        for name, child in _props(s).items():
            _check_node(child, f"{path}.properties[{name}]", errs)
    ap = s.get("additionalProperties")
    if isinstance(ap, dict):
        _check_node(ap, f"{path}.additionalProperties", errs)
    items = s.get("items")
    if isinstance(items, dict):
        _check_node(items, f"{path}.items", errs)
    for junctor in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(s.get(junctor) or []):
            mode: bool | str = True
            if int_or_string and junctor == "anyOf" and s.get("anyOf") == _INT_OR_STRING_ANYOF:
                mode = "int-or-string"
            _check_node(sub, f"{path}.{junctor}[{i}]", errs, in_junctor=mode)
    if isinstance(s.get("not"), dict):
        _check_node(s["not"], f"{path}.not", errs, in_junctor=True)
    for i, rule in enumerate(s.get("x-kubernetes-validations") or []):
        if not isinstance(rule, dict) or not isinstance(rule.get("rule"), str) or not rule["rule"]:
            errs.append(f"{path}.x-kubernetes-validations[{i}].rule: Required value")
