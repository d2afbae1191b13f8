"""Benchmark of the machine-config server against nginx: wrk on loopback against `/config/<pool>`
for a typical pool (about 180 KB served) and a large one (about 3 MB), with 16 and 64 connections,
identity and gzip, beside nginx serving exactly the same bytes as static files (sendfile on) in the
same run.

mcs runs twice, side by side on two ports: with `--workers N` (default: one per core) and with one
worker (the default a user gets); each is compared with an nginx running the same number of
worker processes. Runs alternate between the servers (the order rotates per round), so a burst of
load elsewhere on the machine does not land on one side only. Prints req/s, p50, p99, the server's
CPU time per request (user+system of its whole process group: less sensitive to other load than
req/s) and the ratio to nginx's req/s with its spread over the rounds, then mcs's p99 and CPU per
request over nginx's. Issue #18's targets, in every cell: req/s at least nginx's, p99 at most 1.5
times and CPU per request at most 1.3 times nginx's; the last line names the cells that miss them.

Needs `wrk` and `nginx` (Debian: `apt-get install -y wrk nginx-light`); exits 2 without them.

Usage: .venv/bin/python bench/serve.py [--duration 10] [--connections 16 64] [--sizes typical large]
                                       [--codings identity gzip] [--rounds 3] [--workers N]
       gzip sends `Accept-Encoding: gzip` as Ignition's Go client does; nginx then serves mcs's gzip
       body through gzip_static. Note that the fixture configs compress far better than real ones.
"""
from __future__ import annotations

import argparse
import dataclasses
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
from tests.unit.server.test_mcs_layout import ignition_config, machine_config, pool, write_layout, write_yaml  # noqa: E402

APT_HINT = "apt-get install -y wrk nginx-light"
# The typical pool is the layout's own `worker`; the large one is added beside it as pool `large`,
# so one mcs process serves both and is started only once per worker count.
POOLS = {"typical": "worker", "large": "large"}
LARGE_CONFIG = "rendered-large-0123456789abcdef0123456789abcdef"
# Issue #18's targets, per cell: req/s at least nginx's, p99 at most 1.5 times nginx's, CPU per
# request at most 1.3 times nginx's.
TARGET_RATIO = 1.0
TARGET_CPU_RATIO = 1.3
# The tail-latency target: mcs's p99 at most this multiple of nginx's, in every cell.
TARGET_P99_RATIO = 1.5


@dataclass(frozen=True)
class Result:
    """One wrk run."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    bytes_read: float
    errors: int  # socket errors (connect, read, write, timeout) plus non-2xx/3xx responses
    cpu_us: float = 0.0  # the server's CPU time (user + system, all its processes) per request


@dataclass
class Server:
    """A server under test and the process that runs it (its own process group)."""

    name: str
    base_url: str
    proc: subprocess.Popen[bytes]


# -- processes ---------------------------------------------------------------------------------------

_PROCS: list[subprocess.Popen[bytes]] = []


def spawn(argv: list[str], log: Path, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a process in a session of its own, remembered for cleanup.

    A session of its own keeps Ctrl-C from reaching it directly (we stop it in order, in `cleanup`),
    and lets us signal its whole group: mcs workers and nginx workers are its children.
    """
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=cwd, env=env)
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


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in group `pgid` (the server and its workers)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command: state ppid pgrp ... utime(11) stime(12)
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    # Another process could take it before the server binds; on a quiet loopback that does not happen.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


def request_headers(gzip: bool) -> dict[str, str]:
    """What the load sends: Ignition's Accept header, and for gzip the Accept-Encoding of Go's
    HTTP client (which Ignition uses); otherwise an explicit identity."""
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
    # This tree's mcs, with the interpreter running the benchmark (a venv's or the project's own).
    proc = spawn([sys.executable, "-c", "import sys; from mcs.cli import main; sys.exit(main())",
                  "--log-level", "WARNING", "bootstrap",
                  "--server-basedir", str(base), "--bootstrap-kubeconfig", str(kubeconfig),
                  "--insecure-port", str(port), "--secure-port", "-1", "--bind-address", "127.0.0.1",
                  "--workers", str(workers)], log, cwd=ROOT,
                 env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    base_url = f"http://127.0.0.1:{port}"
    wait_up(f"{base_url}/healthz", proc, log)
    return Server(f"mcs {workers}w", base_url, proc)


NGINX_CONF = """\
# Written by bench/serve.py: static files on loopback, everything inside {tmp}.
daemon off;
master_process on;
worker_processes {workers};
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
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
    # nginx at its best on static files: descriptors and stat results cached, like mcs's cache.
    open_file_cache max=64 inactive=60s;
    open_file_cache_valid 60s;
    types {{ }}
    default_type application/json;
    gzip_static on;
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


def write_www(tmp: Path, bodies: dict[tuple[str, bool], bytes]) -> None:
    """Each pool's bytes at the path mcs uses, `/config/<pool>`, and mcs's gzip body beside it as
    `<pool>.gz` for gzip_static (nginx compresses nothing per request)."""
    for (pool_name, gzip), body in bodies.items():
        path = tmp / "www" / "config" / (pool_name + (".gz" if gzip else ""))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def start_nginx(tmp: Path, pool_name: str, workers: int) -> Server:
    """nginx with `workers` worker processes serving `tmp/www` (see write_www) on a port of its own."""
    # nginx creates the temp directories themselves but not their parent.
    (tmp / "nginx-tmp").mkdir(exist_ok=True)
    port = free_port()
    conf = tmp / f"nginx-w{workers}.conf"
    # As root, nginx workers would drop to `nobody`, who cannot enter the private temp directory.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_CONF.format(tmp=tmp, workers=workers, port=port, user=user, name=f"nginx-w{workers}"))
    log = tmp / f"nginx-w{workers}.log"
    # -p and -e keep nginx away from /var/log/nginx and /usr/share/nginx before it reads the config.
    proc = spawn(["nginx", "-p", str(tmp), "-e", str(tmp / f"nginx-w{workers}-error.log"), "-c", str(conf)], log)
    base_url = f"http://127.0.0.1:{port}"
    wait_up(f"{base_url}/config/{pool_name}", proc, log)
    return Server(f"nginx {workers}w", base_url, proc)


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


# -- in process -------------------------------------------------------------------------------------

# Run by `--in-process` with the measured tree first on PYTHONPATH: one fast-path connection
# (FastProtocol on a transport that only counts writes) answering the same cached request over and
# over; prints the CPU seconds per answer. No sockets and no other process: a figure of the
# interpreter's work alone, steady under load elsewhere (the best of `repeats` runs).
IN_PROCESS = """
import asyncio, sys, tempfile, time
from pathlib import Path
from bench_mcs import ACCEPT, SIZES
from tests.unit.server.test_mcs_layout import ignition_config, write_layout
from mcs.fastpath import FastPath, FastProtocol
from mcs.options import BootstrapOptions
from mcs.server import ConnectionGuard
from mcs.state import build_state

class Counting:
    writes = 0
    def write(self, data): self.writes += 1
    def get_extra_info(self, name, default=None): return ("127.0.0.1", 40000) if name == "peername" else default
    def is_closing(self): return False
    def get_write_buffer_size(self): return 0

async def main(n, coding, repeats):
    with tempfile.TemporaryDirectory() as tmp:
        base, kube = write_layout(Path(tmp), ignition_config(kargs=["nosmt"], extra_files=SIZES["typical"]))
        guard = ConnectionGuard(10.0, 60.0)
        state = build_state(BootstrapOptions(base, kube, input_check_interval=0.5), guard)
        await state.cache.get("worker", "3.5.0")
        protocol, transport = FastProtocol(FastPath(state, guard), lambda: None, 64, 8190), Counting()
        protocol.connection_made(transport)
        head = ("GET /config/worker HTTP/1.1\\r\\nHost: 127.0.0.1:22623\\r\\nAccept: " + ACCEPT +
                "\\r\\nAccept-Encoding: " + coding + "\\r\\n\\r\\n").encode()
        best = float("inf")
        for _ in range(repeats):
            start = time.process_time()
            for _ in range(n):
                protocol.data_received(head)
            best = min(best, (time.process_time() - start) / n)
        assert transport.writes == n * repeats, "not every request was answered on the fast path"
        print(f"{best * 1e6:.2f}")

asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
"""


def in_process(tree: Path, coding: str, answers: int = 200_000, repeats: int = 5) -> float:
    """CPU microseconds per fast-path answer of `tree`'s mcs, in process (see IN_PROCESS)."""
    path = os.pathsep.join([str(tree), str(tree / "bench")])
    out = subprocess.run([sys.executable, "-c", IN_PROCESS, str(answers), coding, str(repeats)], check=True,
                         capture_output=True, text=True, cwd=tree, env={**os.environ, "PYTHONPATH": path})
    return float(out.stdout.split()[-1])


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
    parser.add_argument("--codings", nargs="+", choices=["identity", "gzip"], default=["identity", "gzip"],
                        help="gzip: Accept-Encoding: gzip as Ignition's Go client sends it (nginx: gzip_static)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per server and cell (the median is shown, and the spread of the ratio)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes of the multi-worker mcs and its nginx (default: one per core)")
    parser.add_argument("--gzip", action="store_true", help="the same as --codings gzip")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="wrk request timeout: a 3 MB answer under 64 connections can take seconds")
    parser.add_argument("--in-process", nargs="*", type=Path, metavar="TREE",
                        help="only the CPU time per cached answer of the fast path in process (typical pool, "
                             "no sockets: steady under other load), of this tree or of each TREE given")
    args = parser.parse_args()
    if args.gzip:
        args.codings = ["gzip"]
    if args.in_process is not None:
        for tree in args.in_process or [ROOT]:
            for coding in args.codings:
                print(f"{tree}: {in_process(tree.resolve(), coding):.2f} us CPU per fast-path answer in process "
                      f"(typical, {coding})")
        return 0

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


def measure(server: Server, url: str, conns: int, duration: float, timeout: float, gzip: bool) -> Result:
    """One wrk run, with the server's CPU time per request over it."""
    before = group_cpu_seconds(server.proc.pid)
    res = run_wrk(url, conns, duration, timeout, gzip)
    cpu = group_cpu_seconds(server.proc.pid) - before
    return dataclasses.replace(res, cpu_us=cpu * 1e6 / max(res.requests, 1))


def run(tmp: Path, args: argparse.Namespace, cores: int, worker_counts: list[int]) -> int:
    base, kubeconfig = build_layout(tmp)
    mcs_servers = [start_mcs(tmp, base, kubeconfig, w) for w in worker_counts]
    codings = [c == "gzip" for c in args.codings]

    # The bytes nginx serves are the bytes mcs serves, fetched once (the first request builds them).
    bodies: dict[tuple[str, bool], bytes] = {}
    for gzip in codings:
        for size in args.sizes:
            t0 = time.perf_counter()
            status, body = fetch(f"{mcs_servers[0].base_url}/config/{POOLS[size]}", gzip=gzip)
            cold = time.perf_counter() - t0
            if status != 200:
                raise SystemExit(f"mcs answered {status} for {size}: {body[:200]!r}")
            bodies[(POOLS[size], gzip)] = body
            print(f"{size} pool: {len(body) / 1024:.0f} KiB served ({'gzip' if gzip else 'identity'}; first "
                  f"request, building it: {cold * 1000:.0f} ms)")
    write_www(tmp, bodies)
    # Each mcs beside an nginx with as many worker processes.
    pairs = [(mcs, start_nginx(tmp, POOLS[args.sizes[0]], w)) for mcs, w in zip(mcs_servers, worker_counts)]
    servers = [server for pair in pairs for server in pair]
    for server in servers:
        for (pool_name, gzip), served in bodies.items():
            status, body = fetch(f"{server.base_url}/config/{pool_name}", gzip=gzip)
            if status != 200 or body != served:
                raise SystemExit(f"{server.name} does not serve the same {pool_name} bytes")

    # Warm-up: every mcs worker builds its own cache on its first request, and SO_REUSEPORT spreads
    # connections over the workers by hash, so a short wrk run is what reaches them all.
    print(f"warming up ({len(servers)} servers) ...", flush=True)
    for server in servers:
        for (pool_name, gzip) in bodies:
            run_wrk(f"{server.base_url}/config/{pool_name}", 16, 2, 30, gzip)

    load_before = os.getloadavg()
    print(f"\nload average before: {load_before[0]:.1f} {load_before[1]:.1f} {load_before[2]:.1f} ({cores} cores)")
    print(f"wrk -t2 -d{args.duration:.0f}s --latency on loopback, {cores} cores (wrk shares them with the "
          f"servers), {args.rounds} round(s): median req/s, p50, p99 and CPU; ratio: median [min-max] of the "
          f"rounds' mcs/nginx req/s")
    print(f"servers: {', '.join(s.name for s in servers)} (mcs `--workers N`; nginx worker_processes N); "
          f"access logs off on both; keep-alive on both")
    print(f"headers: Accept: {ACCEPT}; Accept-Encoding: identity | gzip")
    header = (f"{'pool':<8} {'coding':<8} {'conns':>5}  {'server':<9} {'req/s':>9} {'p50':>11} {'p99':>11} "
              f"{'CPU/req':>9}  {'vs nginx':<17} {'p99 x':>6} {'CPU x':>6} errors")
    print(header)
    print("-" * len(header))
    results: dict[tuple[str, bool, int, str], list[Result]] = {}
    turn = 0
    below: list[str] = []
    summary: list[tuple[str, float]] = []
    p99_summary: list[tuple[str, float]] = []
    cpu_summary: list[tuple[str, float]] = []
    for gzip in codings:
        for size in args.sizes:
            pool_name = POOLS[size]
            expected = len(bodies[(pool_name, gzip)])
            for conns in args.connections:
                for _ in range(args.rounds):
                    # Rotate who goes first, so no server always runs right after the same neighbour.
                    order = servers[turn % len(servers):] + servers[:turn % len(servers)]
                    turn += 1
                    for server in order:
                        res = measure(server, f"{server.base_url}/config/{pool_name}", conns, args.duration,
                                      args.timeout, gzip)
                        per_request = res.bytes_read / max(res.requests, 1)
                        # A lower bound only: wrk counts the bytes of replies still in flight at the end
                        # (64 x 3 MB is a lot of them) and prints the total rounded ("2.92GB").
                        if res.requests and per_request < expected * 0.99:
                            raise SystemExit(f"{server.name}: {per_request:.0f} bytes per response, "
                                             f"expected about {expected}")
                        results.setdefault((size, gzip, conns, server.name), []).append(res)
                first_line = True
                for mcs, nginx in pairs:
                    ref_runs = results[(size, gzip, conns, nginx.name)]
                    runs = results[(size, gzip, conns, mcs.name)]
                    ratios = [m.rps / n.rps if n.rps else 0.0 for m, n in zip(runs, ref_runs)]
                    # Tail latency and CPU: the median of mcs's rounds over the median of nginx's.
                    p99_ratio = (statistics.median(r.p99_ms for r in runs)
                                 / max(statistics.median(r.p99_ms for r in ref_runs), 1e-9))
                    cpu_ratio = (statistics.median(r.cpu_us for r in runs)
                                 / max(statistics.median(r.cpu_us for r in ref_runs), 1e-9))
                    for server, rs in ((nginx, ref_runs), (mcs, runs)):
                        cell = (f"{size:<8} {'gzip' if gzip else 'identity':<8} {conns:>5}" if first_line
                                else " " * 23)
                        first_line = False
                        ratio, times = "", " " * 13
                        if server is mcs:
                            ratio = f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"
                            times = f"{p99_ratio:6.2f} {cpu_ratio:6.2f}"
                        print(f"{cell}  {server.name:<9} {statistics.median(r.rps for r in rs):9.1f} "
                              f"{fmt_ms(statistics.median(r.p50_ms for r in rs))} "
                              f"{fmt_ms(statistics.median(r.p99_ms for r in rs))} "
                              f"{statistics.median(r.cpu_us for r in rs):6.0f} us  {ratio:<17} {times} "
                              f"{sum(r.errors for r in rs)}")
                    median_ratio = statistics.median(ratios)
                    cell_name = f"{mcs.name} {size} {'gzip' if gzip else 'identity'} c{conns}"
                    summary.append((cell_name, median_ratio))
                    p99_summary.append((cell_name, p99_ratio))
                    cpu_summary.append((cell_name, cpu_ratio))
                    if median_ratio < TARGET_RATIO:
                        below.append(f"{mcs.name} {size} {'gzip' if gzip else 'identity'} c{conns} "
                                     f"({median_ratio:.3f})")
    # The machine may be shared: a load average well above the core count means noisy figures.
    load_after = os.getloadavg()
    print(f"load average at the end: {load_after[0]:.1f} {load_after[1]:.1f} {load_after[2]:.1f} ({cores} cores)")
    worst = min(summary, key=lambda item: item[1])
    worst_p99 = max(p99_summary, key=lambda item: item[1])
    worst_cpu = max(cpu_summary, key=lambda item: item[1])
    over_p99 = [f"{name} ({r:.2f})" for name, r in p99_summary if r > TARGET_P99_RATIO]
    over_cpu = [f"{name} ({r:.2f})" for name, r in cpu_summary if r > TARGET_CPU_RATIO]
    print(f"\ntarget: mcs at least {TARGET_RATIO:.0%} of nginx's req/s (same worker count); lowest median "
          f"ratio: {worst[1]:.2f} ({worst[0]}); below the target: {', '.join(below) or 'none'}; "
          f"p99 mcs/nginx at most {TARGET_P99_RATIO}: highest {worst_p99[1]:.2f} ({worst_p99[0]}), above: "
          f"{', '.join(over_p99) or 'none'}; CPU/req mcs/nginx at most {TARGET_CPU_RATIO}: highest "
          f"{worst_cpu[1]:.2f} ({worst_cpu[0]}), above: {', '.join(over_cpu) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
