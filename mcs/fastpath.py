"""The hot path in front of aiohttp: a lean protocol that answers `GET|HEAD /config/<pool>` from the
served-config cache itself and hands the connection to aiohttp for anything else.

A joining machine's request is a short, well-formed HTTP/1.1 head. This protocol answers such heads
with the same bytes aiohttp would send (status line, header order, Date), counts them in the same
metrics, writes the same access-log line and keeps the same slow-client deadlines, but without
aiohttp's per-request objects: the whole response (head and body) is one prebuilt buffer per
(served config, coding, Date second), handed to the transport in one write; on plain HTTP a large
body is instead sent with os.sendfile from a sealed in-memory copy, a bounded piece per loop turn.
A head seen again within its Date second, while nothing that decided its answer can have changed,
gets the same bytes without being parsed or decided again (see Memo).

Anything it does not fully understand goes to aiohttp unchanged: another path or method, HTTP/1.0,
a query or percent-encoding, a body, an `Upgrade`/`Expect`, a repeated header it reads, any byte
outside printable ASCII, a head over the size limits, a request that would not be answered 200 or
304 (bad token, unknown pool, version 4, build error). The protocol then gives the connection,
with every byte it has not answered, to aiohttp's request handler, which parses and answers as it
always did (its one-line errors, its limits); the connection stays with aiohttp from then on.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any, Protocol, cast

from mcs.answer import BUILD, SERVER_HEADER, Answer, access_log, conditional, decide, server_url_for
from mcs.auth import SteadyAuthorizer
from mcs.cache import BodyFile, Served
from mcs.metrics import add_to_tally
from mcs.serve import valid_pool_name
from mcs.state import RequestWatcher, ServerState

log = logging.getLogger(__name__)

# The attribute a connection's deadline is kept in by mcs.server.ConnectionGuard.
DEADLINE_ATTR = "_mcs_deadline"

# `GET /config/<pool>[/] HTTP/1.1`; anything else (queries, %-escapes, other paths) is aiohttp's.
_REQUEST_LINE = re.compile(rb"(GET|HEAD) /config/([a-z0-9.-]{1,253})(/?) HTTP/1\.1")
# Header lines of token names and printable ASCII (or tab) values: a strict subset of what aiohttp
# (llhttp) accepts, so the fast path never answers a head aiohttp would have refused.
_HEADERS = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e]*\r\n)*")
# Headers whose presence means the request is not a plain read (a body, a protocol switch).
_REFUSED = frozenset({"content-length", "transfer-encoding", "upgrade", "expect", "te"})
_READ = frozenset({"accept", "accept-encoding", "if-none-match", "authorization", "host", "connection"})
# Unanswered bytes kept before handing over: more than aiohttp's limits, so it reports the error.
_MAX_PENDING = 64 * 1024
# What every head the fast path answers starts with; and bytes no such head holds (a bare LF line end,
# anything outside printable ASCII, tab and CR LF): an incomplete head that starts otherwise or holds
# one of them (an LF-only request, a TLS ClientHello on the plain port) is aiohttp's at once, not after
# the header timeout.
_STARTS = (b"GET /config/", b"HEAD /config/")
# Plain-HTTP bodies from this size on are sent by os.sendfile from a sealed copy (mcs.cache.BodyFile)
# rather than written from Python's bytes: no copy into the transport, and no more than SEND_TURN
# bytes per connection per loop turn, so with many connections a large answer cannot hold up the
# others (one big write would). Smaller ones are one transport write, as before.
SENDFILE_MIN = 64 * 1024
SEND_TURN = 256 * 1024
_NEVER_IN_HEAD = re.compile(rb"(?<!\r)\n|[^\t\r\n\x20-\x7e]")
# logging's cache of Logger.isEnabledFor answers for the access log (CPython's; None elsewhere).
_ACCESS_CACHE: dict[int, bool] | None = getattr(access_log, "_cache", None)
# Distinct request heads whose answers are remembered per listener and Date second (see Memo).
MEMO_MAX = 256

# The answer to one request head, remembered for the rest of its Date second while what decided it
# holds still: the cache's generation and the time its pool's inputs are looked at again
# (ServedConfigCache.steady_until), the authorizer, its version and the time it looks at its token
# files again (mcs.auth.SteadyAuthorizer), and the TLS port a served URL may name. Until then,
# decide() is a pure function of the head's bytes, so the same bytes get the same answer: this is
# exactly what the full path would write, without parsing and deciding again. Only 200 and 304
# answers not closing the connection are remembered: written in one call, or a 200 whose body went
# by os.sendfile (then the memo keeps the head's bytes and the body's BodyFile). Fields: the wire
# bytes (the head only when a body file follows), the body file or None, valid-until
# (time.monotonic()), the authorizer, its version, the cache's generation, the TLS port, the cache
# key to touch (a variant's, else None), the metrics' tally (ServerMetrics.served_tally) and, for
# the access log, version, status, method and raw path.
# A body file in a memo belongs to a Served that FastPath._responses holds for the same Date second
# and is dropped with it (both are cleared together), so the memo keeps no file alive longer than
# that; a strong reference (never its bare descriptor), so the file cannot be closed under a memo or
# a send (BodyFile closes its descriptor only when the last reference goes), and no reference back.
Memo = tuple[bytes, "BodyFile | None", float, "SteadyAuthorizer | None", int, int, "int | None",
             "tuple[str, str, str, str] | None", list[Any], str, int, str, str]


def may_be_fast(partial: bytes) -> bool:
    """False when `partial` (bytes of a head not yet complete) can never become a head we answer."""
    if not any(partial[:len(s)] == s[:len(partial)] for s in _STARTS):
        return False
    return _NEVER_IN_HEAD.search(partial) is None


class Responses:
    """The prebuilt wire bytes of one Served: head+body per coding, heads for HEAD and 304."""

    __slots__ = ("date", "full", "full_gz", "head", "head_gz", "not_modified", "not_modified_gz")

    def __init__(self, served: Served, date: str) -> None:
        tail = f"Server: {SERVER_HEADER}\r\n".encode()
        date_line = f"Date: {date}\r\n\r\n".encode()

        def head(status: str, headers: dict[str, str], length: int | None) -> bytes:
            lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            size = f"Content-Length: {length}\r\n" if length is not None else ""
            return f"HTTP/1.1 {status}\r\n{lines}".encode() + tail + size.encode() + date_line

        self.date = date
        self.head = head("200 OK", served.headers, len(served.body))
        self.full = self.head + served.body
        self.not_modified = head("304 Not Modified", served.validators(served.etag), None)
        if served.gzip_body is not None:
            self.head_gz = head("200 OK", served.gzip_headers, len(served.gzip_body))
            self.full_gz = self.head_gz + served.gzip_body
            self.not_modified_gz = head("304 Not Modified", served.validators(served.gzip_etag), None)
        else:
            self.head_gz, self.full_gz, self.not_modified_gz = self.head, self.full, self.not_modified


class ConnectionWatcher(RequestWatcher, Protocol):
    """The slow-client deadlines (mcs.server.ConnectionGuard): told of connections and requests."""

    header_timeout: float  # from the end of a response to the next request head

    def connection_made(self, handler: Any) -> None: ...

    def connection_lost(self, handler: Any) -> None: ...


class FastPath:
    """What the fast protocols of one listener share: the state, the deadlines, the prebuilt bytes."""

    def __init__(self, state: ServerState, guard: ConnectionWatcher | None = None, scheme: str = "http") -> None:
        self.state = state
        self.guard = guard
        self.scheme = scheme
        self.second = -1
        self._date = ""
        # id(served) -> (served, its responses at the current Date); cleared every second, so it
        # holds only what was asked for within the last second.
        self._responses: dict[int, tuple[Served, Responses]] = {}
        # (max_headers, max_size) of the protocols -> request head -> its Memo; cleared with the
        # responses every second.
        self._memos: dict[tuple[int, int], dict[bytes, Memo]] = {}
        self.answered = 0
        self.handed_over = 0
        self._stamp_auth: object = None
        self._steady: SteadyAuthorizer | None = None

    def responses(self, served: Served) -> Responses:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self._date = formatdate(now, usegmt=True)
            self._responses.clear()
            for memo in self._memos.values():
                memo.clear()
        hit = self._responses.get(id(served))
        if hit is not None and hit[0] is served:
            return hit[1]
        built = Responses(served, self._date)
        self._responses[id(served)] = (served, built)
        return built

    def memos(self, max_headers: int, max_size: int) -> dict[bytes, Memo]:
        """The memo of the protocols with these limits (a head's parse depends on them)."""
        return self._memos.setdefault((max_headers, max_size), {})

    def stamp(self) -> tuple[SteadyAuthorizer | None, int, int] | None:
        """The authorizer, its version and the cache's generation, read before deciding (a token
        file may be reloaded by another thread meanwhile: an answer is remembered with what held
        before it was decided); None when the authorizer is not a SteadyAuthorizer."""
        state = self.state
        auth = state.auth
        if auth is None:
            return None, 0, state.cache.generation
        if auth is not self._stamp_auth:  # a runtime Protocol check is slow: once per authorizer
            self._stamp_auth = auth
            self._steady = auth if isinstance(auth, SteadyAuthorizer) else None
        steady = self._steady
        return None if steady is None else (steady, steady.version, state.cache.generation)

    def remember(self, memos: dict[bytes, Memo], head: bytes, wire: bytes, request: Request,
                 version: str, status: int, served: Served,
                 stamp: tuple[SteadyAuthorizer | None, int, int], file: BodyFile | None = None) -> None:
        """Remember `wire` (and the body `file` sent after it, if any) as the answer to `head`, if
        what decided it holds still for a while."""
        state = self.state
        auth, auth_version, generation = stamp
        if state.auth is not auth:
            return
        cache = state.cache
        until = cache.steady_until(request.pool)
        if auth is not None:
            until = min(until, auth.next_check)
        if until <= time.monotonic() or (head not in memos and len(memos) >= MEMO_MAX):
            return
        variant = _variant_of(state, self.scheme, request) if state.per_server_url else ""
        touch = (request.pool, served.config_name, version, variant) if variant else None
        memos[head] = (wire, file, until, auth, auth_version, generation, state.tls_port, touch,
                       state.metrics.served_tally(request.pool, version, status), version, status,
                       "HEAD" if request.head_method else "GET", request.raw_path)


def _variant_of(state: ServerState, scheme: str, request: Request) -> str:
    """The cache key's variant decide() used for `request` (store mode: the server URL)."""
    return server_url_for(state, scheme, request.host) or ""


class Request:
    """The parts of a fast-path request head that the answer depends on."""

    __slots__ = ("head_method", "pool", "raw_path", "accept", "accept_encoding", "if_none_match",
                 "authorization", "host", "close")

    def __init__(self, head_method: bool, pool: str, raw_path: str, headers: dict[str, str], close: bool) -> None:
        self.head_method = head_method
        self.pool = pool
        self.raw_path = raw_path
        self.accept = headers.get("accept")
        self.accept_encoding = headers.get("accept-encoding", "")
        self.if_none_match = headers.get("if-none-match")
        self.authorization = headers.get("authorization")
        self.host = headers.get("host", "")
        self.close = close


def parse_head(head: bytes, max_headers: int, max_size: int = 8190) -> Request | None:
    """A request head (without its final CRLF CRLF) the fast path may answer, or None. A head
    over `max_size` bytes (aiohttp's line and field limits) or `max_headers` lines is aiohttp's."""
    if len(head) > max_size:
        return None
    return _parse_head_cached(head, max_headers)


def _parse_head(head: bytes, max_headers: int) -> Request | None:
    line_end = head.find(b"\r\n")
    if line_end < 0:
        return None
    m = _REQUEST_LINE.fullmatch(head, 0, line_end)
    if m is None:
        return None
    block = head[line_end + 2:] + b"\r\n"
    if _HEADERS.fullmatch(block) is None:
        return None
    headers: dict[str, str] = {}
    lines = block.decode("ascii").split("\r\n")[:-1]
    if len(lines) > max_headers:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        name = name.lower()
        if name in _REFUSED:
            return None
        if name in _READ:
            if name in headers:
                return None  # which one counts is aiohttp's to decide
            headers[name] = value.strip(" \t")
    if "host" not in headers:
        return None  # HTTP/1.1 requires it; aiohttp answers 400
    close = False
    if "connection" in headers:
        tokens = {t.strip().lower() for t in headers["connection"].split(",")}
        if not tokens <= {"keep-alive", "close"}:
            return None
        close = "close" in tokens
    pool = m.group(2).decode()
    if not valid_pool_name(pool):
        return None
    raw_path = f"/config/{pool}{m.group(3).decode()}"
    return Request(m.group(1) == b"HEAD", pool, raw_path, headers, close)


# Joining machines of a pool send byte-identical heads (Ignition's client, the same Accept, Host and
# pool token), so a head is parsed once; bounded, as heads are the clients' to choose. A Request is
# never changed after parsing.
_parse_head_cached = functools.lru_cache(maxsize=512)(_parse_head)


class FastProtocol(asyncio.Protocol):
    """One connection: answers cached config reads itself, else hands over to `fallback()`."""

    def __init__(self, fast: FastPath, fallback: Callable[[], asyncio.Protocol], max_headers: int,
                 max_size: int) -> None:
        self.fast = fast
        self._fallback = fallback
        self._max_headers = max_headers
        self._max_size = max_size
        self._memos = fast.memos(max_headers, max_size)
        # The slow-client deadline (DEADLINE_ATTR), kept by the guard; None while it watches none.
        self._mcs_deadline: float | None = None
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._remote = "-"
        self._write_paused = False
        self._read_paused = False
        self._busy = False  # waiting for a build, or for the transport to drain
        self._closing = False
        self._building = False
        # A body being sent with os.sendfile (see _send_some): a socket on a duplicate of the
        # connection's descriptor (the loop refuses a watcher on a transport's own), the head
        # still to send, the file, the next offset, whether the client ended its side meanwhile,
        # and whether the loop watches the duplicate for room to write.
        self._sock: socket.socket | None = None
        self._head_left = b""
        self._file: BodyFile | None = None
        self._offset = 0
        self._eof = False
        self._watching = False

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, (tuple, list)) and peer:
            self._remote = str(peer[0])
        watcher = self.fast.guard
        if watcher is not None:
            watcher.connection_made(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        watcher = self.fast.guard
        if watcher is not None:
            watcher.connection_lost(self)
        self._release_socket()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if not self._buffer and not self._busy and not self._read_paused and not self._closing:
            # The usual turn: one whole head a remembered answer is kept for. (A memo key holds no
            # CR LF CR LF, so data with two heads never matches; then the loop below takes it.)
            memo = self._memos.get(data[:-4]) if self._memos and data.endswith(b"\r\n\r\n") else None
            if memo is not None and self._answer_again(memo):
                return
        self._buffer = self._buffer + data if self._buffer else data
        if not self._busy:
            self._process()
        elif len(self._buffer) > _MAX_PENDING and not self._read_paused and self.transport is not None:
            self._read_paused = True  # a pipelining client: wait until we catch up
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        if self._file is not None:
            self._eof = True  # the transport knows nothing of the body in flight: close after it
            return True
        return None  # close our side too (after any buffered response is written)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._busy and not self._building and self._file is None:
            self._busy = False
            self._finished_response()
            self._process()

    # -- requests -----------------------------------------------------------------------------------

    def _process(self) -> None:
        while self._buffer and not self._busy and self.transport is not None and not self._closing:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > _MAX_PENDING or not may_be_fast(self._buffer):
                    self._handover()
                return
            head = self._buffer[:end]
            memo = self._memos.get(head) if self._memos else None
            if memo is None or not self._answer_again(memo):
                request = parse_head(head, self._max_headers, self._max_size)
                if request is None:
                    self._handover()
                    return
                if not self._answer(request, head=head):
                    return  # handed over, or waiting for a build
            self._buffer = self._buffer[end + 4:]
        if self._read_paused and not self._busy and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    def _answer_again(self, memo: Memo) -> bool:
        """Write the remembered answer (True) if it is still what _answer would write, else False."""
        wire, file, until, auth, auth_version, generation, tls_port, touch, tally, version, status, method, \
            raw_path = memo
        fast = self.fast
        state = fast.state
        started = time.monotonic()
        if started >= until or int(time.time()) != fast.second or state.auth is not auth \
                or (auth is not None and auth.version != auth_version) or state.cache.generation != generation \
                or state.tls_port != tls_port:
            return False
        transport = self.transport
        if transport is None:
            return False
        if file is not None and (self._sock is None or transport.get_write_buffer_size()):
            # The body goes by os.sendfile only on a connection _direct_ready has passed (plain TCP,
            # its duplicate made) with nothing buffered before it: else the full path decides.
            return False
        if touch is not None:
            state.cache.touch(touch)
        fast.answered += 1
        if file is None:
            transport.write(wire)
            sending = False
        else:
            sending = self._start_send(wire, file)
        finished = time.monotonic()
        elapsed = finished - started
        add_to_tally(tally, elapsed)  # as ServerMetrics.observe_served does
        # access_log.isEnabledFor(INFO) without its call (a tenth of this method): logging's own
        # answer cache, which every level change clears; isEnabledFor fills it when empty.
        if not access_log.disabled and (_ACCESS_CACHE.get(logging.INFO) if _ACCESS_CACHE is not None else None) \
                is not False and access_log.isEnabledFor(logging.INFO):
            access_log.info("%s %s %s %d %s %.1fms", self._remote, method, raw_path, status, version, elapsed * 1000)
        if sending:
            self._request_started()
            return True  # _on_writable finishes the response when the body is out
        if self._write_paused:
            self._request_started()
            self._busy = True  # the next request waits until the client has taken this answer
            return True
        # The next head's deadline, as the guard's request_finished sets it (a connection it still
        # watches has one). Inlined for speed: calling request_finished here measured 1.34-1.43 us
        # per in-process answer instead of 1.10-1.12 (its type check, getattr and clock read);
        # test_mcs_memo pins the copy (the deadline of a remembered answer).
        if self._mcs_deadline is not None and fast.guard is not None:
            self._mcs_deadline = finished + fast.guard.header_timeout
        return True

    def _answer(self, request: Request, answer: Answer | None = None, started: float | None = None,
                head: bytes | None = None) -> bool:
        """Answer `request` (True), or hand the connection over / start a build (False); `head`, its
        bytes, to remember the answer by (see Memo)."""
        # The response deadline starts with the request; an answer written at once moves straight
        # on to the next head's deadline, so only the other outcomes set it (nothing can look at
        # it in between: no await).
        fresh = started is None
        if started is None:
            started = time.perf_counter()
        stamp = self.fast.stamp() if head is not None and fresh else None
        if answer is None:
            try:
                answer = decide(self.fast.state, request.pool, request.authorization, request.accept,
                                self.fast.scheme, request.host, request.accept_encoding, request.if_none_match)
            except Exception:  # noqa: BLE001 - aiohttp answers (or fails) the same way
                answer = None
            if answer is None:
                self._started_and_handover()
                return False
        status, version, served, use_gzip, _, _, variant, _ = answer  # one unpacking: per request
        if status == BUILD:
            self._request_started()
            self._build(request, version, variant, started)
            return False
        if served is None:  # an error: aiohttp's to answer
            self._started_and_handover()
            return False
        responses = self.fast.responses(served)
        if status == 304:
            wire = responses.not_modified_gz if use_gzip else responses.not_modified
        elif request.head_method:
            wire = responses.head_gz if use_gzip else responses.head
        else:
            wire = responses.full_gz if use_gzip else responses.full
        if request.close:  # as aiohttp: say so after the Date line
            head_len = len(wire) if status == 304 or request.head_method else \
                len(responses.head_gz if use_gzip else responses.head)
            wire = wire[:head_len - 2] + b"Connection: close\r\n\r\n" + wire[head_len:]
        transport = self.transport
        if transport is None:
            return False
        self.fast.answered += 1
        sending = False  # the body still going out by os.sendfile after this call
        body_len = len(served.gzip_body if use_gzip and served.gzip_body is not None else served.body)
        file = None
        if status == 200 and not request.head_method and body_len >= SENDFILE_MIN and self._direct_ready():
            try:
                file = served.body_file(use_gzip)
            except OSError as e:  # no memfd to be had (descriptors exhausted): one write, as before
                log.debug("no body file for %s: %s", request.pool, e)
        if file is not None:
            head_wire = wire[:len(wire) - body_len]
            sending = self._start_send(head_wire, file)
            if stamp is not None and head is not None and not request.close:
                self.fast.remember(self._memos, head, head_wire, request, version, status, served, stamp, file)
        else:
            # bytes, not a view: uvloop (the default loop) keeps a reference to what the socket
            # refused and wraps anything but bytes in two new memoryviews per call (0.2-0.3 us);
            # asyncio's loop copies what the socket refused either way (bytes: once more).
            transport.write(wire)
            if stamp is not None and head is not None and not request.close and (
                    status != 200 or request.head_method or body_len < SENDFILE_MIN):
                self.fast.remember(self._memos, head, wire, request, version, status, served, stamp)
        elapsed = time.perf_counter() - started
        self.fast.state.metrics.observe_served(request.pool, version, status, elapsed)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("%s %s %s %d %s %.1fms", self._remote, "HEAD" if request.head_method else "GET",
                            request.raw_path, status, version, elapsed * 1000)
        if request.close or sending or self._write_paused:
            if fresh:
                self._request_started()
        if request.close:
            self._closing = True
            if not sending:
                transport.close()  # after the buffered response is written
            return True
        if sending:
            return True  # _on_writable finishes the response when the body is out
        if self._write_paused:
            self._busy = True  # the next request waits until the client has taken this answer
            return True
        self._finished_response()
        return True

    def _request_started(self) -> None:
        watcher = self.fast.guard
        if watcher is not None:
            watcher.request_started(self)

    def _started_and_handover(self) -> None:
        self._request_started()  # aiohttp's protocol takes over the deadline as it stands
        self._handover()

    # -- large bodies by os.sendfile -----------------------------------------------------------------

    def _direct_ready(self) -> bool:
        """True when the body may go out by os.sendfile: plain TCP, nothing left in the transport's
        buffer (bytes must stay in order), a duplicate descriptor and the body file to be had."""
        transport = self.transport
        if transport is None or self.fast.scheme != "http" or transport.get_extra_info("sslcontext") is not None:
            return False
        if transport.get_write_buffer_size() or transport.is_closing():
            return False
        if self._sock is None:
            raw = transport.get_extra_info("socket")
            if raw is None:
                return False
            try:
                sock = socket.socket(fileno=os.dup(raw.fileno()))
                sock.setblocking(False)
            except OSError:
                return False
            self._sock = sock
        return True

    def _start_send(self, head: bytes, file: BodyFile) -> bool:
        """Send what the socket takes now; True when the rest goes on from the loop (busy till then)."""
        self._head_left = head
        self._file = file
        self._offset = 0
        if self._send_some():
            self._stop_send()
            return False
        self._busy = True
        return True

    def _send_some(self) -> bool:
        """Send the head, then at most SEND_TURN bytes of the body; watch for room if any is left.
        True when the whole answer is sent, or the connection failed (then it is aborted)."""
        sock, file, transport = self._sock, self._file, self.transport
        if sock is None or file is None or transport is None or transport.is_closing():
            return True
        budget = SEND_TURN
        try:
            while self._head_left:
                self._head_left = self._head_left[sock.send(self._head_left, socket.MSG_MORE):]
            while self._offset < file.size and budget > 0:
                sent = os.sendfile(sock.fileno(), file.fd, self._offset, min(budget, file.size - self._offset))
                if sent == 0:
                    raise BrokenPipeError("sendfile sent nothing")
                self._offset += sent
                budget -= sent
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            log.debug("sending a body to %s failed: %s", self._remote, e)
            transport.abort()  # the client is gone; connection_lost follows
            return True
        if self._offset < file.size or self._head_left:
            if not self._watching:
                asyncio.get_running_loop().add_writer(sock.fileno(), self._on_writable)
                self._watching = True
            return False
        return True

    def _on_writable(self) -> None:
        if not self._send_some():
            return
        self._stop_send()
        self._busy = False
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._closing:
            transport.close()
            return
        self._finished_response()
        self._process()
        if self._eof and not self._busy and self.transport is not None:
            self.transport.close()  # every complete request the client sent before its EOF is answered

    def _stop_send(self) -> None:
        if self._watching and self._sock is not None:
            asyncio.get_running_loop().remove_writer(self._sock.fileno())
        self._watching = False
        self._file = None
        self._head_left = b""

    def _release_socket(self) -> None:
        self._stop_send()
        if self._sock is not None:
            self._sock.close()  # the duplicate only: the transport owns the connection
            self._sock = None

    def _finished_response(self) -> None:
        watcher = self.fast.guard
        if watcher is not None:
            watcher.request_finished(self)

    def _build(self, request: Request, version: str, variant: str, started: float) -> None:
        """A cache miss: build off the loop, then answer (or hand over on any error)."""
        self._busy = self._building = True

        def done(task: asyncio.Future[Served]) -> None:
            self._building = False
            self._busy = False
            if self.transport is None or task.cancelled():
                return
            if task.exception() is not None:
                self._handover()  # aiohttp decides again and answers the error
                return
            end = self._buffer.find(b"\r\n\r\n")
            built = conditional(task.result(), request.accept_encoding, request.if_none_match)
            if self._answer(request, built, started):
                self._buffer = self._buffer[end + 4:]
                self._process()

        task = asyncio.ensure_future(self.fast.state.cache.get(request.pool, version, variant))
        task.add_done_callback(done)

    def _handover(self) -> None:
        """Give the connection and every unanswered byte to aiohttp's protocol."""
        transport = self.transport
        if transport is None:
            return
        self.fast.handed_over += 1
        self._release_socket()
        protocol = self._fallback()
        watcher = self.fast.guard
        deadline = getattr(self, DEADLINE_ATTR, None)
        if watcher is not None:
            watcher.connection_lost(self)
        self.transport = None
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if deadline is not None and getattr(protocol, DEADLINE_ATTR, None) is not None:
            setattr(protocol, DEADLINE_ATTR, deadline)  # no fresh allowance for a slow client
        if self._write_paused:
            protocol.pause_writing()
        data, self._buffer = self._buffer, b""
        if data:
            protocol.data_received(data)
        if self._eof and not protocol.eof_received():
            transport.close()  # as the loop does when a protocol does not keep a half-closed connection
        if self._read_paused:
            transport.resume_reading()


def fast_factory(fast: FastPath, fallback: Callable[[], asyncio.Protocol], max_headers: int,
                 max_size: int) -> Callable[[], asyncio.Protocol]:
    """Protocols for a listener; `max_size` is the smaller of aiohttp's line and field limits."""
    def factory() -> FastProtocol:
        return FastProtocol(fast, fallback, max_headers, max_size)

    return factory
