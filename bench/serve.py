"""Benchmark of the machine-config server against nginx: wrk on loopback against `/config/<pool>`
for a typical pool (about 180 KB served) and a large one (about 3 MB), with 16 and 64 connections,
beside nginx serving exactly the same bytes as a static file (sendfile on) in the same run.

mcs runs twice, side by side on two ports: with one worker process per core, and with one worker.
Runs alternate between the servers (the order rotates per cell), so a burst of load elsewhere on
the machine does not land on one side only. Prints req/s, p50, p99 and the ratio to nginx; the
issue's target is at least half of nginx's req/s.

Needs `wrk` and `nginx` (Debian: `apt-get install -y wrk nginx-light`); exits 2 without them.

Usage: .venv/bin/python bench/serve.py [--duration 10] [--connections 16 64] [--sizes typical large]
                                       [--rounds 1] [--workers N] [--gzip]
       --gzip: also send `Accept-Encoding: gzip` as Ignition's Go client does; nginx then serves mcs's
       gzip body through gzip_static. Note that the fixture configs compress far better than real ones.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# The pool sizes and the Accept header are bench_mcs.py's, so both benchmarks measure the same thing.
from bench_mcs import ACCEPT, SIZES  # noqa: E402
from tests.unit.test_mcs_layout import ignition_config, machine_config, pool, write_layout, write_yaml  # noqa: E402

APT_HINT = "apt-get install -y wrk nginx-light"
# The typical pool is the layout's own `worker`; the large one is added beside it as pool `large`,
# so one mcs process serves both and is started only once per worker count.
POOLS = {"typical": "worker", "large": "large"}
LARGE_CONFIG = "rendered-large-0123456789abcdef0123456789abcdef"
TARGET_RATIO = 0.5


@dataclass(frozen=True)
class Result:
    """One wrk run."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    bytes_read: float
    errors: int  # socket errors (connect, read, write, timeout) plus non-2xx/3xx responses


@dataclass
class Server:
    """A server under test and the process that runs it (its own process group)."""

    name: str
    base_url: str
    proc: subprocess.Popen[bytes]


# -- processes ---------------------------------------------------------------------------------------

_PROCS: list[subprocess.Popen[bytes]] = []


def spawn(argv: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a process in a session of its own, remembered for cleanup.

    A session of its own keeps Ctrl-C from reaching it directly (we stop it in order, in `cleanup`),
    and lets us signal its whole group: mcs workers and nginx workers are its children.
    """
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=cwd)
    _PROCS.append(proc)
    return proc


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the group we created for it in spawn(): its id is its own pid
    except ProcessLookupError:
        pass


def cleanup() -> None:
    """SIGTERM every process group we started, then SIGKILL whatever is left after a grace period."""
    for proc in _PROCS:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in _PROCS:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        # Also the group: a worker could outlive its parent.
        _signal_group(proc, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(timeout=5)
    _PROCS.clear()


@contextmanager
def terminated_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM (and SIGHUP) into an exception, so `finally` cleans up as it does on Ctrl-C."""
    def stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def free_port() -> int:
    # Another process could take it before the server binds; on a quiet loopback that does not happen.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


def request_headers(gzip: bool) -> dict[str, str]:
    """What the load sends: Ignition's Accept header, and with --gzip the Accept-Encoding of Go's
    HTTP client (which Ignition uses). Without it, wrk sends no Accept-Encoding: identity bytes."""
    return {"Accept": ACCEPT, "Accept-Encoding": "gzip" if gzip else "identity"}


def fetch(url: str, timeout: float = 60.0, gzip: bool = False) -> tuple[int, bytes]:
    # Raw bytes: urllib does not decompress, so with gzip this is exactly the gzip body served.
    req = urllib.request.Request(url, headers=request_headers(gzip))
    try:
        with _OPENER.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_up(url: str, proc: subprocess.Popen[bytes], log: Path, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: server exited with {proc.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        try:
            fetch(url, timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url}: server did not come up within {limit:.0f} s")


# -- the servers -------------------------------------------------------------------------------------

def build_layout(tmp: Path) -> tuple[Path, Path]:
    """The bootstrap layout of bench_mcs.py's typical pool (as `worker`) plus a large pool (`large`)."""
    base, kubeconfig = write_layout(tmp, ignition_config(kargs=["nosmt"], extra_files=SIZES["typical"]))
    write_yaml(base / "machine-configs" / f"{LARGE_CONFIG}.yaml",
               machine_config(LARGE_CONFIG, ignition_config(kargs=["nosmt"], extra_files=SIZES["large"])))
    write_yaml(base / "machine-pools" / "large.yaml", pool("large", LARGE_CONFIG))
    return base, kubeconfig


def start_mcs(tmp: Path, base: Path, kubeconfig: Path, workers: int) -> Server:
    port = free_port()
    log = tmp / f"mcs-w{workers}.log"
    # WARNING: the access log at INFO would cost a formatted line per request, which a real
    # deployment may keep, but nginx runs with access_log off here as well.
    proc = spawn([str(ROOT / ".venv" / "bin" / "mcs"), "--log-level", "WARNING", "bootstrap",
                  "--server-basedir", str(base), "--bootstrap-kubeconfig", str(kubeconfig),
                  "--insecure-port", str(port), "--secure-port", "-1", "--bind-address", "127.0.0.1",
                  "--workers", str(workers)], log, cwd=ROOT)
    base_url = f"http://127.0.0.1:{port}"
    wait_up(f"{base_url}/healthz", proc, log)
    return Server(f"mcs {workers}w", base_url, proc)


NGINX_CONF = """\
# Written by bench/serve.py: static files on loopback, everything inside {tmp}.
daemon off;
master_process on;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    # wrk keeps its connections; the default (1000) would make nginx alone reconnect.
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    types {{ }}
    default_type application/json;
    gzip_static {gzip_static};
    gzip_vary on;
    client_body_temp_path {tmp}/nginx-tmp/body;
    proxy_temp_path {tmp}/nginx-tmp/proxy;
    fastcgi_temp_path {tmp}/nginx-tmp/fastcgi;
    uwsgi_temp_path {tmp}/nginx-tmp/uwsgi;
    scgi_temp_path {tmp}/nginx-tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
    }}
}}
"""


def start_nginx(tmp: Path, bodies: dict[str, bytes], workers: int, gzip: bool) -> Server:
    """nginx serving each pool's bytes at the same path mcs uses, `/config/<pool>`; with gzip, the
    bytes are mcs's gzip body, served by gzip_static from `<pool>.gz` (no compression per request)."""
    for pool_name, body in bodies.items():
        path = tmp / "www" / "config" / pool_name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        if gzip:
            path.with_name(pool_name + ".gz").write_bytes(body)
    # nginx creates the temp directories themselves but not their parent.
    (tmp / "nginx-tmp").mkdir(exist_ok=True)
    port = free_port()
    conf = tmp / "nginx.conf"
    # As root, nginx workers would drop to `nobody`, who cannot enter the private temp directory.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(tmp=tmp, workers=workers, port=port, user=user,
                                      gzip_static="on" if gzip else "off"))
    log = tmp / "nginx.log"
    # -p and -e keep nginx away from /var/log/nginx and /usr/share/nginx before it reads the config.
    proc = spawn(["nginx", "-p", str(tmp), "-e", str(tmp / "nginx-error.log"), "-c", str(conf)], log)
    base_url = f"http://127.0.0.1:{port}"
    wait_up(f"{base_url}/config/{next(iter(bodies))}", proc, log)
    return Server("nginx", base_url, proc)


# -- wrk ---------------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if m is None:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> Result:
    """req/s, p50, p99, request count, bytes read and errors from `wrk --latency` output."""
    def find(pattern: str) -> re.Match[str]:
        m = re.search(pattern, out, re.MULTILINE)
        if m is None:
            raise ValueError(f"wrk output has no {pattern!r}:\n{out}")
        return m

    rps = float(find(r"^Requests/sec:\s+([\d.]+)").group(1))
    p50 = _ms(find(r"^\s+50%\s+(\S+)").group(1))
    p99 = _ms(find(r"^\s+99%\s+(\S+)").group(1))
    done = find(r"^\s+(\d+) requests in [\d.]+\w+, ([\d.]+)(\w+) read")
    bytes_read = float(done.group(2)) * _SIZE_UNITS[done.group(3)]
    errors = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    return Result(rps, p50, p99, int(done.group(1)), bytes_read, errors)


def run_wrk(url: str, connections: int, duration: float, timeout: float, gzip: bool) -> Result:
    """One wrk run; wrk's own process group, so a Ctrl-C here still reaches it through cleanup()."""
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{duration:.0f}s", "--latency", f"--timeout={timeout:.0f}s"]
    for name, value in request_headers(gzip).items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(url)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    _PROCS.append(proc)
    try:
        # Bounded: wrk stops itself after `duration`; the margin covers start-up and slow final replies.
        out, _ = proc.communicate(timeout=duration + timeout + 30)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
        raise SystemExit(f"wrk against {url} did not finish in time")
    finally:
        if proc.poll() is not None:
            _PROCS.remove(proc)
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{out.decode(errors='replace')}")
    return parse_wrk(out.decode())


# -- main --------------------------------------------------------------------------------------------

def check_tools() -> list[str]:
    return [tool for tool in ("wrk", "nginx") if shutil.which(tool) is None]


def fmt_ms(ms: float) -> str:
    return f"{ms:8.2f} ms" if ms < 1000 else f"{ms / 1000:8.2f} s "


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--sizes", nargs="+", choices=sorted(POOLS), default=["typical", "large"])
    parser.add_argument("--rounds", type=int, default=1, help="runs per server and cell (the median is shown)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="mcs worker processes of the multi-worker server (default: one per core)")
    parser.add_argument("--gzip", action="store_true",
                        help="send Accept-Encoding: gzip as Ignition's Go client does (nginx: gzip_static)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="wrk request timeout: a 3 MB answer under 64 connections can take seconds")
    args = parser.parse_args()

    missing = check_tools()
    if missing:
        print(f"bench/serve.py needs {' and '.join(missing)}; install with: {APT_HINT}", file=sys.stderr)
        return 2
    cores = os.cpu_count() or 1
    worker_counts = sorted({args.workers, 1}, reverse=True)

    with tempfile.TemporaryDirectory(prefix="mcs-bench-") as tmp_name, terminated_on_sigterm():
        tmp = Path(tmp_name)
        try:
            return run(tmp, args, cores, worker_counts)
        except KeyboardInterrupt:
            print("\ninterrupted; stopping the servers", file=sys.stderr)
            return 130
        finally:
            cleanup()


def run(tmp: Path, args: argparse.Namespace, cores: int, worker_counts: list[int]) -> int:
    base, kubeconfig = build_layout(tmp)
    mcs_servers = [start_mcs(tmp, base, kubeconfig, w) for w in worker_counts]

    # The bytes nginx serves are the bytes mcs serves, fetched once (the first request builds them).
    bodies: dict[str, bytes] = {}
    for size in args.sizes:
        t0 = time.perf_counter()
        status, body = fetch(f"{mcs_servers[0].base_url}/config/{POOLS[size]}", gzip=args.gzip)
        cold = time.perf_counter() - t0
        if status != 200:
            raise SystemExit(f"mcs answered {status} for {size}: {body[:200]!r}")
        bodies[POOLS[size]] = body
        coding = "gzip" if args.gzip else "identity"
        print(f"{size} pool: {len(body) / 1024:.0f} KiB served ({coding}; first request, building it: "
              f"{cold * 1000:.0f} ms)")
    nginx = start_nginx(tmp, bodies, cores, args.gzip)
    servers = [nginx, *mcs_servers]
    for server in servers:
        for size in args.sizes:
            status, body = fetch(f"{server.base_url}/config/{POOLS[size]}", gzip=args.gzip)
            if status != 200 or body != bodies[POOLS[size]]:
                raise SystemExit(f"{server.name} does not serve the same {size} bytes")

    # Warm-up: every mcs worker builds its own cache on its first request, and SO_REUSEPORT spreads
    # connections over the workers by hash, so a short wrk run is what reaches them all.
    print(f"warming up ({len(servers)} servers, {len(args.sizes)} pools) ...", flush=True)
    for server in servers:
        for size in args.sizes:
            run_wrk(f"{server.base_url}/config/{POOLS[size]}", 16, 2, 30, args.gzip)

    print(f"\nload average before: {os.getloadavg()[0]:.1f} ({cores} cores)")
    print(f"wrk -t2 -d{args.duration:.0f}s --latency on loopback, {cores} cores "
          f"(wrk shares them with the server), {args.rounds} round(s), median shown")
    print("headers: " + "; ".join(f"{k}: {v}" for k, v in request_headers(args.gzip).items()))
    header = f"{'pool':<8} {'conns':>5}  {'server':<8} {'req/s':>9} {'p50':>11} {'p99':>11} {'vs nginx':>9}  errors"
    print(header)
    print("-" * len(header))
    results: dict[tuple[str, int, str], list[Result]] = {}
    turn = 0
    below: list[str] = []
    for size in args.sizes:
        for conns in args.connections:
            for _ in range(args.rounds):
                # Rotate who goes first, so no server always runs right after the same neighbour.
                order = servers[turn % len(servers):] + servers[:turn % len(servers)]
                turn += 1
                for server in order:
                    res = run_wrk(f"{server.base_url}/config/{POOLS[size]}", conns, args.duration, args.timeout,
                                  args.gzip)
                    per_request = res.bytes_read / max(res.requests, 1)
                    # A lower bound only: wrk counts the bytes of replies still in flight at the end
                    # (64 x 3 MB is a lot of them) and prints the total rounded ("2.92GB").
                    expected = len(bodies[POOLS[size]])
                    if res.requests and per_request < expected * 0.99:
                        raise SystemExit(f"{server.name}: {per_request:.0f} bytes per response, "
                                         f"expected about {expected}")
                    results.setdefault((size, conns, server.name), []).append(res)
            ref = statistics.median(r.rps for r in results[(size, conns, nginx.name)])
            for server in servers:
                runs = results[(size, conns, server.name)]
                rps = statistics.median(r.rps for r in runs)
                p50 = statistics.median(r.p50_ms for r in runs)
                p99 = statistics.median(r.p99_ms for r in runs)
                ratio = rps / ref if ref else 0.0
                first = server is nginx  # the cell's first line names the pool and connection count
                print(f"{size if first else '':<8} {conns if first else '':>5}  {server.name:<8} {rps:9.1f} "
                      f"{fmt_ms(p50)} {fmt_ms(p99)} {'' if first else f'{ratio:.2f}':>9}  "
                      f"{sum(r.errors for r in runs)}")
                if server is not nginx and ratio < TARGET_RATIO:
                    below.append(f"{server.name} {size} c{conns} ({ratio:.3f})")
    # The machine may be shared: a load average well above the core count means noisy figures.
    print(f"load average at the end: {os.getloadavg()[0]:.1f} ({cores} cores)")
    print(f"\ntarget: mcs at least {TARGET_RATIO:.0%} of nginx's req/s with {args.workers} worker(s); "
          f"below it: {', '.join(below) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
