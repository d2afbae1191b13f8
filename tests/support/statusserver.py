"""mcs (store mode, TLS) in a thread of the test process, for the status page tests: the real
`serve()` with its real listeners on loopback."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mcs.options import StoreOptions
from mcs.server import serve
from tests.unit.server.test_mcs_server import issue, make_ca


@dataclass
class Running:
    https: str
    http: str
    ca_file: Path


@contextmanager
def running_mcs(store_url: str, state_dir: Path, tmp: Path) -> Iterator[Running]:
    ca = make_ca()
    cert_pem, key_pem, _ = issue(ca, "localhost")
    cert, key, ca_file = tmp / "server.crt", tmp / "server.key", tmp / "ca.crt"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    ca_file.write_bytes(ca.pem())
    options = StoreOptions(store=store_url, state_dir=state_dir, cert=cert, key=key, ca=ca_file,
                            secure_port=0, insecure_port=0, bind_address="127.0.0.1")
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    urls: list[str] = []
    ready = threading.Event()
    failed: list[BaseException] = []

    def on_ready(found: list[str]) -> None:
        urls.extend(found)
        ready.set()

    def main() -> None:
        try:
            loop.run_until_complete(serve(options, stop, on_ready=on_ready))
        except BaseException as e:  # noqa: BLE001 - reported to the test below
            failed.append(e)
            ready.set()

    thread = threading.Thread(target=main, name="mcs", daemon=True)
    thread.start()
    try:
        if not ready.wait(30) or failed:
            raise RuntimeError(f"mcs did not start: {failed[0] if failed else 'timeout'}")
        https = next(u for u in urls if u.startswith("https://"))
        http = next(u for u in urls if u.startswith("http://"))
        yield Running(https.replace("127.0.0.1", "localhost"), http, ca_file)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
