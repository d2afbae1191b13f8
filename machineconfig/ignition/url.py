"""URL rules for Ignition `source` fields: Go net/url.Parse's acceptance, per-version schemes, S3
version ids, S3 ARNs and data URLs, with upstream's error texts.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import unquote_plus

from machineconfig.errors import MachineConfigError
from machineconfig.ignition import dataurl

ERR_INVALID_URL = "unable to parse url"
ERR_INVALID_SCHEME = "invalid url scheme"
ERR_S3_VERSION_ID = "invalid S3 object VersionId"
ERR_S3_ARN = "invalid S3 ARN format"

_UNRESERVED_HOST = set("!$&'()*+,;=:[]<>\"-._~")
_USERINFO_EXTRA = set("-._:~!$&'()*+,;=%@")
_CONTROL = re.compile("[\\x00-\\x1f\\x7f]")
# A '%' not followed by two hex digits (what _unescape_ok refuses outside hosts).
_BAD_ESCAPE = re.compile("%(?![0-9a-fA-F]{2})")
# Sources whose parse and data-URL decoding are remembered, bounded by their total length.
CACHE_BUDGET_CHARS = 32 << 20


class URLError(MachineConfigError, ValueError):
    """net/url.Parse failed."""


@dataclass(frozen=True)
class GoURL:
    scheme: str  # lower-cased, as Go stores it
    opaque: str
    host: str
    path: str
    raw_query: str


def _unescape_ok(text: str, host: bool = False) -> bool:
    if not host:
        return "%" not in text or _BAD_ESCAPE.search(text) is None
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%":
            if len(text) < i + 3 or any(h not in "0123456789abcdefABCDEF" for h in text[i + 1:i + 3]):
                return False
            # In a host, escapes may only encode non-ASCII bytes (or be %25, for IPv6 zones).
            if host and int(text[i + 1], 16) < 8 and text[i:i + 3] != "%25":
                return False
            i += 3
            continue
        if host and ord(c) < 0x80 and not (c.isalnum() or c in _UNRESERVED_HOST):
            return False
        i += 1
    return True


def _valid_port(port: str) -> bool:
    return port == "" or (port.startswith(":") and all("0" <= c <= "9" for c in port[1:]))


def _check_authority(authority: str) -> str:
    at = authority.rfind("@")
    host = authority[at + 1:] if at >= 0 else authority
    if at >= 0:
        userinfo = authority[:at]
        if not all(c.isascii() and (c.isalnum() or c in _USERINFO_EXTRA) for c in userinfo):
            raise URLError("invalid userinfo")
        if not _unescape_ok(userinfo):
            raise URLError("invalid escape in userinfo")
    if host.startswith("["):
        end = host.rfind("]")
        if end < 0:
            raise URLError("missing ']' in host")
        if not _valid_port(host[end + 1:]):
            raise URLError("invalid port")
    else:
        colon = host.rfind(":")
        if colon >= 0 and not _valid_port(host[colon:]):
            raise URLError("invalid port")
        if not _unescape_ok(host, host=True):
            raise URLError("invalid host")
    return host


def go_url_parse(raw: str) -> GoURL:
    """The parts of Go's url.Parse this package needs; raise URLError where Go returns an error."""
    rest, _, fragment = raw.partition("#")
    if not _unescape_ok(fragment):
        raise URLError("invalid fragment escape")
    # (printable ASCII is exactly ASCII without controls and DEL; both tests are cheap C loops)
    if not (rest.isascii() and rest.isprintable()) and _CONTROL.search(rest):
        raise URLError("invalid control character in URL")
    scheme = ""
    for i, c in enumerate(rest):
        if c.isascii() and c.isalpha():
            continue
        if c.isascii() and (c.isdigit() or c in "+-."):
            if i == 0:
                break
            continue
        if c == ":":
            if i == 0:
                raise URLError("missing protocol scheme")
            scheme, rest = rest[:i].lower(), rest[i + 1:]
        break
    if rest.endswith("?") and rest.count("?") == 1:
        rest, query = rest[:-1], ""
    else:
        rest, _, query = rest.partition("?")
    if not rest.startswith("/"):
        if scheme:
            return GoURL(scheme, rest, "", "", query)
        if ":" in rest.partition("/")[0]:
            raise URLError("first path segment in URL cannot contain colon")
    host = ""
    if (scheme or not rest.startswith("///")) and rest.startswith("//"):
        authority, slash, tail = rest[2:].partition("/")
        host = _check_authority(authority)
        rest = slash + tail
    if not _unescape_ok(rest):
        raise URLError("invalid escape in path")
    return GoURL(scheme, "", host, rest, query)


def _query_has_empty(raw_query: str, key: str) -> bool:
    """url.Values lookup: is `key` present with an empty first value? (pairs failing to unescape are skipped)"""
    for pair in raw_query.split("&"):
        if not pair or ";" in pair:
            continue
        k, _, v = pair.partition("=")
        if not _unescape_ok(k) or not _unescape_ok(v):
            continue
        if unquote_plus(k) == key:
            return unquote_plus(v) == ""
    return False


def _validate_arn(u: GoURL) -> str | None:
    full = u.scheme + ":" + u.opaque
    if full.count(":") < 5:
        return ERR_S3_ARN
    sections = full.split(":", 5)
    service, resource = sections[2], sections[5]
    if service != "s3":
        return ERR_S3_ARN
    parts = full.split("/")
    if resource.startswith("accesspoint/"):
        if len(parts) < 3:
            return ERR_S3_ARN
    elif len(parts) < 2:
        return ERR_S3_ARN
    return None


def schemes_for(minor: int) -> frozenset[str]:
    """URL schemes a spec 3.<minor> config may use in a source."""
    base = {"http", "https", "tftp", "s3", "data"}
    if minor >= 2:
        base.add("gs")
    if minor >= 4:
        base.add("arn")
    return frozenset(base)


class _SourceCache:
    """What validate_url learns from a source string alone: its parse and, for data URLs, the
    decoder's verdict. Ignition validates a source at its own version and MCO again at 3.5 after
    translation; both are pure functions of the string, so the second time is a lookup. LRU,
    bounded by the total length of the sources kept."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self.entries: OrderedDict[str, tuple[GoURL | None, str | None]] = OrderedDict()

    def facts(self, source: str) -> tuple[GoURL | None, str | None]:
        hit = self.entries.get(source)
        if hit is not None:
            self.entries.move_to_end(source)
            return hit
        try:
            u: GoURL | None = go_url_parse(source)
        except URLError:
            u = None
        problem = None
        if u is not None and u.scheme == "data":
            try:
                dataurl.decode(source)
            except dataurl.DataURLError as e:
                problem = str(e)
        hit = (u, problem)
        if len(source) <= self.budget:
            self.entries[source] = hit
            self.size += len(source)
            while self.size > self.budget:
                old, _ = self.entries.popitem(last=False)
                self.size -= len(old)
        return hit

    def clear(self) -> None:
        self.entries.clear()
        self.size = 0


_SOURCES = _SourceCache(CACHE_BUDGET_CHARS)


def clear_caches() -> None:
    """Forget remembered source verdicts (benchmarks measure cold runs with it)."""
    _SOURCES.clear()


def validate_url(source: str, minor: int) -> str | None:
    """Upstream validateURL: None when valid, else the error text."""
    u, data_problem = _SOURCES.facts(source)
    if u is None:
        return ERR_INVALID_URL
    if u.scheme not in schemes_for(minor):
        return ERR_INVALID_SCHEME
    if u.scheme == "s3" and _query_has_empty(u.raw_query, "versionId"):
        return ERR_S3_VERSION_ID
    if u.scheme == "arn":
        problem = _validate_arn(u)
        if problem:
            return problem
        if _query_has_empty(u.raw_query, "versionId"):
            return ERR_S3_VERSION_ID
    if u.scheme == "data":
        return data_problem
    return None


def validate_url_nil_ok(source: str | None, minor: int) -> str | None:
    """Null and empty sources are valid wherever a source is optional."""
    if not source:
        return None
    return validate_url(source, minor)


def http_scheme(source: str) -> str | None:
    """The lower-cased scheme of a parsable URL, or None when Go cannot parse it."""
    try:
        return go_url_parse(source).scheme
    except URLError:
        return None


def url_scheme(source: str) -> str:
    """The scheme Go's url.Parse would report (lower-cased), or "" when the string has none."""
    head, sep, _ = source.partition(":")
    if not sep or not head or not head[0].isalpha():
        return ""
    if not all(c.isalnum() or c in "+-." for c in head):
        return ""
    return head.lower()
