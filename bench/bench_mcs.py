"""Benchmark of the machine-config server: requests/second for cached /config/<pool> against a bare
aiohttp handler returning the same bytes, both measured in this run on loopback; prints the ratio.

Usage: .venv/bin/python bench/bench_mcs.py [--requests N] [--concurrency C] [--seconds S] [--size typical|large]
       [--soak SECONDS]   (then also: 1,000 concurrent connections for SECONDS; 5xx, /healthz, RSS and fds)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.procs import stop_all  # noqa: E402
from tests.unit.server.test_mcs_layout import ignition_config, write_layout  # noqa: E402

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


def proc_stats(pid: int) -> tuple[int, int]:
    """(resident KiB, open file descriptors) of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def soak(url: str, health: str, connections: int, seconds: float) -> tuple[dict[int, int], int, int, float]:
    """`connections` clients looping on `url` for `seconds` while /healthz is probed twice a second."""
    statuses: dict[int, int] = {}
    failures = 0
    probes = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def client() -> None:
            nonlocal failures
            while time.monotonic() < deadline:
                try:
                    async with session.get(url, headers={"Accept": ACCEPT}) as r:
                        await r.read()
                        statuses[r.status] = statuses.get(r.status, 0) + 1
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    failures += 1

        def prober() -> None:
            # A thread of its own, so the probe is not queued behind 1,000 clients in this loop.
            nonlocal probes
            import urllib.request

            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                with opener.open(health, timeout=10) as r:
                    probes += r.status == 200
                probe_latency.append(time.perf_counter() - t0)
                time.sleep(0.5)

        probe_latency: list[float] = []
        await asyncio.gather(asyncio.to_thread(prober), *(client() for _ in range(connections)))
    worst = max(probe_latency, default=0.0)
    return statuses, failures, probes, worst


def report(name: str, done: int, elapsed: float, latencies: list[float]) -> float:
    rps = done / elapsed
    q = statistics.quantiles(latencies, n=100)
    print(f"  {name:<31} {rps:9.0f} req/s   p50 {q[49] * 1000:6.2f} ms   p99 {q[98] * 1000:6.2f} ms   ({done} requests)")
    return rps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement (upper bound)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="time limit per measurement")
    parser.add_argument("--size", choices=sorted(SIZES), default="typical")
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of 1,000 concurrent connections (0: skip)")
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
            # Interleaved rounds, best of each: this machine is shared, and a burst of load elsewhere
            # should not land on one side only.
            best: dict[str, float] = {}
            for round_ in range(1, args.rounds + 1):
                for name, url in (("baseline (bare aiohttp)", base_url), ("mcs /config/worker (cached)", mcs_url)):
                    done, elapsed, lat, size = asyncio.run(load(url, args.requests, args.concurrency, args.seconds))
                    assert size == len(body)
                    rps = report(f"{name} #{round_}", done, elapsed, lat)
                    best[name] = max(best.get(name, 0.0), rps)
            base_rps, mcs_rps = best["baseline (bare aiohttp)"], best["mcs /config/worker (cached)"]
            print(f"  best: baseline {base_rps:.0f} req/s, mcs {mcs_rps:.0f} req/s; ratio mcs/baseline: {mcs_rps / base_rps:.2f}")
            if args.soak > 0:
                rss0, fds0 = proc_stats(mcs.pid)
                statuses, failures, probes, worst = asyncio.run(
                    soak(mcs_url, f"http://127.0.0.1:{mcs_port}/healthz", 1000, args.soak))
                time.sleep(2)
                rss1, fds1 = proc_stats(mcs.pid)
                total = sum(statuses.values())
                fivexx = sum(n for code, n in statuses.items() if code >= 500)
                print(f"  soak: 1000 connections for {args.soak:.0f} s: {total} responses {dict(sorted(statuses.items()))}, "
                      f"{fivexx} 5xx, {failures} client errors")
                print(f"  /healthz during the soak: {probes} answers, slowest {worst * 1000:.0f} ms")
                print(f"  server RSS {rss0} -> {rss1} KiB, open fds {fds0} -> {fds1}")
        finally:
            stop_all(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
