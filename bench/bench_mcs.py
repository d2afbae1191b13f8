"""Benchmark of the machine-config server: requests/second for cached /config/<pool> against a bare
aiohttp handler returning the same bytes, both measured in this run on loopback; prints the ratio.

Usage: .venv/bin/python bench/bench_mcs.py [--requests N] [--concurrency C] [--seconds S] [--size typical|large]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit.test_mcs_layout import ignition_config, write_layout  # noqa: E402

ACCEPT = "application/vnd.coreos.ignition+json;version=3.5.0, */*;q=0.1"
# About 180 KB served (a typical worker pool) or about 3 MB (a large one).
SIZES = {"typical": 140, "large": 2400}

BASELINE = r"""
import sys
from aiohttp import web
body = open(sys.argv[1], "rb").read()
async def handle(request):
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_get("/config/worker", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=None, print=lambda *a: print(*a, flush=True))
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], limit: float = 30.0) -> None:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with opener.open(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} did not come up")


async def load(url: str, requests: int, concurrency: int, seconds: float) -> tuple[int, float, list[float], int]:
    """Fire up to `requests` GETs over `concurrency` keep-alive connections, stopping after `seconds`."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    latencies: list[float] = []
    size = 0
    headers = {"Accept": ACCEPT, "Accept-Encoding": "identity"}
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        for _ in range(min(200, requests)):  # warm-up: connections, caches
            async with session.get(url, headers=headers) as r:
                size = len(await r.read())
        remaining = requests
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                t0 = time.perf_counter()
                async with session.get(url, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise SystemExit(f"{url}: HTTP {r.status}")
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return len(latencies), elapsed, latencies, size


def report(name: str, done: int, elapsed: float, latencies: list[float]) -> float:
    rps = done / elapsed
    q = statistics.quantiles(latencies, n=100)
    print(f"  {name:<28} {rps:9.0f} req/s   p50 {q[49] * 1000:6.2f} ms   p99 {q[98] * 1000:6.2f} ms   ({done} requests)")
    return rps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per measurement (upper bound)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="time limit per measurement")
    parser.add_argument("--size", choices=sorted(SIZES), default="typical")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base, kubeconfig = write_layout(Path(tmp), ignition_config(kargs=["nosmt"], extra_files=SIZES[args.size]))
        mcs_port, base_port = free_port(), free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs: list[subprocess.Popen[bytes]] = []
        try:
            mcs = subprocess.Popen([sys.executable, "-m", "mcs.cli", "--log-level", "WARNING", "bootstrap",
                                    "--server-basedir", str(base), "--bootstrap-kubeconfig", str(kubeconfig),
                                    "--insecure-port", str(mcs_port), "--bind-address", "127.0.0.1"],
                                   env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
            procs.append(mcs)
            mcs_url = f"http://127.0.0.1:{mcs_port}/config/worker"
            wait_up(f"http://127.0.0.1:{mcs_port}/healthz", mcs)

            # The baseline serves exactly the bytes mcs serves, from memory.
            import urllib.request

            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            t0 = time.perf_counter()
            with opener.open(urllib.request.Request(mcs_url, headers={"Accept": ACCEPT}), timeout=60) as r:
                body = r.read()
            cold = time.perf_counter() - t0
            json.loads(body)
            body_file = Path(tmp) / "body.json"
            body_file.write_bytes(body)
            baseline = subprocess.Popen([sys.executable, "-c", BASELINE, str(body_file), str(base_port)],
                                        env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
            procs.append(baseline)
            base_url = f"http://127.0.0.1:{base_port}/config/worker"
            wait_up(base_url, baseline)

            print(f"mcs benchmark: {args.size} pool, {len(body) / 1024:.0f} KiB served, "
                  f"{args.concurrency} connections, loopback, {os.cpu_count()} CPUs")
            print(f"  first request (cold build)   {cold * 1000:9.1f} ms")
            done, elapsed, lat, _ = asyncio.run(load(base_url, args.requests, args.concurrency, args.seconds))
            base_rps = report("baseline (bare aiohttp)", done, elapsed, lat)
            done, elapsed, lat, size = asyncio.run(load(mcs_url, args.requests, args.concurrency, args.seconds))
            assert size == len(body)
            mcs_rps = report("mcs /config/worker (cached)", done, elapsed, lat)
            print(f"  ratio mcs/baseline: {mcs_rps / base_rps:.2f}")
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
