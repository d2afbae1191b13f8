"""A real Kubernetes control plane for the kube tests, the way envtest runs one: etcd,
kube-apiserver and kube-controller-manager (optionally kube-scheduler) on loopback, with a
generated CA, serving certificates and service-account keys; no kubelet.

Binaries: `<name>.xz` in `$MC_KUBE_BIN_DIR`, else the first `shared/bin` found next to the
repository (`<repo>/../shared/bin`, `<repo>/../../shared/bin`: a worktree under `/work/wt/X`
finds `/work/shared/bin`). They are decompressed once into
`$MCT_CACHE_DIR` (tests/support/cachedir.py: default `/var/cache/machine-config-tests`, or `~/.cache/machine-config-tests`
when that is not writable) as `kube-bin-<sha256 of the .xz, 16 hex>/<name>`, under a file lock.
A missing binary is a `ControlPlaneError` whose message is one line naming it.

API (stable; the fixtures in tests/kube/conftest.py build on it):

    cp = ControlPlane.start(workdir)     # or the session fixture `control_plane`
    cp.url                               # https://127.0.0.1:PORT
    cp.kubeconfig                        # Path of an admin kubeconfig (client cert, system:masters)
    cp.client()                          # a lightkube Client as admin
    cp.client(kubeconfig)                # ... from any kubeconfig
    cp.create_namespace(prefix, wait_for_account=False)  # a fresh namespace (name returned)
    cp.delete_namespace(name)            # ask for its deletion (finished by the namespace ctrl)
    cp.user_kubeconfig(user, groups)     # a kubeconfig authenticating as `user` (client cert)
    cp.service_account_kubeconfig(ns, name)  # a kubeconfig with a real bound SA token
                                         #   (TokenRequest; the SA is created when missing)
    cp.call(method, path, body, ctype, kubeconfig=None)  # raw HTTP: (status, JSON body)
    cp.compact_etcd()                    # compact etcd to its current revision (old watches: 410)
    cp.etcd_revision()                   # etcd's current revision
    cp.restart_apiserver()               # stop kube-apiserver, start it again on the same port
    cp.stop_apiserver(); cp.start_apiserver()  # the same in two steps
    mark = cp.audit_mark()               # a position in the audit log after every answered request
    cp.requests(since=mark, user=None, writes_only=False)  # [AuditRecord(verb, method, path,
                                         #   uri, user, code)] from kube-apiserver's audit log
    cp.set_pod_ready(ns, pod)            # a pod's status Running/Ready, as a kubelet would post
    with cp.controller_manager_paused(): ...  # kube-controller-manager SIGSTOPped in the block
    cp.wait_for(what, predicate, timeout)  # poll; one-line ControlPlaneError on timeout
    cp.stop()                            # kill every process group, remove the data dir

With nodes (tests/kubenode): `ControlPlane.start(workdir, scheduler=True, netns=PATH,
address="10.213.0.1")` runs every component inside that network namespace (`nsenter --net`),
kube-apiserver on `address`; `cp.url`/`cp.etcd_url` stay host-reachable through loopback
forwarders (tests/kubenode/forward.py) and `cp.internal_url` is what nodes use. It also turns on
what real kubelets need: Node,RBAC authorization with NodeRestriction, a kubelet client
certificate for kube-apiserver, and the deployment, replicaset, node-lifecycle and CSR-signing
controllers. Without `netns` nothing changes (loopback, as above).

kube-apiserver serves nodes without its watch cache (`--watch-cache-sizes=nodes#0`): a watch of
nodes is served by etcd, so compacting etcd gives a nodes watch from an older resourceVersion a
real 410 Gone at once (from the watch cache the apiserver would serve it out of its own history,
which nothing lets a test shrink on demand). Every other kind keeps the watch cache, which sends
BOOKMARK events (about 2 s before a watch's timeoutSeconds ends, else every minute; only when
the cache's resourceVersion moved on since the watcher's last event, e.g. after a consistent list).

Also: authorization is RBAC, the ServiceAccount admission plugin is off (a pod needs no
ServiceAccount in its brand-new namespace), every request but the control plane's own is in an
audit log (Metadata level), and etcd's data dir, the PKI and the logs live under one work
directory (in /dev/shm when writable) removed by `stop()`. Child processes die with the test
process (PR_SET_PDEATHSIG) even when it is killed.

kube-controller-manager runs the serviceaccount, serviceaccount-token, namespace,
garbage-collector and disruption controllers: PodDisruptionBudget status and owner-reference
garbage collection are computed for real. Nothing runs pods: a pod bound with `spec.nodeName`
stays Pending until a test patches its status (see `set_pod_ready`).
"""
from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import hashlib
import ipaddress
import json
import lzma
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.cachedir import cache_dir
from tests.support.leaks import owned_by_fixture

REPO = Path(__file__).resolve().parents[2]
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
SERVICE_CIDR = "10.0.0.0/24"
KCM_CONTROLLERS = ("serviceaccount-controller,serviceaccount-token-controller,namespace-controller,"
                   "garbage-collector-controller,disruption-controller")
# with real kubelets (a control plane in a network namespace, tests/kubenode)
KCM_NODE_CONTROLLERS = ("deployment-controller,replicaset-controller,node-lifecycle-controller,"
                        "certificatesigningrequest-signing-controller,"
                        "pod-garbage-collector-controller")
START_TIMEOUT = 90.0
WATCH_CACHE_FLAGS = ["--watch-cache-sizes=nodes#0"]
# Requests of the control plane's own components are not audited (they are many).
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  users: [system:kube-controller-manager, system:kube-scheduler, system:apiserver]
- level: None
  nonResourceURLs: [/readyz, /healthz, /livez]
- level: Metadata
"""
VERB_METHODS = {"create": "POST", "update": "PUT", "patch": "PATCH", "delete": "DELETE",
                "deletecollection": "DELETE", "get": "GET", "list": "GET", "watch": "GET"}


class ControlPlaneError(Exception):
    """The control plane could not be provided (message: one line)."""


# ---------------------------------------------------------------- binaries

def bin_dir() -> Path:
    env = os.environ.get("MC_KUBE_BIN_DIR")
    if env:
        return Path(env)
    for up in (REPO.parent, REPO.parent.parent):
        if (up / "shared" / "bin").is_dir():
            return up / "shared" / "bin"
    return REPO.parent / "shared" / "bin"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def binary(name: str) -> Path:
    """The decompressed executable `name`, from the cache (filled on first use)."""
    source = bin_dir() / f"{name}.xz"
    if not source.is_file():
        raise ControlPlaneError(
            f"kube test binary missing: {source} (set MC_KUBE_BIN_DIR to a directory with "
            f"{', '.join(b + '.xz' for b in BINARIES)})")
    target_dir = cache_dir() / f"kube-bin-{_sha256(source)[:16]}"
    target = target_dir / name
    if target.is_file() and os.access(target, os.X_OK):
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    with (target_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            fd, tmp = tempfile.mkstemp(dir=target_dir, prefix=f".{name}.")
            try:
                with os.fdopen(fd, "wb") as out, lzma.open(source) as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                os.chmod(tmp, 0o755)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
    return target


# ---------------------------------------------------------------- PKI

def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[no-any-return]
                             serialization.NoEncryption())


def _pem_cert(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[no-any-return]


@dataclass
class CA:
    key: Any
    cert: Any

    @classmethod
    def create(cls) -> CA:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import NameOID

        key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "machine-config-test-ca")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False),
                    critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    def issue(self, common_name: str, organizations: tuple[str, ...] = (),
              dns: tuple[str, ...] = (), ips: tuple[str, ...] = (),
              server: bool = False) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for a client (or, `server`, a serving) certificate."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = _key()
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(x509.Name(attrs))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.ExtendedKeyUsage(
                       [ExtendedKeyUsageOID.SERVER_AUTH if server
                        else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return _pem_cert(builder.sign(self.key, hashes.SHA256())), _pem_key(key)


def _write(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- processes

def _pdeathsig() -> None:  # pragma: no cover - runs in the child
    """Die with the test process (PR_SET_PDEATHSIG), whatever kills it."""
    import ctypes
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


@dataclass
class Proc:
    name: str
    args: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(  # noqa: S603 - our own test binaries
                self.args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_pdeathsig)
        # the session's control plane, even when a test restarts a component (leak check)
        owned_by_fixture(self.popen.pid)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # the group may still hold children once the leader is gone
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen = None

    def last_line(self) -> str:
        try:
            lines = [ln for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1][:300] if lines else ""

    def check(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise ControlPlaneError(f"{self.name} exited {self.popen.returncode}: "
                                    f"{self.last_line()} (log {self.log})")


# ---------------------------------------------------------------- the control plane

@dataclass(frozen=True)
class AuditRecord:
    """One request as kube-apiserver's audit log saw it."""
    verb: str     # get, list, watch, create, update, patch, delete, deletecollection
    method: str   # the HTTP method (GET for get/list/watch)
    path: str     # the request path without the query
    uri: str      # the path with the query
    user: str     # the authenticated user name
    code: int     # the response status


@dataclass
class ControlPlane:
    workdir: Path
    ca: CA
    api_port: int
    etcd_port: int
    procs: dict[str, Proc] = field(default_factory=dict)
    kubeconfig: Path = Path()
    _ssl: ssl.SSLContext | None = None
    netns: Path | None = None       # run inside this network namespace (nodes)
    address: str = "127.0.0.1"      # kube-apiserver's address (in `netns` when given)
    host_ports: dict[int, int] = field(default_factory=dict)  # netns port -> loopback forwarder

    def _host_port(self, port: int) -> int:
        return self.host_ports.get(port, port)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._host_port(self.api_port)}"

    @property
    def internal_url(self) -> str:
        """kube-apiserver as seen from inside its network namespace (the nodes' URL)."""
        return f"https://{self.address}:{self.api_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self._host_port(self.etcd_port)}"

    # -- start / stop

    @classmethod
    def start(cls, workdir: Path | None = None, scheduler: bool = False,
              netns: Path | None = None, address: str = "127.0.0.1") -> ControlPlane:
        """Start etcd, kube-apiserver and kube-controller-manager (and kube-scheduler) and wait
        until /readyz answers ok and `default/default` ServiceAccount exists; with `netns`,
        inside that network namespace with kube-apiserver on `address` (see the docstring)."""
        binaries = {name: binary(name) for name in
                    BINARIES + (("kube-scheduler",) if scheduler else ())}
        if workdir is None:
            base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
            workdir = Path(tempfile.mkdtemp(prefix="mc-kube-", dir=base))
        workdir.mkdir(parents=True, exist_ok=True)
        cp = cls(workdir, CA.create(), free_port(), free_port(), netns=netns, address=address)
        try:
            if netns is not None:
                cp._forward_ports()
            cp._pki()
            cp._launch(binaries)
        except BaseException:
            cp.stop()
            raise
        return cp

    def _pki(self) -> None:
        from cryptography.hazmat.primitives import serialization

        pki = self.workdir / "pki"
        pki.mkdir()
        _write(pki / "ca.crt", _pem_cert(self.ca.cert), 0o644)
        _write(pki / "audit-policy.yaml", AUDIT_POLICY, 0o644)
        cert, key = self.ca.issue(
            "kube-apiserver", server=True,
            dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local"),
            ips=tuple(dict.fromkeys(("127.0.0.1", "10.0.0.1", self.address))))
        _write(pki / "apiserver.crt", cert, 0o644)
        _write(pki / "apiserver.key", key)
        if self.netns is not None:
            _write(pki / "ca.key", _pem_key(self.ca.key))  # the CSR signing controller's
            cert, key = self.ca.issue("kube-apiserver-kubelet-client", ("system:masters",))
            _write(pki / "kubelet-client.crt", cert, 0o644)
            _write(pki / "kubelet-client.key", key)
        sa = _key()
        _write(pki / "sa.key", _pem_key(sa))
        _write(pki / "sa.pub", sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
        self.kubeconfig = self.user_kubeconfig("admin", ("system:masters",),
                                               self.workdir / "admin.kubeconfig")
        # in system:masters: with one identity for all its controllers (no per-controller
        # service accounts) the default RBAC lacks e.g. poddisruptionbudgets/status
        self.user_kubeconfig("system:kube-controller-manager", ("system:masters",),
                             self.workdir / "kcm.kubeconfig", self.internal_url)
        self.user_kubeconfig("system:kube-scheduler", (), self.workdir / "scheduler.kubeconfig",
                             self.internal_url)

    def _forward_ports(self) -> None:
        """Loopback forwarders into the namespace for kube-apiserver and etcd (test side)."""
        assert self.netns is not None
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        for name, host, port in (("api-forward", self.address, self.api_port),
                                 ("etcd-forward", "127.0.0.1", self.etcd_port)):
            local = free_port()
            proc = Proc(name, [sys.executable, str(REPO / "tests/kubenode/forward.py"), str(local),
                               str(self.netns), host, str(port)], logs / f"{name}.log")
            proc.start()
            self.procs[name] = proc
            self.host_ports[port] = local

    def _node_flags(self) -> tuple[list[str], list[str]]:
        """(kube-apiserver, kube-controller-manager) flags for clusters with real kubelets."""
        if self.netns is None:
            return [], [f"--controllers={KCM_CONTROLLERS}"]
        pki = self.workdir / "pki"
        return ([f"--advertise-address={self.address}", "--authorization-mode=Node,RBAC",
                 "--enable-admission-plugins=NodeRestriction",
                 # node names resolve nowhere in the namespace; kubelets post their address
                 "--kubelet-preferred-address-types=InternalIP,Hostname",
                 f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
                 f"--kubelet-client-key={pki / 'kubelet-client.key'}"],
                [f"--controllers={KCM_CONTROLLERS},{KCM_NODE_CONTROLLERS}",
                 f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                 f"--cluster-signing-key-file={pki / 'ca.key'}"])

    def _launch(self, binaries: dict[str, Path]) -> None:
        pki = self.workdir / "pki"
        apiserver_flags, kcm_flags = self._node_flags()
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        self.procs["etcd"] = Proc("etcd", [
            str(binaries["etcd"]), "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{self.etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{free_port()}",
            "--name", "test", "--quota-backend-bytes", str(1 << 30)], logs / "etcd.log")
        self.procs["kube-apiserver"] = Proc("kube-apiserver", [
            str(binaries["kube-apiserver"]),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            f"--bind-address={self.address}",
            *(apiserver_flags or ["--advertise-address=127.0.0.1"]),
            f"--secure-port={self.api_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            *([] if apiserver_flags else ["--authorization-mode=RBAC"]),
            "--allow-privileged=true",
            *WATCH_CACHE_FLAGS, "--enable-priority-and-fairness=false",
            "--profiling=false", "--endpoint-reconciler-type=none",
            "--disable-admission-plugins=ServiceAccount",
            f"--audit-policy-file={pki / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}", "--audit-log-mode=blocking",
            "--audit-log-maxsize=0"], logs / "kube-apiserver.log")
        self.procs["kube-controller-manager"] = Proc("kube-controller-manager", [
            str(binaries["kube-controller-manager"]),
            f"--kubeconfig={self.workdir / 'kcm.kubeconfig'}",
            "--leader-elect=false", "--secure-port=0", "--profiling=false",
            *kcm_flags,
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=false",
            "--concurrent-gc-syncs=5"], logs / "kube-controller-manager.log")
        if "kube-scheduler" in binaries:
            self.procs["kube-scheduler"] = Proc("kube-scheduler", [
                str(binaries["kube-scheduler"]),
                f"--kubeconfig={self.workdir / 'scheduler.kubeconfig'}",
                "--leader-elect=false", "--secure-port=0"], logs / "kube-scheduler.log")
        if self.netns is not None:
            for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
                if name in self.procs:
                    self.procs[name].args[:0] = ["nsenter", f"--net={self.netns}"]
        self.procs["etcd"].start()
        self._wait("etcd", lambda: self._etcd_post("/v3/kv/range", {"key": "YQ=="}) is not None)
        self.procs["kube-apiserver"].start()
        self._wait_apiserver()
        for name in ("kube-controller-manager", "kube-scheduler"):
            if name in self.procs:
                self.procs[name].start()
        self._wait("default service account",
                   lambda: self.call("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0]
                   == 200)

    def _wait(self, what: str, ready: Any, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for proc in self.procs.values():
                if proc.popen is not None:
                    proc.check()
            try:
                if ready():
                    return
            except (OSError, ValueError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"{what} not ready after {timeout:.0f}s "
                                        f"(logs in {self.workdir / 'logs'})")
            time.sleep(0.1)

    def _wait_apiserver(self) -> None:
        self._wait("kube-apiserver /readyz",
                   lambda: self.call("GET", "/readyz", raw=True)[0] == 200)

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver (open watches end as connections drop) and start it again on
        the same port; returns once /readyz answers ok."""
        proc = self.procs["kube-apiserver"]
        proc.stop(timeout=2.0)  # graceful shutdown waits for the open watches far longer
        proc.start()
        self._wait_apiserver()

    def stop_apiserver(self) -> None:
        self.procs["kube-apiserver"].stop(timeout=2.0)

    def start_apiserver(self) -> None:
        self.procs["kube-apiserver"].start()
        self._wait_apiserver()

    @contextlib.contextmanager
    def controller_manager_paused(self) -> Iterator[None]:
        """kube-controller-manager stopped (SIGSTOP) inside the block, continued after it: e.g.
        a PodDisruptionBudget whose new spec the disruption controller has not yet seen."""
        proc = self.procs["kube-controller-manager"]
        assert proc.popen is not None
        os.killpg(proc.popen.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(proc.popen.pid, signal.SIGCONT)

    def stop(self) -> None:
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd",
                     "api-forward", "etcd-forward"):
            if name in self.procs:
                self.procs[name].stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- what clients asked (the audit log)

    @property
    def audit_log(self) -> Path:
        return self.workdir / "logs" / "audit.log"

    def audit_mark(self) -> int:
        """A position in the audit log after every request answered so far (a marker request is
        made and awaited in the log): pass it to `requests(since=...)`."""
        marker = f"/api/v1/namespaces/audit-mark-{secrets.token_hex(6)}"
        self.call("GET", marker)

        def logged() -> bool:
            return marker.encode() in self._audit_bytes()

        self._wait("audit log", logged, 10)
        data = self._audit_bytes()
        return data.index(b"\n", data.index(marker.encode())) + 1

    def _audit_bytes(self) -> bytes:
        try:
            return self.audit_log.read_bytes()
        except FileNotFoundError:
            return b""

    def requests(self, since: int = 0, user: str | None = None,
                 writes_only: bool = False) -> list[AuditRecord]:
        """The requests the audit log holds from position `since` (see `audit_mark`), oldest
        first; of `user` only if given; only create/update/patch/delete with `writes_only`.
        Requests of the control plane's own components are not there."""
        out = []
        for line in self._audit_bytes()[since:].splitlines():
            event = json.loads(line)
            # a watch is logged when its response starts (it completes much later); every
            # other request when it completes
            wanted = "ResponseStarted" if event.get("verb") == "watch" else "ResponseComplete"
            if event.get("stage") != wanted:
                continue
            record = AuditRecord(
                verb=event["verb"], method=VERB_METHODS.get(event["verb"], event["verb"].upper()),
                path=event["requestURI"].split("?", 1)[0], uri=event["requestURI"],
                user=event["user"].get("username", ""),
                code=int(event.get("responseStatus", {}).get("code", 0)))
            if user is not None and record.user != user:
                continue
            if writes_only and record.method in ("GET", "WATCH"):
                continue
            if "/namespaces/audit-mark-" in record.path:
                continue
            out.append(record)
        return out

    # -- etcd

    def _etcd_post(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        req = urllib.request.Request(self.etcd_url + path, data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
                return json.loads(resp.read())  # type: ignore[no-any-return]
        except (OSError, urllib.error.URLError):
            return None

    def etcd_revision(self) -> int:
        answer = self._etcd_post("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
        if answer is None:
            raise ControlPlaneError("etcd did not answer a range request")
        return int(answer["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd up to its current revision (physically): any watch or list from an
        older resourceVersion is answered 410 Gone. Returns the revision."""
        revision = self.etcd_revision()
        if self._etcd_post("/v3/kv/compaction", {"revision": str(revision),
                                                 "physical": True}) is None:
            raise ControlPlaneError(f"etcd compaction to {revision} failed")
        return revision

    # -- clients

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            ctx = ssl.create_default_context(cafile=str(self.workdir / "pki" / "ca.crt"))
            ctx.load_cert_chain(self.workdir / "admin.crt", self.workdir / "admin.key")
            self._ssl = ctx
        return self._ssl

    def call(self, method: str, path: str, body: Any = None,
             ctype: str = "application/json", raw: bool = False,
             kubeconfig: Path | None = None) -> tuple[int, Any]:
        """One HTTP request as admin (or as the user of `kubeconfig`, one this class wrote):
        (status, the JSON body; `raw`: the text)."""
        ctx = self.ssl_context() if kubeconfig is None else self._context_for(kubeconfig)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = ctype
        token = self._token_for(kubeconfig) if kubeconfig is not None else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:  # noqa: S310
                text = resp.read().decode()
                return resp.status, (text if raw else json.loads(text or "{}"))
        except urllib.error.HTTPError as e:
            text = e.read().decode()
            if raw:
                return e.code, text
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, {"message": text}

    @staticmethod
    def _user_of(kubeconfig: Path) -> dict[str, Any]:
        import yaml
        config = yaml.safe_load(kubeconfig.read_text())
        return config["users"][0]["user"]  # type: ignore[no-any-return]

    def _context_for(self, kubeconfig: Path) -> ssl.SSLContext:
        user = self._user_of(kubeconfig)
        ctx = ssl.create_default_context(cafile=str(self.workdir / "pki" / "ca.crt"))
        if "client-certificate" in user:
            ctx.load_cert_chain(user["client-certificate"], user["client-key"])
        return ctx

    def _token_for(self, kubeconfig: Path) -> str | None:
        token = self._user_of(kubeconfig).get("token")
        return str(token) if token else None

    def client(self, kubeconfig: Path | None = None) -> Any:
        """A lightkube Client (admin, or from `kubeconfig`)."""
        from lightkube import Client, KubeConfig
        return Client(KubeConfig.from_file(str(kubeconfig or self.kubeconfig)))

    def _write_kubeconfig(self, path: Path, user: dict[str, Any],
                          server: str | None = None) -> Path:
        import yaml
        _write(path, yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {
                "server": server or self.url,
                "certificate-authority": str(self.workdir / "pki" / "ca.crt")}}],
            "users": [{"name": "test", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        }))
        return path

    def user_kubeconfig(self, user: str, groups: tuple[str, ...] = (),
                        path: Path | None = None, server: str | None = None) -> Path:
        """A kubeconfig authenticating as `user` in `groups` with a client certificate (the
        certificate and key sit next to it); `server` (default `url`), e.g. `internal_url`."""
        if path is None:
            users = self.workdir / "users"
            users.mkdir(exist_ok=True)
            path = users / f"{secrets.token_hex(4)}.kubeconfig"
        cert, key = self.ca.issue(user, groups)
        stem = path.with_suffix("")
        crt_path = _write(stem.with_suffix(".crt"), cert, 0o644)
        key_path = _write(stem.with_suffix(".key"), key)
        return self._write_kubeconfig(path, {"client-certificate": str(crt_path),
                                             "client-key": str(key_path)}, server)

    def service_account_kubeconfig(self, namespace: str, name: str,
                                   path: Path | None = None) -> Path:
        """A kubeconfig with a real token of ServiceAccount `namespace/name` (TokenRequest,
        one hour; the account is created when missing): the server sees the same user, groups
        and `extra` as for a pod's projected token."""
        self.call("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                  {"metadata": {"name": name}})
        code, answer = self.call(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": 3600}})
        if code != 201:
            raise ControlPlaneError(f"token for {namespace}/{name}: {code} {answer}")
        if path is None:
            users = self.workdir / "users"
            users.mkdir(exist_ok=True)
            path = users / f"sa-{namespace}-{name}-{secrets.token_hex(3)}.kubeconfig"
        return self._write_kubeconfig(path, {"token": answer["status"]["token"]})

    # -- objects

    def create_namespace(self, prefix: str = "test", wait_for_account: bool = False) -> str:
        """A new namespace `<prefix>-<random>`; with `wait_for_account`, returns once its
        `default` ServiceAccount exists (as pods in it need with real admission)."""
        name = f"{prefix[:40].rstrip('-').lower()}-{secrets.token_hex(3)}"
        code, answer = self.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        if code != 201:
            raise ControlPlaneError(f"namespace {name}: {code} {answer.get('message')}")
        if wait_for_account:
            self._wait(f"namespace {name} default service account", lambda: self.call(
                "GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")[0] == 200, 30)
        return name

    def delete_namespace(self, name: str) -> None:
        """Ask for the namespace's deletion (the namespace controller finishes it later)."""
        self.call("DELETE", f"/api/v1/namespaces/{name}")

    def set_pod_ready(self, namespace: str, name: str, ready: bool = True) -> dict[str, Any]:
        """Set a pod's status to Running and Ready (what a kubelet would report)."""
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        flag = "True" if ready else "False"
        code, answer = self.call(
            "PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status",
            {"status": {"phase": "Running", "startTime": now, "conditions": [
                {"type": "Ready", "status": flag, "lastTransitionTime": now},
                {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}]}},
            "application/merge-patch+json")
        if code != 200:
            raise ControlPlaneError(f"pod {namespace}/{name} status: {code} {answer}")
        return answer  # type: ignore[no-any-return]

    def wait_for(self, what: str, ready: Any, timeout: float = 30.0) -> None:
        """Poll `ready()` every 0.1 s until true (one-line ControlPlaneError on timeout)."""
        self._wait(what, ready, timeout)


@contextlib.contextmanager
def running(workdir: Path | None = None, scheduler: bool = False) -> Iterator[ControlPlane]:
    cp = ControlPlane.start(workdir, scheduler)
    try:
        yield cp
    finally:
        cp.stop()
