"""Ignition configs, spec 2.2 and 3.0-3.7-experimental: parse, validate, translate, merge, data URLs.

Pure functions on bytes and plain JSON-like dicts; no I/O of any kind.

Representation: a parsed config is a *canonical dict*: exactly what Go would marshal from the typed
config with `omitempty` (clarketm/json flavour) - canonical key spelling only, unknown keys dropped,
nil pointers absent, zero-valued non-pointer fields absent, empty lists and empty objects absent,
`ignition.version` always present. Module map, lowest layer first (a module imports only from the
layers below it; pyproject.toml's import-linter contract keeps it so):

- report         report entries in ignition-validate's wording
- schema         the 3.x field tree of every spec version (types, nullability, keys), compiled converters

- findings       a rule's finding before it is positioned in the text; nil/empty helpers
- gopath         Go's path.Clean/Join and Ignition's absolute-path rule
- dataurl        RFC 2397 decode (upstream strictness) and MCO's two encodings
- decode         Go encoding/json decoding with line/column positions

- storage_rules  the storage rules (links, disks, partitions, filesystems, RAID)
- units          the systemd unit-file lexer Ignition checks unit contents with
- url            Go's url.Parse as Ignition uses it, the schemes each spec accepts, url_scheme

- rules          the semantic rule of every other 3.x struct
- spec2          spec 2.2 parsing/validation (MCO's de-duplication lives in the renderer)
- translate3     up/down between 3.0 ... 3.7-exp; TranslationError, Inexpressible
- bind           a decoded JSON tree bound to a spec version's typed shape, as json.Unmarshal does
- version        go-semver style version parsing and the spec-version table

- validate       every rule over a typed config, duplicates, unused keys; positions in the text
- translate_v2   2.2 <-> 3.x
- merge          Ignition's merge (child over parent)

- parse          parse(raw) -> ParseResult: version detection, decode, bind, validate
- translate      translate(config, version): any supported version to any other
"""
