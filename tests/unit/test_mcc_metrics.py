"""mcc start --metrics-listen: the drain controller's mcc_drain_err over HTTP, as Prometheus reads it."""
from __future__ import annotations

import urllib.request

from mcc.commands.start import serve_metrics
from mcc.drain_controller import DRAIN_ERR


def test_drain_err_is_served() -> None:
    server = serve_metrics("127.0.0.1:0")
    assert server is not None
    DRAIN_ERR.labels(node="worker-7").set(1)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics",
                                    timeout=10) as resp:
            text = resp.read().decode()
    finally:
        DRAIN_ERR.remove("worker-7")
        server.shutdown()
        server.server_close()
    assert 'mcc_drain_err{node="worker-7"} 1.0' in text


def test_a_bad_listen_address_is_not_fatal() -> None:
    assert serve_metrics("127.0.0.1:notaport") is None
