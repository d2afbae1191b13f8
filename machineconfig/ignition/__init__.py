"""Ignition configs, spec 2.2 and 3.0-3.7-experimental: parse, validate, translate, merge, data URLs.

Pure functions on bytes and plain JSON-like dicts; no I/O of any kind.

Representation: a parsed config is a *canonical dict*: exactly what Go would marshal from the typed
config with `omitempty` (clarketm/json flavour) - canonical key spelling only, unknown keys dropped,
nil pointers absent, zero-valued non-pointer fields absent, empty lists and empty objects absent,
`ignition.version` always present. Module map:

- decode     Go encoding/json decoding with line/column positions
- version    go-semver style version parsing and the spec-version table
- schema     the field tree of every spec version (types, nullability, keys)
- report     report entries in ignition-validate's wording
- validate   every semantic rule, duplicates, unused keys
- parse      parse(raw) -> ParseResult: version detection, decode, validate
- dataurl    RFC 2397 decode (upstream strictness) and MCO's two encodings
- translate  up/down between 3.0 ... 3.7-exp, and 2.2 <-> 3.x
- spec2      spec 2.2 parsing/validation (MCO's de-duplication lives in the renderer)
- merge      Ignition's merge (child over parent)
- models     pydantic models of the config tree
"""
