"""The fast path's remembered answers (mcs.fastpath.Memo): the same bytes, metrics, access log and
deadlines as a fresh answer, and never an answer that a fresh decision would no longer give: a token
change, a forced token reload, a new authorizer, a pool change and a new Date second all take effect
exactly when they do without the memo. Driven in process (a FastProtocol on a recording transport),
so the timing is the test's own.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from mcs.auth import AnyOf, TokenAuth
from mcs.fastpath import MEMO_MAX, FastPath, FastProtocol
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


class Client:
    """One keep-alive connection to a FastPath."""

    def __init__(self, fast: FastPath) -> None:
        self.fast = fast
        self.transport = Recorder()
        self.fallback = HandedOver()
        self.protocol = FastProtocol(fast, lambda: self.fallback, 64, 8190)  # type: ignore[arg-type,return-value]
        self.protocol.connection_made(self.transport)  # type: ignore[arg-type]

    async def get(self, token: str | None = None, host: str = "127.0.0.1:22623") -> bytes | None:
        """The answer written for one GET, or None when the connection was handed over."""
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        head = f"GET /config/worker HTTP/1.1\r\nHost: {host}\r\nAccept: {ACCEPT}\r\n{auth}" \
               "Accept-Encoding: gzip\r\n\r\n"
        before = len(self.transport.writes)
        self.protocol.data_received(head.encode())
        give_up = time.monotonic() + 30
        while len(self.transport.writes) == before and self.protocol.transport is not None:
            assert time.monotonic() < give_up, "never answered"
            await asyncio.sleep(0.01)  # a build off the loop
        if self.protocol.transport is None:
            return None
        assert len(self.transport.writes) == before + 1
        return self.transport.writes[-1]


def status(wire: bytes | None) -> int | None:
    return None if wire is None else int(wire.split(b" ", 2)[1])


def run(tmp_path: Path, scenario: Callable[[FastPath, ServerState, Path], Awaitable[None]],
        check_interval: float = 60.0) -> None:
    async def main() -> None:
        base, kc = write_layout(tmp_path, ignition_config(extra_files=4))
        guard = ConnectionGuard(header_timeout=10.0, response_timeout=60.0)
        state = build_state(BootstrapOptions(base, kc, input_check_interval=check_interval), guard)
        await scenario(FastPath(state, guard), state, base)

    asyncio.run(main())


def memo_size(fast: FastPath) -> int:
    return sum(len(m) for m in fast._memos.values())


def wait_past(deadline: float) -> None:
    while time.monotonic() <= deadline:
        time.sleep(max(0.001, deadline - time.monotonic()))


def within_one_second(fn: Callable[[], Awaitable[None]]) -> Awaitable[None]:
    """Run `fn` at the start of a wall-clock second, so its requests share the Date second."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)
    return fn()


def test_remembered_answer_is_the_same_bytes_metrics_log_and_deadline(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(fast: FastPath, state: ServerState, _base: Path) -> None:
        client = Client(fast)

        assert status(await client.get()) == 200  # built: that answer is not remembered
        assert memo_size(fast) == 0

        async def inner() -> None:
            first = await client.get()
            assert status(first) == 200 and memo_size(fast) == 1
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

    run(tmp_path, scenario)


def test_a_new_date_second_gets_a_new_date(tmp_path: Path) -> None:
    async def scenario(fast: FastPath, _state: ServerState, _base: Path) -> None:
        client = Client(fast)
        for _ in range(3):
            second = int(time.time())
            wire = await client.get()
            if int(time.time()) != second:
                continue  # the second turned during the request: try again
            assert wire is not None and f"\r\nDate: {formatdate(second, usegmt=True)}\r\n".encode() in wire
            time.sleep(1.0 - time.time() % 1.0 + 0.01)

    run(tmp_path, scenario)


def test_a_removed_token_is_refused_at_the_next_file_check(tmp_path: Path) -> None:
    async def scenario(fast: FastPath, state: ServerState, _base: Path) -> None:
        tokens = tmp_path / "token-file"
        tokens.write_text(f"worker {TOKEN_A}\n")
        auth = state.auth = TokenAuth(tokens, check_interval=0.3)
        client = Client(fast)
        assert status(await client.get(TOKEN_A)) == 200
        assert status(await client.get(TOKEN_A)) == 200 and memo_size(fast) == 1
        tokens.write_text(f"worker {TOKEN_B}-longer\n")  # another size: a changed signature
        wait_past(auth.next_check)
        assert await client.get(TOKEN_A) is None  # handed over: aiohttp answers 401
        assert fast.handed_over == 1 and b"Bearer " + TOKEN_A.encode() in client.fallback.data
        assert status(await Client(fast).get(f"{TOKEN_B}-longer")) == 200

    run(tmp_path, scenario)


def test_a_forced_token_reload_takes_effect_at_once(tmp_path: Path) -> None:
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
        client = Client(fast)
        assert status(await client.get(TOKEN_A)) == 200
        assert status(await client.get(TOKEN_A)) == 200 and memo_size(fast) == 1
        (state_dir / POOL_TOKENS_FILE).write_text(f"worker {TOKEN_B}\n")
        pool_tokens.ensure(["worker", "master"])  # forced reload (and a token for master)
        assert await client.get(TOKEN_A) is None
        assert status(await Client(fast).get(TOKEN_B)) == 200

    run(tmp_path, scenario)


def test_a_new_authorizer_counts_at_once(tmp_path: Path) -> None:
    async def scenario(fast: FastPath, state: ServerState, _base: Path) -> None:
        client = Client(fast)
        assert status(await client.get()) == 200
        assert status(await client.get()) == 200 and memo_size(fast) == 1
        tokens = tmp_path / "token-file"
        tokens.write_text(f"worker {TOKEN_A}\n")
        state.auth = TokenAuth(tokens, check_interval=3600.0)
        assert await client.get() is None

    run(tmp_path, scenario)


def test_a_pool_change_is_served_after_the_input_check(tmp_path: Path) -> None:
    async def scenario(fast: FastPath, state: ServerState, base: Path) -> None:
        client = Client(fast)
        await client.get()
        first = await client.get()
        assert first is not None and memo_size(fast) == 1
        write_yaml(base / "machine-configs" / f"{WORKER_CONFIG_NEW}.yaml",
                   machine_config(WORKER_CONFIG_NEW, ignition_config(extra_files=5)))
        write_yaml(base / "machine-pools" / "worker.yaml", pool("worker", WORKER_CONFIG_NEW))
        wait_past(state.cache.steady_until("worker"))
        changed = await client.get()
        assert changed is not None and status(changed) == 200
        assert changed.partition(b"\r\n\r\n")[0] != first.partition(b"\r\n\r\n")[0]  # another ETag
        assert state.cache.builds == 2

    run(tmp_path, scenario, check_interval=0.2)


def test_no_memo_when_inputs_are_checked_every_request(tmp_path: Path) -> None:
    async def scenario(fast: FastPath, _state: ServerState, _base: Path) -> None:
        client = Client(fast)
        assert status(await client.get()) == 200 and status(await client.get()) == 200
        assert memo_size(fast) == 0

    run(tmp_path, scenario, check_interval=0.0)


def test_memo_is_bounded(tmp_path: Path) -> None:
    async def scenario(fast: FastPath, _state: ServerState, _base: Path) -> None:
        async def inner() -> None:
            client = Client(fast)
            for i in range(MEMO_MAX + 20):
                assert status(await client.get(host=f"h{i}.example")) == 200
            assert memo_size(fast) == MEMO_MAX

        await within_one_second(inner)

    run(tmp_path, scenario)

