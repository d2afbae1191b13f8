"""The embedded cluster on the host for the end-to-end tests: a throwaway CA, `mcc start` and
`mcs start` as subprocesses over one local store, and read access to that store.

Also used by `scripts/nodes` (through tests/e2e/nodes.py) to reach a cluster that
`scripts/cluster` started: both describe the cluster with a `cluster.json` in the state dir.
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

MC_ANNOTATION = "machineconfiguration.openshift.io/"
CURRENT, DESIRED = MC_ANNOTATION + "currentConfig", MC_ANNOTATION + "desiredConfig"
STATE, REASON = MC_ANNOTATION + "state", MC_ANNOTATION + "reason"


class ClusterError(RuntimeError):
    """The controller or the server did not start, or died."""


def wait_until(check: Callable[[], T | None], timeout: float, what: str,
               describe: Callable[[], str] | None = None, interval: float = 0.25) -> T:
    """Poll `check` until it returns something truthy; on timeout fail naming `what` and the
    last state (`describe`), so a failing e2e run says where it stood."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            state = describe() if describe else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{state}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- a throwaway CA -------------------------------------------------------------------------

def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost; returns (ca, cert, key) paths.

    Made fresh per run: the nodes trust only this CA (it travels in the pointer config).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "machine-config e2e CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                            False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path, cert_path, key_path = (directory / "ca.crt", directory / "server.crt",
                                    directory / "server.key")
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


# ---- the two host programs ------------------------------------------------------------------

def program(name: str) -> list[str]:
    """How to run mcc/mcs from this interpreter's environment (the venv's entry point)."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", f"{name}.cli"]


@dataclass
class Cluster:
    """`mcc start` and `mcs start` over `local:<input_dir>` with state in `state_dir`."""

    input_dir: Path
    state_dir: Path
    workdir: Path  # logs and TLS material
    secure_port: int = field(default_factory=free_port)
    insecure_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ca: Path | None = None
    pid_file: Path | None = None  # for reap_stale_clusters() after a run killed before cleanup

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.secure_port}"

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.ca, cert, key = make_tls(self.workdir / "tls")
        store = f"local:{self.input_dir}"
        self._spawn("mcc", [*program("mcc"), "start", "--store", store,
                            "--state", str(self.state_dir)])
        self._spawn("mcs", [*program("mcs"), "start", "--store", store,
                            "--state", str(self.state_dir), "--cert", str(cert), "--key", str(key),
                            "--ca", str(self.ca),
                            "--secure-port", str(self.secure_port),
                            "--insecure-port", str(self.insecure_port),
                            "--bind-address", "127.0.0.1"])

    def _spawn(self, name: str, cmd: list[str]) -> None:
        out = open(self.log_path(name), "ab")
        log.info("starting %s", " ".join(cmd))
        # own session: a Ctrl-C in the terminal must not bypass the orderly stop below
        self.procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
                                            start_new_session=True)
        out.close()
        if self.pid_file is not None:
            self.pid_file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.pid_file, "a") as pids:
                pids.write(f"{self.procs[name].pid} {self.state_dir}\n")

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ClusterError(f"{name} exited {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 40) -> str:
        try:
            text = self.log_path(name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM to both, SIGKILL to what is still there after `timeout`."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM; killing it", name)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)

    # -- tokens and the config endpoint --
    def token(self, pool: str) -> str:
        return pool_token(self.state_dir, pool)

    def fetch_config(self, pool: str, token: str | None = None) -> tuple[int, bytes]:
        """GET /config/<pool> over HTTPS, trusting only the throwaway CA."""
        assert self.ca is not None
        return fetch(f"{self.url}/config/{pool}", self.ca, token)

    def wait_serving(self, pool: str, timeout: float = 60) -> dict[str, Any]:
        """Until the server answers /config/<pool> with Ignition (the controller rendered)."""
        last: list[str] = []

        def served() -> dict[str, Any] | None:
            self.check_alive()
            try:
                status, body = self.fetch_config(pool, self.token(pool))
            except (OSError, LookupError) as err:
                last[:] = [repr(err)]
                return None
            last[:] = [f"HTTP {status}: {body[:300]!r}"]
            return json.loads(body) if status == 200 else None

        return wait_until(served, timeout, f"/config/{pool} to be served",
                          lambda: f"last answer: {last}\nmcc:\n{self.log_tail('mcc')}\n"
                                  f"mcs:\n{self.log_tail('mcs')}")

    def describe(self) -> dict[str, Any]:
        """What `scripts/nodes` needs to join this cluster (written as cluster.json)."""
        assert self.ca is not None
        return {"url": self.url, "ca": str(self.ca), "state": str(self.state_dir),
                "input": str(self.input_dir)}


def reap_stale_clusters(runs_dir: Path) -> None:
    """Kill the mcc/mcs of a test run that was killed before its cleanup: `cluster-<owner>.pids`
    files whose owner is gone; a pid is killed only if it still runs on that state dir."""
    for pid_file in runs_dir.glob("cluster-*.pids"):
        owner = pid_file.stem.rsplit("-", 1)[-1]
        if owner.isdigit() and Path(f"/proc/{owner}").exists():
            continue  # a live session's
        for line in pid_file.read_text().splitlines():
            pid, _, state_dir = line.partition(" ")
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if state_dir.encode() in cmdline:
                os.killpg(int(pid), signal.SIGKILL)  # own session: its whole group
        pid_file.unlink(missing_ok=True)


def pool_token(state_dir: Path, pool: str) -> str:
    """The pool's bootstrap token from `<state>/tokens` (`pool token` per line)."""
    path = state_dir / "tokens"
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == pool:
            return parts[1]
    raise LookupError(f"no token for pool {pool} in {path}")


def fetch(url: str, ca: Path, token: str | None = None, timeout: float = 10
          ) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(ca))
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


def pointer_config(cluster_url: str, ca: Path, token: str, pool: str = "worker") -> bytes:
    """`mcs pointer` output for the pool: the only thing a new node starts with."""
    proc = subprocess.run([*program("mcs"), "pointer", "--url", f"{cluster_url}/config/{pool}",
                           "--ca", str(ca), "--token", token],
                          capture_output=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"mcs pointer exited {proc.returncode}: {proc.stderr.decode()}")
    return proc.stdout


# ---- reading the store ----------------------------------------------------------------------

def open_local_store(input_dir: Path, state_dir: Path) -> Any:
    """The same local store the controller and server use (SQLite in WAL mode: a concurrent
    reader is fine)."""
    from machineconfig.store import open_store
    return open_store(f"local:{input_dir}", state_dir=str(state_dir))


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def pool_summary(pool: dict[str, Any]) -> str:
    status = pool.get("status") or {}
    conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    counts = {k: status.get(k) for k in ("machineCount", "updatedMachineCount",
                                          "readyMachineCount", "unavailableMachineCount",
                                          "degradedMachineCount")}
    return (f"pool {pool['metadata']['name']}: spec={((pool.get('spec') or {}).get('configuration') or {}).get('name')} "
            f"status={(status.get('configuration') or {}).get('name')} {counts} {conds}")


def node_summary(nodes: list[Any]) -> str:
    lines = []
    for node in nodes:
        a = node.annotations
        lines.append(f"  {node.name}: current={a.get(CURRENT)} desired={a.get(DESIRED)} "
                     f"state={a.get(STATE)} reason={a.get(REASON, '')[:200]!r} "
                     f"unschedulable={node.unschedulable}")
    return "\n".join(lines)
