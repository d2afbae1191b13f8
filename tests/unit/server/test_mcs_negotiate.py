"""Accept header negotiation: every case of spec 4.2 with MCO's answer and ours side by side."""
from __future__ import annotations

import pytest

from mcs.negotiate import (
    MCO_MINORS, SemVer, UnsupportedVersion, negotiate, parse_accept, parse_semver, version_less,
)

IGN = "application/vnd.coreos.ignition+json"
ERR = "400"

# (Accept header, MCO's answer, ours). A difference is deliberate (DESIGN.md) and noted.
TABLE: list[tuple[str | None, str, str]] = [
    # Ignition 0.x sends 2.4.0 first: 2.x at or above 2.2 is served as 2.2.
    (f"{IGN}; version=2.4.0, {IGN}; version=1; q=0.5, */*; q=0.1", "2.2.0", "2.2.0"),
    (f"{IGN};version=3.1.0, */*;q=0.1", "3.1.0", "3.1.0"),
    (f"{IGN};version=3.2.0, */*;q=0.1", "3.2.0", "3.2.0"),
    (f"{IGN};version=3.3.0, */*;q=0.1", "3.3.0", "3.3.0"),
    (f"{IGN};version=3.4.0, */*;q=0.1", "3.4.0", "3.4.0"),
    (f"{IGN};version=3.5.0, */*;q=0.1", "3.5.0", "3.5.0"),
    (IGN, "2.2.0", "2.2.0"),                            # no version: default
    ("text/plain", "2.2.0", "2.2.0"),
    ("an-invalid-accept-header", "2.2.0", "2.2.0"),
    ("", "2.2.0", "2.2.0"),
    (None, "2.2.0", "2.2.0"),                           # no Accept header at all (curl)
    ("*/*", "2.2.0", "2.2.0"),
    (f"{IGN};version=3.99.0", "3.5.0", "3.6.0"),         # newer minor: newest we serve (we serve 3.6)
    (f"{IGN};version=4.0.0", ERR, ERR),
    # MCO negotiates 3.0 but then fails with 500 (no 3.5->3.0 path); we serve it.
    (f"{IGN};version=3.0.0", "3.0.0", "3.0.0"),
    # MCO falls back to 3.5; we serve 3.6 as asked.
    (f"{IGN};version=3.6.0, */*;q=0.1", "3.5.0", "3.6.0"),
    (f"{IGN};version=3.7.0-experimental", "3.5.0", "3.6.0"),
    (f"{IGN};version=2.2.0", "2.2.0", "2.2.0"),
    (f"{IGN};version=2.1.0", ERR, ERR),                 # old 2.x: unsupported
    (f"{IGN};version=1.0.0", ERR, ERR),
    (f"{IGN};version=3.2.1", "3.2.0", "3.2.0"),          # patch normalised
    (f"{IGN};version=2.2.0-rc.1", "2.2.0", "2.2.0"),     # below 2.2.0, but minor 2.2 is listed
    # q sorting: the highest q wins, ties keep header order.
    (f"{IGN};version=3.1.0;q=0.5, {IGN};version=3.4.0;q=0.9", "3.4.0", "3.4.0"),
    (f"{IGN};version=3.1.0, {IGN};version=3.4.0", "3.1.0", "3.1.0"),
    # The first qualifying entry decides, even if a later one would be served.
    (f"{IGN};version=4.0.0, {IGN};version=3.2.0;q=0.5", ERR, ERR),
    # Entries without a valid version are skipped.
    (f"{IGN};version=3.2, {IGN};version=3.3.0;q=0.1", "3.3.0", "3.3.0"),
    (f"{IGN};version=banana, */*", "2.2.0", "2.2.0"),
    # The first *valid* version parameter counts; an invalid one does not block a later one.
    (f"{IGN};version=x;version=3.4.0", "3.4.0", "3.4.0"),
    (f"{IGN};version=3.4.0;version=3.1.0", "3.4.0", "3.4.0"),
    # Invalid q is ignored (defaults to 1).
    (f"{IGN};version=3.1.0;q=abc, {IGN};version=3.4.0;q=0.5", "3.1.0", "3.1.0"),
    # Other subtypes never qualify, whatever their version parameter.
    ("application/json;version=3.4.0", "2.2.0", "2.2.0"),
    # Parameter names are case-sensitive as in MCO.
    (f"{IGN};Version=3.4.0", "2.2.0", "2.2.0"),
    (f" {IGN} ; version=3.4.0 ; q=1 ", "3.4.0", "3.4.0"),
    (f"{IGN};version=3.4.0+build.5", "3.4.0", "3.4.0"),
    (f"{IGN};version=03.04.00", "3.4.0", "3.4.0"),      # go-semver parses leading zeros
]


@pytest.mark.parametrize(("header", "mco", "ours"), TABLE)
def test_negotiation_table(header: str | None, mco: str, ours: str) -> None:
    for served, expected in ((MCO_MINORS, mco), (None, ours)):
        if expected == ERR:
            with pytest.raises(UnsupportedVersion):
                negotiate(header) if served is None else negotiate(header, served)
        else:
            got = negotiate(header) if served is None else negotiate(header, served)
            assert got == expected


def test_error_message_is_one_line() -> None:
    with pytest.raises(UnsupportedVersion) as e:
        negotiate(f"{IGN};version=4.0.0")
    assert str(e.value) == "unsupported Ignition version in Accept header: 4.0.0"


@pytest.mark.parametrize(("text", "expected"), [
    ("3.2.0", SemVer(3, 2, 0)), ("3.2.0-rc.1", SemVer(3, 2, 0, "rc.1")), ("3.2.0+meta", SemVer(3, 2, 0)),
    ("3.2", None), ("3.2.0.1", None), ("v3.2.0", None), ("3.2.x", None), ("3.2.0-", SemVer(3, 2, 0)),
    ("3.2.0-a..b", None), ("", None),
])
def test_parse_semver(text: str, expected: SemVer | None) -> None:
    assert parse_semver(text) == expected


def test_semver_order() -> None:
    assert SemVer(2, 2, 0, "rc") < SemVer(2, 2, 0)
    assert SemVer(3, 2, 0, "alpha.2") < SemVer(3, 2, 0, "alpha.10")
    assert not SemVer(3, 2, 0) < SemVer(3, 2, 0)
    assert version_less("3.2.0", "3.3.0") and not version_less("3.3.0", "3.3.0")


def test_parse_accept_drops_non_mime_and_sorts() -> None:
    entries = parse_accept("junk, text/plain;q=0.2, application/x;q=0.9")
    assert [(e.mime_type, e.mime_subtype, e.q) for e in entries] == [("application", "x", 0.9), ("text", "plain", 0.2)]
