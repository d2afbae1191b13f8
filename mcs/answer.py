"""The answer to `GET|HEAD /config/<pool>`, decided in one place for both front ends (the fast
path, mcs.fastpath, and aiohttp's handler, mcs.app): the bearer token, the pool, the spec version
(Accept), the server URL a store-mode answer names (Host), the cached answer, its coding
(Accept-Encoding) and conditional GET (If-None-Match). No I/O: each front end writes the answer
its own way, and a cache miss (`BUILD`) is built by the caller, then answered by `conditional`.
"""
from __future__ import annotations

import functools
import logging
import re
from typing import NamedTuple

from mcs.cache import Served
from mcs.negotiate import UnsupportedVersion, negotiate
from mcs.node_api import BEARER_CHALLENGE
from mcs.serve import NotAcceptable, NotFound, ServeError, valid_pool_name
from mcs.state import ServerState

# Every response's Server header, and the access log both front ends write alike.
SERVER_HEADER = "machine-config-server"
access_log = logging.getLogger("mcs.access")

# The status of an answer the cache has yet to build (`Answer.version` and `.variant` say which).
BUILD = 0


class Answer(NamedTuple):
    """200/304 with the served config and its coding, an error status with its one-line message
    (and extra headers), or BUILD. `version` is the negotiated spec version ("" before that)."""

    status: int
    version: str = ""
    served: Served | None = None
    gzip: bool = False
    message: str = ""
    headers: dict[str, str] | None = None
    variant: str = ""  # the server URL the answer names (store mode), for a BUILD
    detail: str = ""  # why a 406 or 500: for the server's log


_INVALID_POOL = Answer(404, message="no such pool: invalid pool name")
_UNAUTHORIZED = Answer(401, message="a valid bearer token for this pool is required",
                       headers=BEARER_CHALLENGE)


def decide(state: ServerState, pool: str, authorization: str | None, accept: str | None, scheme: str,
           host: str, accept_encoding: str, if_none_match: str | None) -> Answer:
    """The answer from the request's pool and headers and what the cache holds; never builds.
    Exceptions other than the source's NotFound/ServeError propagate (a 500 for aiohttp)."""
    if not _valid_pool(pool):
        return _INVALID_POOL  # checked before any file or store look-up
    if state.auth is not None and not state.auth.allows(pool, authorization):
        return _UNAUTHORIZED
    try:
        version = _negotiate(accept)
    except UnsupportedVersion as e:
        return Answer(400, message=str(e))
    variant = ""
    if state.per_server_url:
        url = server_url_for(state, scheme, host)
        if url is None:
            return Answer(400, version, message="invalid Host header")
        variant = url
    try:
        served = state.cache.peek(pool, version, variant)
    except (NotFound, ServeError) as e:
        return refusal(pool, version, e)
    if served is None:
        return Answer(BUILD, version, variant=variant)
    return conditional(served, accept_encoding, if_none_match)


def conditional(served: Served, accept_encoding: str, if_none_match: str | None) -> Answer:
    """The answer with `served`: 304 when If-None-Match names either coding's tag, else 200; gzip
    when there is a gzip body and the client takes it."""
    status = 304 if if_none_match is not None and served.matches(if_none_match) else 200
    use_gzip = served.gzip_body is not None and _accepts_gzip(accept_encoding)
    # Every field given to tuple.__new__: a third of the cost of NamedTuple's keyword constructor.
    return tuple.__new__(Answer, (status, served.version, served, use_gzip, "", None, "", ""))


def refusal(pool: str, version: str, error: NotFound | ServeError) -> Answer:
    """The answer when the pool or its config cannot be served (the source's error)."""
    if isinstance(error, NotFound):
        return Answer(404, version, message=str(error))
    if isinstance(error, NotAcceptable):
        return Answer(406, version, message=str(error), detail=str(error))
    return Answer(500, version, message=f"cannot serve pool {pool!r}: {error}", detail=str(error))


def accepts_gzip(accept_encoding: str) -> bool:
    """True when gzip (or *) is listed with a non-zero q."""
    for item in accept_encoding.split(","):
        name, *params = (p.strip() for p in item.split(";"))
        if name.lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


# A pool's machines send the same pool name and a handful of distinct Accept and Accept-Encoding
# headers: each is checked or parsed once (bounded: all are the client's to choose).
_valid_pool = functools.lru_cache(maxsize=256)(valid_pool_name)
_negotiate = functools.lru_cache(maxsize=256)(negotiate)
_accepts_gzip = functools.lru_cache(maxsize=256)(accepts_gzip)


_HOST = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")


def server_url_for(state: ServerState, scheme: str, host: str) -> str | None:
    """The URL a served machine should use for the node API: --advertise-url, else how it reached
    us (the request's scheme and Host header); None when the Host is not a host."""
    if state.advertise_url is not None:
        return state.advertise_url.rstrip("/")
    match = _HOST.match(host)
    if match is None or len(host) > 260:
        return None
    if scheme == "http" and state.node_api is not None and state.tls_port is not None:
        # The node API is served over TLS only: a config fetched from the plain port names the
        # TLS listener at the same host.
        return f"https://{match.group(1).lower()}:{state.tls_port}"
    # One URL per server, however the Host was spelled: host names are case-insensitive, and the
    # scheme's default port is the same as none (the URL keys the cached answer).
    host = host.lower()
    default = ":443" if scheme == "https" else ":80"
    if host.endswith(default):
        host = host[:-len(default)]
    return f"{scheme}://{host}"
