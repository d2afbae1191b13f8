"""Ignition configs, spec 2.2 and 3.0-3.7-experimental: parse, validate, translate, merge, data URLs.

Pure functions on bytes and plain JSON-like dicts; no I/O of any kind.

Representation: a parsed config is a *canonical dict*: exactly what Go would marshal from the typed
config with `omitempty` (clarketm/json flavour) - canonical key spelling only, unknown keys dropped,
nil pointers absent, zero-valued non-pointer fields absent, empty lists and empty objects absent,
`ignition.version` always present. Module map, lower layers first:

- schema         the 3.x field tree of every spec version (types, nullability, keys), compiled converters
- version        go-semver style version parsing and the spec-version table
- decode         Go encoding/json decoding with line/column positions
- dataurl        RFC 2397 decode (upstream strictness) and MCO's two encodings
- url            Go's url.Parse as Ignition uses it; the URL schemes each spec accepts
- gopath         Go's path.Clean/Join and Ignition's path checks
- units          systemd unit file parsing as go-systemd does it (for the unit rules)
- report         report entries in ignition-validate's wording
- findings       a rule's finding before it is positioned in the text
- storage_rules  the storage rules (files, links, filesystems, disks ...)
- rules          every other semantic rule, by struct
- bind           the decoded JSON tree bound to a spec version's typed shape
- validate       the rules over a typed config, duplicates, unused keys; report positions
- parse          parse(raw) -> ParseResult: version detection, decode, bind, validate
- spec2          spec 2.2 parsing/validation (MCO's de-duplication lives in the renderer)
- merge          Ignition's merge (child over parent)
- translate3     up/down between 3.0 ... 3.7-exp; the translation errors
- translate_v2   2.2 <-> 3.x
- translate      translate(config, version): any supported version to any other
"""
