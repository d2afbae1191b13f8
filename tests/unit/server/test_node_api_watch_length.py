"""The daemon's long poll: one request waits up to NODE_API_MAX_WATCH_SECONDS (300 s), so a
quiet node wakes less than once per 30 s; the client's socket timeout outlasts the poll. A
loopback HTTP server stands in for mcs and records what the client asked."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from machineconfig import constants
from machineconfig.store.remote import RemoteNodeAPI


class _Recorder(BaseHTTPRequestHandler):
    queries: list[dict[str, list[str]]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        query = parse_qs(urlsplit(self.path).query)
        type(self).queries.append(query)
        body = json.dumps({"revision": int(query["since"][0]) + 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    _Recorder.queries = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_one_long_poll_waits_up_to_300_seconds(server: str) -> None:
    assert constants.NODE_API_MAX_WATCH_SECONDS == 300.0
    api = RemoteNodeAPI(server, "token")
    assert api.wait_for_change(7, 600.0) == 8
    assert [q["timeout"] for q in _Recorder.queries] == [["300.000"]]
    _Recorder.queries.clear()
    assert api.wait_for_change(7, 250.0) == 8
    assert float(_Recorder.queries[0]["timeout"][0]) == pytest.approx(250.0, abs=0.1)
