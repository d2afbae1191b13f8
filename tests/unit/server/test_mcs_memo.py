"""The fast path's remembered answers (mcs.fastpath.Memo): the same bytes, metrics, access log and
deadlines as a fresh answer, and never an answer that a fresh decision would no longer give: a token
change, a forced token reload, a new authorizer, a pool change and a new Date second all take effect
exactly when they do without the memo. Driven in process (a FastProtocol on a recording transport),
so the timing is the test's own. Each check is run on both kinds of remembered answer: one written in
one call (a small gzip body) and one whose body goes by os.sendfile (a large identity body, on a
real loopback connection the recording transport hands out as its socket).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
import weakref
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

import mcs.fastpath
from mcs.auth import AnyOf, TokenAuth
from mcs.cache import BodyFile
from mcs.fastpath import MEMO_MAX, SENDFILE_MIN, FastPath, FastProtocol
from mcs.options import BootstrapOptions
from mcs.server import ConnectionGuard
from mcs.state import ServerState, build_state
from mcs.tokens import POOL_TOKENS_FILE, PoolTokens
from tests.unit.server.test_mcs_layout import WORKER_CONFIG_NEW, ignition_config, machine_config, pool, \
    write_layout, write_yaml

ACCEPT = "application/vnd.coreos.ignition+json;version=3.5.0, */*;q=0.1"
TOKEN_A = "memo-token-a-51c0"
TOKEN_B = "memo-token-b-9e77"


class Recorder:
    """A transport that keeps what is written; the protocol it is given to is the fast path's."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


class SocketRecorder(Recorder):
    """A Recorder whose socket is the server end of a real loopback TCP connection (`peer` is the
    client's end): the fast path sends large bodies on it by os.sendfile."""

    def __init__(self) -> None:
        super().__init__()
        with socket.create_server(("127.0.0.1", 0)) as listener:
            self.peer = socket.create_connection(listener.getsockname())
            self.sock, _ = listener.accept()
        self.peer.setblocking(False)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else super().get_extra_info(name, default)

    def close(self) -> None:
        super().close()
        self.sock.close()
        self.peer.close()


class HandedOver:
    """What aiohttp's protocol would be: records the bytes it is handed."""

    def __init__(self) -> None:
        self.data = b""

    def connection_made(self, transport: Any) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        return False


# Clients of the running scenario, closed by run().
_CLIENTS: list["Client"] = []


class Client:
    """One keep-alive connection to a FastPath; `sendfile`: asking for the large body by identity
    on a real connection (see SocketRecorder), which the fast path sends by os.sendfile."""

    def __init__(self, fast: FastPath, sendfile: bool = False) -> None:
        self.fast = fast
        self.sendfile = sendfile  # whether an answer is expected by os.sendfile
        self.coding = "identity" if sendfile else "gzip"
        self.transport = SocketRecorder() if sendfile else Recorder()
        self.fallback = HandedOver()
        self.protocol = FastProtocol(fast, lambda: self.fallback, 64, 8190)  # type: ignore[arg-type,return-value]
        self.protocol.connection_made(self.transport)  # type: ignore[arg-type]
        _CLIENTS.append(self)

    async def get(self, token: str | None = None, host: str = "127.0.0.1:22623") -> bytes | None:
        """The answer written (or sent by os.sendfile) for one GET, or None when the connection was
        handed over."""
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        head = f"GET /config/worker HTTP/1.1\r\nHost: {host}\r\nAccept: {ACCEPT}\r\n{auth}" \
               f"Accept-Encoding: {self.coding}\r\n\r\n"
        before = len(self.transport.writes)
        self.protocol.data_received(head.encode())
        give_up = time.monotonic() + 30
        sent = b""
        while len(self.transport.writes) == before and self.protocol.transport is not None:
            assert time.monotonic() < give_up, "never answered"
            if isinstance(self.transport, SocketRecorder):
                try:
                    sent += self.transport.peer.recv(1 << 20)
                except BlockingIOError:
                    pass
                whole = _whole_response(sent)
                if whole is not None:
                    assert len(whole) == len(sent), "more than one answer"
                    assert len(whole) - whole.index(b"\r\n\r\n") - 4 >= SENDFILE_MIN
                    return whole
            await asyncio.sleep(0.001 if sent else 0.01)  # the rest of a body, or a build off the loop
        if self.protocol.transport is None:
            return None
        assert len(self.transport.writes) == before + 1 and not sent
        assert not self.sendfile, "the large body was written, not sent from its file"
        return self.transport.writes[-1]

    def close(self) -> None:
        if self.protocol.transport is not None:
            self.protocol.connection_lost(None)  # its duplicate of the socket is closed
        self.transport.close()


def _whole_response(data: bytes) -> bytes | None:
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    end = len(head) + 4 + length
    return data[:end] if len(data) >= end else None


def status(wire: bytes | None) -> int | None:
    return None if wire is None else int(wire.split(b" ", 2)[1])


# The worker config's extra files: a small one (its gzip body is written in one call) and one whose
# identity body is sent by os.sendfile.
SMALL, LARGE = 4, 300


def run(tmp_path: Path, scenario: Callable[[FastPath, ServerState, Path], Awaitable[None]],
        check_interval: float = 60.0, extra_files: int = SMALL) -> None:
    async def main() -> None:
        base, kc = write_layout(tmp_path, ignition_config(extra_files=extra_files))
        guard = ConnectionGuard(header_timeout=10.0, response_timeout=60.0)
        state = build_state(BootstrapOptions(base, kc, input_check_interval=check_interval), guard)
        try:
            await scenario(FastPath(state, guard), state, base)
        finally:
            while _CLIENTS:
                _CLIENTS.pop().close()

    asyncio.run(main())


def memo_size(fast: FastPath) -> int:
    return sum(len(m) for m in fast._memos.values())


def memo_files(fast: FastPath) -> list[BodyFile | None]:
    """The body file of each remembered answer (None: written in one call)."""
    return [memo[1] for m in fast._memos.values() for memo in m.values()]


def wait_past(deadline: float) -> None:
    while time.monotonic() <= deadline:
        time.sleep(max(0.001, deadline - time.monotonic()))


def within_one_second(fn: Callable[[], Awaitable[None]]) -> Awaitable[None]:
    """Run `fn` at the start of a wall-clock second, so its requests share the Date second."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)
    return fn()


# Each check on both kinds of remembered answer.
SENDFILE = pytest.mark.parametrize("sendfile", [False, True], ids=["write", "sendfile"])


def remembered(fast: FastPath, sendfile: bool) -> int:
    """How many answers are remembered; each of the kind the test asks for."""
    files = memo_files(fast)
    assert all((file is not None) == sendfile for file in files), files
    return len(files)


@SENDFILE
def test_remembered_answer_is_the_same_bytes_metrics_log_and_deadline(
        sendfile: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(fast: FastPath, state: ServerState, _base: Path) -> None:
        client = Client(fast, sendfile)

        assert status(await client.get()) == 200  # built: that answer is not remembered
        assert remembered(fast, sendfile) == 0

        async def inner() -> None:
            first = await client.get()
            assert status(first) == 200 and remembered(fast, sendfile) == 1
            with caplog.at_level(logging.INFO, logger="mcs.access"):
                before = time.monotonic()
                again = [await client.get() for _ in range(5)]
            assert again == [first] * 5  # the same wire bytes, Date and all
            deadline = client.protocol._mcs_deadline
            assert deadline is not None and before + 10.0 <= deadline <= time.monotonic() + 10.0
            lines = [r.getMessage() for r in caplog.records if r.name == "mcs.access"]
            assert len(lines) == 5 and all(" GET /config/worker 200 3.5.0 " in line for line in lines), lines
            with caplog.at_level(logging.WARNING, logger="mcs.access"):
                assert await client.get() == first  # a level change counts at once, as without the memo
            assert [r.getMessage() for r in caplog.records if r.name == "mcs.access"] == lines

        await within_one_second(inner)
        assert fast.answered == 8 and fast.handed_over == 0
        state.metrics.flush()
        get = state.metrics.registry.get_sample_value
        assert get("mcs_config_requests_total", {"pool": "worker", "version": "3.5.0", "code": "200"}) == 8
        assert get("mcs_http_request_duration_seconds_count", {"route": "config"}) == 8

    run(tmp_path, scenario, extra_files=LARGE if sendfile else SMALL)


@SENDFILE
def test_a_new_date_second_gets_a_new_date(sendfile: bool, tmp_path: Path) -> None:
    async def scenario(fast: FastPath, _state: ServerState, _base: Path) -> None:
        client = Client(fast, sendfile)
        for _ in range(3):
            second = int(time.time())
            wire = await client.get()
            if int(time.time()) != second:
                continue  # the second turned during the request: try again
            assert wire is not None and f"\r\nDate: {formatdate(second, usegmt=True)}\r\n".encode() in wire
            time.sleep(1.0 - time.time() % 1.0 + 0.01)

    run(tmp_path, scenario, extra_files=LARGE if sendfile else SMALL)


@SENDFILE
def test_a_removed_token_is_refused_at_the_next_file_check(sendfile: bool, tmp_path: Path) -> None:
    async def scenario(fast: FastPath, state: ServerState, _base: Path) -> None:
        tokens = tmp_path / "token-file"
        tokens.write_text(f"worker {TOKEN_A}\n")
        auth = state.auth = TokenAuth(tokens, check_interval=0.3)
        client = Client(fast, sendfile)
        assert status(await client.get(TOKEN_A)) == 200

        async def inner() -> None:  # within one Date second: only the token file check ends the memo
            assert status(await client.get(TOKEN_A)) == 200
            assert status(await client.get(TOKEN_A)) == 200 and remembered(fast, sendfile) == 1
            tokens.write_text(f"worker {TOKEN_B}-longer\n")  # another size: a changed signature
            wait_past(auth.next_check)
            assert await client.get(TOKEN_A) is None  # handed over: aiohttp answers 401

        await within_one_second(inner)
        assert fast.handed_over == 1 and b"Bearer " + TOKEN_A.encode() in client.fallback.data
        assert status(await Client(fast, sendfile).get(f"{TOKEN_B}-longer")) == 200

    run(tmp_path, scenario, extra_files=LARGE if sendfile else SMALL)


@SENDFILE
def test_a_forced_token_reload_takes_effect_at_once(sendfile: bool, tmp_path: Path) -> None:
    # PoolTokens re-reads its file at once when the server adds a pool's token (ensure): a token
    # changed in the file meanwhile counts from then on, long before the next timed check.
    async def scenario(fast: FastPath, state: ServerState, _base: Path) -> None:
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        (state_dir / POOL_TOKENS_FILE).write_text(f"worker {TOKEN_A}\n")
        pool_tokens = PoolTokens(state_dir, check_interval=3600.0)
        (tmp_path / "token-file").write_text("")
        state.auth = AnyOf(pool_tokens, TokenAuth(tmp_path / "token-file", check_interval=3600.0))  # as `mcs start`
        state.auth.allows("worker", None)  # both files read once: until then nothing is remembered
        client = Client(fast, sendfile)
        assert status(await client.get(TOKEN_A)) == 200
        assert status(await client.get(TOKEN_A)) == 200 and remembered(fast, sendfile) == 1
        (state_dir / POOL_TOKENS_FILE).write_text(f"worker {TOKEN_B}\n")
        pool_tokens.ensure(["worker", "master"])  # forced reload (and a token for master)
        assert await client.get(TOKEN_A) is None
        assert status(await Client(fast, sendfile).get(TOKEN_B)) == 200

    run(tmp_path, scenario, extra_files=LARGE if sendfile else SMALL)


@SENDFILE
def test_a_new_authorizer_counts_at_once(sendfile: bool, tmp_path: Path) -> None:
    async def scenario(fast: FastPath, state: ServerState, _base: Path) -> None:
        client = Client(fast, sendfile)
        assert status(await client.get()) == 200
        assert status(await client.get()) == 200 and remembered(fast, sendfile) == 1
        tokens = tmp_path / "token-file"
        tokens.write_text(f"worker {TOKEN_A}\n")
        state.auth = TokenAuth(tokens, check_interval=3600.0)
        assert await client.get() is None

    run(tmp_path, scenario, extra_files=LARGE if sendfile else SMALL)


@SENDFILE
def test_a_pool_change_is_served_after_the_input_check(sendfile: bool, tmp_path: Path) -> None:
    async def scenario(fast: FastPath, state: ServerState, base: Path) -> None:
        client = Client(fast, sendfile)
        await client.get()  # built
        first: bytes | None = None
        changed: bytes | None = None

        async def inner() -> None:  # within one Date second: only the input check can end the memo
            nonlocal first, changed
            await client.get()  # the inputs looked at again (the answer is remembered by the next)
            first = await client.get()
            assert first is not None and remembered(fast, sendfile) == 1
            write_yaml(base / "machine-configs" / f"{WORKER_CONFIG_NEW}.yaml", machine_config(
                WORKER_CONFIG_NEW, ignition_config(extra_files=(LARGE if sendfile else SMALL) + 1)))
            write_yaml(base / "machine-pools" / "worker.yaml", pool("worker", WORKER_CONFIG_NEW))
            wait_past(state.cache.steady_until("worker"))
            changed = await client.get()

        await within_one_second(inner)
        assert first is not None and changed is not None and status(changed) == 200
        assert changed.partition(b"\r\n\r\n")[0] != first.partition(b"\r\n\r\n")[0]  # another ETag
        assert len(changed) > len(first)  # the new config's body
        again = await client.get()
        assert again == changed and remembered(fast, sendfile) == 1
        assert state.cache.builds == 2

    run(tmp_path, scenario, check_interval=0.2, extra_files=LARGE if sendfile else SMALL)


@SENDFILE
def test_no_memo_when_inputs_are_checked_every_request(sendfile: bool, tmp_path: Path) -> None:
    async def scenario(fast: FastPath, _state: ServerState, _base: Path) -> None:
        client = Client(fast, sendfile)
        assert status(await client.get()) == 200 and status(await client.get()) == 200
        assert remembered(fast, sendfile) == 0

    run(tmp_path, scenario, check_interval=0.0, extra_files=LARGE if sendfile else SMALL)


def test_memo_is_bounded(tmp_path: Path) -> None:
    async def scenario(fast: FastPath, _state: ServerState, _base: Path) -> None:
        async def inner() -> None:
            client = Client(fast)
            for i in range(MEMO_MAX + 20):
                assert status(await client.get(host=f"h{i}.example")) == 200
            assert memo_size(fast) == MEMO_MAX

        await within_one_second(inner)

    run(tmp_path, scenario)


@SENDFILE
@pytest.mark.parametrize("change", ["generation", "tls port", "token version", "authorizer"])
def test_a_changed_stamp_decides_again(sendfile: bool, change: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Each thing a remembered answer is kept by, changed alone (no time passes): the next request is
    # decided afresh, and its answer remembered with the new stamp.
    decided: list[str] = []
    decide = mcs.fastpath.decide
    monkeypatch.setattr(mcs.fastpath, "decide", lambda state, pool, *rest: decided.append(pool) or decide(
        state, pool, *rest))

    async def scenario(fast: FastPath, state: ServerState, _base: Path) -> None:
        tokens = tmp_path / "token-file"
        tokens.write_text(f"worker {TOKEN_A}\n")
        auth = state.auth = TokenAuth(tokens, check_interval=3600.0)
        client = Client(fast, sendfile)

        async def inner() -> None:
            first = await client.get(TOKEN_A)  # built, then remembered
            assert await client.get(TOKEN_A) == first and remembered(fast, sendfile) == 1
            assert await client.get(TOKEN_A) == first and len(decided) == 2  # the memo's answer
            if change == "generation":
                state.cache.generation += 1
            elif change == "tls port":
                state.tls_port = 22624
            elif change == "token version":
                auth.version += 1
            else:
                state.auth = TokenAuth(tokens, check_interval=3600.0)
            assert await client.get(TOKEN_A) == first and len(decided) == 3  # decided again
            assert await client.get(TOKEN_A) == first and len(decided) == 3  # remembered again
            assert remembered(fast, sendfile) == 1

        await within_one_second(inner)

    run(tmp_path, scenario, extra_files=LARGE if sendfile else SMALL)


def test_a_remembered_body_file_goes_out_only_as_the_full_path_would_send_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A remembered large answer is sent from its file only on a connection that has its duplicate
    # socket already and nothing buffered in its transport (the bytes must stay in order): otherwise
    # the full path decides and sends it, as it would without the memo.
    decided: list[str] = []
    decide = mcs.fastpath.decide
    monkeypatch.setattr(mcs.fastpath, "decide", lambda state, pool, *rest: decided.append(pool) or decide(
        state, pool, *rest))

    async def scenario(fast: FastPath, _state: ServerState, _base: Path) -> None:
        client = Client(fast, sendfile=True)

        async def inner() -> None:
            first = await client.get()  # built
            assert await client.get() == first and remembered(fast, True) == 1 and len(decided) == 2
            other = Client(fast, sendfile=True)  # no duplicate socket yet: the full path makes it
            assert await other.get() == first and len(decided) == 3
            assert await other.get() == first and len(decided) == 3
            buffered = 1
            monkeypatch.setattr(client.transport, "get_write_buffer_size", lambda: buffered)
            client.sendfile = False  # the answer is written to the transport, after what it holds
            assert await client.get() == first and len(decided) == 4
            buffered = 0
            client.sendfile = True
            assert await client.get() == first and len(decided) == 4  # from the memo again

        await within_one_second(inner)

    run(tmp_path, scenario, extra_files=LARGE)


def test_a_remembered_body_file_lives_no_longer_than_its_date_second(tmp_path: Path) -> None:
    # The memo holds the body file of a sendfile answer by reference: after the pool moves to another
    # config, the old file lives on only until the Date second's responses and memos are dropped.
    async def scenario(fast: FastPath, state: ServerState, base: Path) -> None:
        client = Client(fast, sendfile=True)
        await client.get()  # built

        async def inner() -> weakref.ref[BodyFile]:
            await client.get()  # the inputs looked at again (the answer is remembered by the next)
            await client.get()
            files = memo_files(fast)
            assert len(files) == 1 and files[0] is not None
            old = weakref.ref(files[0])
            write_yaml(base / "machine-configs" / f"{WORKER_CONFIG_NEW}.yaml",
                       machine_config(WORKER_CONFIG_NEW, ignition_config(extra_files=LARGE + 1)))
            write_yaml(base / "machine-pools" / "worker.yaml", pool("worker", WORKER_CONFIG_NEW))
            wait_past(state.cache.steady_until("worker"))
            await client.get()  # the new config, built
            return old

        old = await within_one_second(inner)
        gc.collect()
        if int(time.time()) == fast.second:
            assert old() is not None  # the old config's answer of this second still holds it
        time.sleep(1.0 - time.time() % 1.0 + 0.01)
        await client.get(host="other.example")  # a new second (another head): old responses and memos go
        gc.collect()
        assert old() is None

    run(tmp_path, scenario, check_interval=0.2, extra_files=LARGE)
