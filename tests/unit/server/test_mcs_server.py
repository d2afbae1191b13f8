"""The real server: `mcs bootstrap` as a subprocess on 127.0.0.1 with a throwaway CA, fetched with
urllib, aiohttp and curl over TLS: versions, tokens via the pointer config, TLS 1.1 refused, the
certificate reloaded without a restart, slow and oversized requests, many concurrent connections.
"""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.unit.server.test_mcs_layout import KUBECONFIG, write_layout
from tests.support.slowclient import trickle_until_closed

IGN = "application/vnd.coreos.ignition+json"
TOKEN = "worker-token-5d1f0c2a9b"
ROOT = Path(__file__).resolve().parents[3]


# -- a throwaway CA ----------------------------------------------------------------------------------

@dataclass
class CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca() -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("mcs test CA")).issuer_name(_name("mcs test CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return CA(key, cert)


def issue(ca: CA, cn: str) -> tuple[bytes, bytes, int]:
    """A server certificate for 127.0.0.1/localhost: (cert PEM, key PEM, serial)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    serial = x509.random_serial_number()
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.cert.subject)
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca.key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, serial


def replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    tmp.replace(path)


def open_url(req: urllib.request.Request | str, ctx: ssl.SSLContext | None = None) -> Any:
    """urlopen without any proxy from the environment: everything here is loopback."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if ctx is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    return urllib.request.build_opener(*handlers).open(req, timeout=10)


# -- the server process ------------------------------------------------------------------------------

@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    https: str
    http: str
    log: Path
    ca: CA
    ca_file: Path
    cert: Path
    key: Path
    base: Path

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca.pem().decode())
        return ctx

    def get(self, path: str, headers: dict[str, str] | None = None, https: bool = True) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request((self.https if https else self.http) + path, headers=headers or {})
        try:
            with open_url(req, self.client_context() if https else None) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()


def write_tls(root: Path, cn: str) -> tuple[CA, Path, Path, Path]:
    """A new CA and a server certificate `cn` it issued: (ca, root/tls.crt, root/tls.key, root/ca.crt)."""
    ca = make_ca()
    cert_pem, key_pem, _ = issue(ca, cn)
    cert, key, ca_file = root / "tls.crt", root / "tls.key", root / "ca.crt"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    ca_file.write_bytes(ca.pem())
    return ca, cert, key, ca_file


def start_server(tmp_path: Path, *extra: str) -> Server:
    base, kubeconfig = write_layout(tmp_path)
    ca, cert, key, ca_file = write_tls(tmp_path, "mcs-1")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"worker {TOKEN}\nmaster {TOKEN}\n")
    log = tmp_path / "server.log"
    cmd = [sys.executable, "-m", "mcs.cli", "bootstrap", "--server-basedir", str(base),
           "--bootstrap-kubeconfig", str(kubeconfig), "--cert", str(cert), "--key", str(key),
           "--secure-port", "0", "--insecure-port", "0", "--bind-address", "127.0.0.1",
           "--token-file", str(tokens), *extra]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 30
    urls: dict[str, str] = {}
    while time.monotonic() < deadline and len(urls) < 2:
        if proc.poll() is not None:
            raise AssertionError("server exited:\n" + log.read_text())
        for scheme, url in re.findall(r"listening on ((https?)://[0-9.]+:[0-9]+)", log.read_text()):
            urls[url] = scheme
        time.sleep(0.05)
    assert len(urls) == 2, log.read_text()
    return Server(proc, urls.get("https", ""), urls.get("http", ""), log, ca, ca_file, cert, key, base)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("mcs"), "--header-timeout", "1", "--response-timeout", "5")
    yield srv
    srv.proc.send_signal(signal.SIGTERM)
    try:
        srv.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        srv.proc.kill()
        raise
    # Nothing secret in any log line: neither tokens nor the served kubeconfig's credentials.
    text = srv.log.read_text()
    assert TOKEN not in text and "s3cr3t-bootstrap-token" not in text and "PRIVATE KEY" not in text


AUTH = {"Authorization": f"Bearer {TOKEN}"}


# -- tests ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["2.2.0", "3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0", "3.6.0"])
def test_https_every_version(server: Server, version: str) -> None:
    status, headers, body = server.get("/config/worker", {**AUTH, "Accept": f"{IGN};version={version}"})
    assert status == 200, body
    assert json.loads(body)["ignition"]["version"] == version
    assert headers["Content-Type"] == "application/json"


def test_ignition_like_client_gets_gzip_and_304(server: Server) -> None:
    headers = {**AUTH, "Accept": f"{IGN};version=3.5.0, */*;q=0.1", "Accept-Encoding": "gzip"}
    status, got, body = server.get("/config/worker", headers)
    assert status == 200 and got["Content-Encoding"] == "gzip"
    import gzip as gz

    assert json.loads(gz.decompress(body))["ignition"]["version"] == "3.5.0"
    status, _, body = server.get("/config/worker", {**headers, "If-None-Match": got["ETag"]})
    assert status == 304 and body == b""


def test_plain_http_listener_serves_the_same(server: Server) -> None:
    a = server.get("/config/worker", {**AUTH, "Accept-Encoding": "identity"})
    b = server.get("/config/worker", {**AUTH, "Accept-Encoding": "identity"}, https=False)
    assert a[0] == b[0] == 200 and a[2] == b[2]


def test_errors(server: Server) -> None:
    for path, headers, expected in [
        ("/config/worker", {}, 401),
        ("/config/master", {"Authorization": "Bearer nope"}, 401),
        ("/config/x/../../etc", AUTH, 404),
        ("/config/Worker", AUTH, 404),
        ("/config/worker", {**AUTH, "Accept": f"{IGN};version=4.0.0"}, 400),
        ("/nothing", {}, 404),
    ]:
        status, _, body = server.get(path, headers)
        assert status == expected, (path, status, body)
        assert body.endswith(b"\n") and body.count(b"\n") == 1
    req = urllib.request.Request(server.https + "/config/worker", method="POST", data=b"x", headers=AUTH)
    with pytest.raises(urllib.error.HTTPError) as e:
        open_url(req, server.client_context())
    assert e.value.code == 405


def test_pointer_config_carries_ca_and_token(server: Server) -> None:
    url = server.https + "/config/worker"
    out = subprocess.run([sys.executable, "-m", "mcs.cli", "pointer", "--url", url, "--ca", str(server.ca_file),
                          "--token", TOKEN], capture_output=True, check=True, cwd=ROOT).stdout
    pointer = json.loads(out)
    assert pointer["ignition"]["version"] == "3.5.0"
    merge = pointer["ignition"]["config"]["merge"][0]
    assert merge["source"] == url
    from machineconfig.ignition.dataurl import decode

    ca_pem = decode(pointer["ignition"]["security"]["tls"]["certificateAuthorities"][0]["source"])
    assert ca_pem == server.ca.pem()
    # Fetch the way Ignition would: trust only the CA from the pointer, send its headers.
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    headers = {h["name"]: h["value"] for h in merge["httpHeaders"]}
    headers["Accept"] = f"{IGN};version=3.5.0, */*;q=0.1"
    with open_url(urllib.request.Request(url, headers=headers), ctx) as r:
        assert r.status == 200


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl(server: Server) -> None:
    def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["curl", "-sS", "--noproxy", "*", "--cacert", str(server.ca_file), "--max-time", "10", *args],
                              capture_output=True, timeout=30)

    ok = curl("-H", f"Authorization: Bearer {TOKEN}", "-H", f"Accept: {IGN};version=3.2.0",
              "-w", "\\n%{http_code}", server.https + "/config/worker")
    body, code = ok.stdout.rsplit(b"\n", 1)
    assert code == b"200" and json.loads(body)["ignition"]["version"] == "3.2.0"
    # Plain curl (no Accept): spec 2.2, as MCO.
    plain = curl("-H", f"Authorization: Bearer {TOKEN}", server.https + "/config/master")
    assert json.loads(plain.stdout)["ignition"]["version"] == "2.2.0"
    compressed = curl("--compressed", "-H", f"Authorization: Bearer {TOKEN}", server.https + "/config/worker")
    assert json.loads(compressed.stdout)["ignition"]["version"] == "2.2.0"
    head = curl("-I", "-H", f"Authorization: Bearer {TOKEN}", server.https + "/config/worker")
    assert b"200" in head.stdout.splitlines()[0] and b"content-length:" in head.stdout.lower()
    denied = curl("-w", "%{http_code}", "-o", "/dev/null", server.https + "/config/worker")
    assert denied.stdout == b"401"
    tls11 = curl("--tlsv1.1", "--tls-max", "1.1", "-o", "/dev/null", server.https + "/healthz")
    assert tls11.returncode != 0


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_11_refused(server: Server) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=server.ca.pem().decode())
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this OpenSSL actually offer TLS 1.1
    ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    host, port = server.https.removeprefix("https://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
                tls.do_handshake()
    # TLS 1.2 is accepted.
    ctx12 = server.client_context()
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with ctx12.wrap_socket(sock, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.2"


def _peer_serial(server: Server) -> int:
    host, port = server.https.removeprefix("https://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with server.client_context().wrap_socket(sock, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_cert_reloaded_without_restart(server: Server) -> None:
    before = _peer_serial(server)
    cert_pem, key_pem, serial = issue(server.ca, "mcs-2")
    assert serial != before
    # Replace the key first: for a moment the pair mismatches, which must not break serving.
    replace(server.key, key_pem)
    assert server.get("/healthz")[0] == 200
    replace(server.cert, cert_pem)
    for _ in range(100):  # the server polls about once a second
        if _peer_serial(server) == serial:
            break
        time.sleep(0.1)
    assert _peer_serial(server) == serial
    assert server.proc.poll() is None
    assert server.get("/config/worker", AUTH)[0] == 200


def _raw(server: Server) -> tuple[str, int]:
    host, port = server.http.removeprefix("http://").split(":")
    return host, int(port)


def test_one_byte_a_second_client_is_dropped(server: Server) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n"
    with socket.create_connection(_raw(server), timeout=10) as sock:
        closed = trickle_until_closed(sock, request)
        assert closed, "a client trickling its request head was never disconnected"
    assert server.get("/healthz")[0] == 200


def test_idle_connection_is_dropped(server: Server) -> None:
    with socket.create_connection(_raw(server), timeout=15) as sock:
        try:
            assert sock.recv(1024) == b""
        except ConnectionResetError:
            pass


def test_oversized_headers(server: Server) -> None:
    for request in (b"GET /config/worker HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",
                    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n"):
        with socket.create_connection(_raw(server), timeout=10) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        assert status in (400, 413, 414, 431), head
        assert body.endswith(b"\n") and body.count(b"\n") == 1, body
    assert server.get("/healthz")[0] == 200


def stop(srv: Server) -> None:
    srv.proc.send_signal(signal.SIGTERM)
    try:
        assert srv.proc.wait(timeout=15) == 0, srv.log.read_text()
    except subprocess.TimeoutExpired:
        srv.proc.kill()
        raise


def test_many_concurrent_connections(tmp_path: Path) -> None:
    # Default timeouts here: the shared server's 1-second head deadline is for the slow-client tests.
    server = start_server(tmp_path)
    try:
        _many_concurrent(server)
    finally:
        stop(server)
    assert "Traceback" not in server.log.read_text()


def _many_concurrent(server: Server) -> None:
    async def main() -> list[int]:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        ctx = server.client_context()
        async with aiohttp.ClientSession(connector=connector) as session:
            async def one(i: int) -> int:
                url = (server.https if i % 4 == 0 else server.http) + "/config/worker"
                async with session.get(url, headers={**AUTH, "Accept": f"{IGN};version=3.5.0"},
                                       ssl=ctx if i % 4 == 0 else None) as r:
                    await r.read()
                    return r.status

            return await asyncio.gather(*(one(i) for i in range(1000)))

    statuses = asyncio.run(main())
    assert statuses.count(200) == 1000
    assert server.get("/healthz")[0] == 200


def test_metrics_endpoint(server: Server) -> None:
    status, headers, body = server.get("/metrics")
    assert status == 200
    assert b'mcs_config_requests_total{code="200",pool="worker"' in body


def test_workers_share_the_ports(tmp_path: Path) -> None:
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    base, kubeconfig = write_layout(tmp_path)
    log = tmp_path / "log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mcs.cli", "bootstrap", "--server-basedir", str(base),
                                 "--bootstrap-kubeconfig", str(kubeconfig), "--insecure-port", str(ports[1]),
                                 "--bind-address", "127.0.0.1", "--workers", "2"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while log.read_text().count("listening on") < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        for _ in range(20):
            with open_url(f"http://127.0.0.1:{ports[1]}/config/worker") as r:
                assert r.status == 200 and json.loads(r.read())["ignition"]["version"] == "2.2.0"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()


def test_kubeconfig_must_exist(tmp_path: Path) -> None:
    base, _ = write_layout(tmp_path)
    res = subprocess.run([sys.executable, "-m", "mcs.cli", "bootstrap", "--server-basedir", str(base),
                          "--bootstrap-kubeconfig", str(tmp_path / "missing")], capture_output=True, cwd=ROOT,
                         timeout=30)
    assert res.returncode == 2 and b"kubeconfig not found" in res.stderr


def test_served_kubeconfig_is_the_file(server: Server) -> None:
    from machineconfig.ignition.dataurl import decode

    _, _, body = server.get("/config/worker", {**AUTH, "Accept": f"{IGN};version=3.5.0"})
    files = {f["path"]: f for f in json.loads(body)["storage"]["files"]}
    assert decode(files["/etc/kubernetes/kubeconfig"]["contents"]["source"]) == KUBECONFIG


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_every_accept_header_of_the_table(server: Server) -> None:
    from tests.unit.server.test_mcs_negotiate import ERR, TABLE

    for header, _mco, ours in TABLE:
        accept = ["-H", "Accept:"] if header is None else ["-H", f"Accept: {header}"]
        res = subprocess.run(["curl", "-sS", "--noproxy", "*", "--cacert", str(server.ca_file), "--max-time", "10",
                              "-H", f"Authorization: Bearer {TOKEN}", *accept, "-w", "\n%{http_code}",
                              server.https + "/config/worker"], capture_output=True, timeout=30)
        body, code = res.stdout.rsplit(b"\n", 1)
        if ours == ERR:
            assert code == b"400", (header, code)
            assert body.count(b"\n") == 1
        else:
            assert code == b"200", (header, code, body[:200])
            assert json.loads(body)["ignition"]["version"] == ours, header
