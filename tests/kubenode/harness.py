"""Kubernetes nodes for the tests: a real control plane in a network namespace of the test's own
and systemd-nspawn nodes running the real kubelet and CRI-O from the units and files the
project's templates render, served by `mcs` on the kube store and written by `mcd firstboot`.

API (stable; other branches build on it):

    cluster = KubeCluster(workdir)             # nothing runs yet
    cluster.start()                            # netns + bridge, etcd/kube-apiserver/KCM/scheduler
                                               #   on 10.213.0.1, CRDs, manifests' RBAC and
                                               #   admission policy, inputs, mcc + mcs (kube store)
    cluster.cp                                 # the ControlPlane (tests/kube/controlplane.py):
                                               #   cp.call(...), cp.client(), cp.kubeconfig (admin,
                                               #   host side through a loopback forwarder)
    cluster.kubeconfig                         # admin kubeconfig for kubectl on the host
    cluster.internal_kubeconfig(user, groups)  # one for use inside the netns (nodes, mcc, mcs)
    nodes = cluster.add_nodes(["kn-worker-1", "kn-worker-2"], pool="worker")
                                               # boot with only the pool's pointer config, join
                                               #   via mcd firstboot, reboot into kubelet+CRI-O
    cluster.wait_node_ready(name)              # Node Ready in the API (returns seconds waited)
    cluster.wait_joined(names)                 # Ready + mcd running with its own credentials
    node.run(["crictl", ...])                  # a command in every namespace of the node
    node.ssh("systemctl is-active kubelet")    # ssh (ProxyCommand: sshd -i inside the node)
    node.testinfra()                           # a testinfra host for tests/hosts checks
    cluster.reboot(node)                       # `systemctl reboot` inside; the supervisor boots
                                               #   it again (nspawn exit 133), as mcd reboots do
    cluster.load_image(node, layout, "localhost/x:tag")  # an OCI layout into CRI-O's storage
    cluster.supervisor.reboots_of(name)        # reboots seen (tests/e2e/nodes.RebootSupervisor)
    cluster.close()                            # nodes, mcc/mcs, control plane, netns, cgroups

Or as a context manager: `with KubeCluster(workdir) as cluster: ...`. The pytest fixtures are in
conftest.py (`kube_cluster`, `kube_nodes`); `scripts/nodes --kube N` runs the same for a user.

Nodes: an overlay of the cached Kubernetes rootfs (rootfs.py) with plain host directories bound
at /var/lib/containers and /var/lib/kubelet, /dev/kmsg bound, /proc/sys read-only with the two
values kubelet's protectKernelDefaults wants bound over it, /proc/sys/net writable, each node its
own network namespace on the cluster bridge (10.213.0.1N/24), its own cgroup subtree in every
hierarchy (made writable inside by a boot unit), its own pod subnet (10.88.N.0/24, CNI bridge
plugin). kubelet authenticates with a client certificate for system:node:<name> (Node
authorizer, NodeRestriction); its serving certificate is requested by CSR, approved here as
OpenShift's machine approver does and signed by kube-controller-manager. `mcd start --store kube`
runs as the served machine-config-daemon.service with a node-local drop-in that points it at a
kubeconfig holding a service-account token bound to its own Node (the manifests' RBAC and
ValidatingAdmissionPolicy limit it to that Node).
"""
from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.e2e.nodes import RebootSupervisor, prepare_pointer_node
from tests.kube.controlplane import ControlPlane, ControlPlaneError
from tests.kubenode.network import BRIDGE, GATEWAY, PREFIX, ClusterNetwork, node_address
from tests.kubenode.rootfs import ensure_kube_rootfs
from tests.support.leaks import owned_by_fixture
from tests.node.harness import Node
from tests.node.rootfs import SITE_PACKAGES_BIND, HarnessError, host_site_packages, \
    install_project, run

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
VALUES = Path(__file__).with_name("values.yaml")
MCO_NAMESPACE = "openshift-machine-config-operator"
MCS_PORT, MCS_INSECURE_PORT = 22623, 22624
MANIFESTS = ("crds", "namespace.yaml", "serviceaccounts.yaml", "rbac", "admission")
# kubelet's protectKernelDefaults wants these; the host's differ (and must not change)
KERNEL_DEFAULTS = {"vm/overcommit_memory": "1", "kernel/panic": "10",
                   "kernel/panic_on_oops": "1", "vm/panic_on_oom": "0"}
CGROUP_ROOT = Path("/sys/fs/cgroup")
DAEMON_DROPIN = "/etc/systemd/system/machine-config-daemon.service.d/50-kube-store.conf"
DAEMON_KUBECONFIG = "/etc/machine-config-daemon/kubeconfig"
MCD = "/usr/local/bin/mcd"


def _pdeathsig() -> None:  # pragma: no cover - runs in the child
    import ctypes
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def kubeconfig_text(server: str, ca_pem: bytes, user: dict[str, str]) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {
            "server": server,
            "certificate-authority-data": base64.b64encode(ca_pem).decode()}}],
        "users": [{"name": "test", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]})


# ---- cgroups ----------------------------------------------------------------------------------

def _own_cgroups() -> dict[Path, str]:
    """Each cgroup hierarchy mounted under /sys/fs/cgroup -> this process's path in it."""
    out = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        num, controllers, path = line.split(":", 2)
        if num == "0":
            mountpoint = CGROUP_ROOT / "unified"
            if not (mountpoint / "cgroup.procs").exists():
                mountpoint = CGROUP_ROOT
        else:
            mountpoint = CGROUP_ROOT / controllers.replace("name=", "")
        if (mountpoint / "cgroup.procs").exists():
            out[mountpoint] = path
    return out


def make_cgroups(name: str) -> list[Path]:
    """A fresh cgroup `name` below this process's own in every hierarchy (cpuset filled)."""
    made = []
    for mountpoint, path in _own_cgroups().items():
        directory = mountpoint / path.lstrip("/") / name
        directory.mkdir(parents=True, exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (directory / knob).exists() and not (directory / knob).read_text().strip():
                (directory / knob).write_text((directory.parent / knob).read_text())
        made.append(directory)
    return made


def remove_cgroups(directories: Iterable[Path], timeout: float = 30) -> None:
    """Depth first, retried: cgroups stay busy for a moment after their processes exit."""
    deadline = time.monotonic() + timeout
    for top in directories:
        while top.exists():
            for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)
            if not top.exists() or time.monotonic() > deadline:
                break
            for procs in top.rglob("cgroup.procs"):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.2)


def reap_stale_cgroups() -> None:
    """Remove the node cgroups of test processes that are gone (a run killed before cleanup)."""
    stale = []
    for mountpoint, path in _own_cgroups().items():
        parent = mountpoint / path.lstrip("/")
        for directory in parent.glob("mc-kubenode-*"):
            owner = directory.name.rsplit("-", 1)[-1]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists():
                stale.append(directory)
    remove_cgroups(stale, timeout=10)


# ---- nodes ------------------------------------------------------------------------------------

@dataclass
class KubeNode(Node):
    """A node running kubelet and CRI-O in its own network namespace on the cluster bridge."""

    index: int = 1
    network: ClusterNetwork | None = None
    cgroups: list[Path] = field(default_factory=list)
    created_at: float = 0.0  # monotonic time of its first boot
    daemon_invocation: str = ""  # the daemon service's run before its credentials were installed

    @property
    def address(self) -> str:
        return node_address(self.index)

    @property
    def pod_subnet(self) -> str:
        return f"10.88.{self.index}.0/24"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    def create(self) -> None:
        for sub in ("upper", "work", "merged", "state/containers", "state/kubelet"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={self.base},upperdir={self.workdir / 'upper'},"
             f"workdir={self.workdir / 'work'}", str(self.root)])
        (self.workdir / "mounted").touch()
        root = self.root
        for key, value in KERNEL_DEFAULTS.items():
            self.put(f"/etc/machine-config-tests/sysctl/{key.replace('/', '.')}", value + "\n")
        self.put("/etc/hostname", self.name + "\n")
        self.put("/etc/machine-id", self.machine_id + "\n")
        self.put("/etc/hosts", f"127.0.0.1 localhost\n{self.address} {self.name}\n")
        # sshd runs per connection (`sshd -i` from the ProxyCommand), outside any login
        # session: with PAM each login waits 40 s for logind
        self.put("/etc/ssh/sshd_config.d/test-node.conf",
                 "PermitRootLogin prohibit-password\nUseDNS no\nUsePAM no\n")
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(Path(f"{self.ssh_key}.pub").read_text())
        install_project(root)
        self.put("/etc/machine-config-tests/network.env",
                 f"ADDRESS={self.address}/{PREFIX}\nGATEWAY={GATEWAY}\n")
        # what a network plugin and the platform's node-IP detection would provide
        self.put("/etc/kubernetes/kubelet-env", f"KUBELET_NODE_IP={self.address}\n")
        self.put("/etc/kubernetes/cni/net.d/10-machine-config-tests.conflist", (
            '{"cniVersion": "1.0.0", "name": "pods", "plugins": [{"type": "bridge", '
            '"bridge": "cni0", "isGateway": true, "ipMasq": false, "ipam": {"type": '
            f'"host-local", "ranges": [[{{"subnet": "{self.pod_subnet}"}}]], "routes": '
            '[{"dst": "0.0.0.0/0"}]}}]}\n'))
        proxy = self.workdir / "ssh-proxy"
        proxy.write_text(
            "#!/bin/sh\n# sshd in inetd mode inside the node (its network is not the host's)\n"
            f"pid=$(cat {self.workdir}/nspawn.pid)\n"
            "leader=$(cut -d' ' -f1 /proc/$pid/task/$pid/children)\n"
            "exec nsenter -t \"$leader\" -a /usr/sbin/sshd -i\n")
        proxy.chmod(0o755)
        self.ssh_config.write_text(
            f"Host {self.name}\n  HostName {self.address}\n  User root\n"
            f"  ProxyCommand {proxy}\n"
            f"  IdentityFile {self.ssh_key}\n  StrictHostKeyChecking no\n"
            "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n")

    def put(self, node_path: str, data: str, mode: int = 0o644) -> None:
        target = self.root / node_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data)
        target.chmod(mode)

    def boot(self) -> None:
        """nspawn inside the cluster namespace, in the node's own cgroups."""
        assert self.network is not None
        if not self.cgroups:
            self.cgroups = make_cgroups(f"mc-kubenode-{self.name}-{os.getpid()}")
        procs_files = [c / "cgroup.procs" for c in self.cgroups]

        def enter() -> None:  # pragma: no cover - runs in the child
            _pdeathsig()
            for procs in procs_files:
                with open(procs, "w") as f:
                    f.write("0")

        binds = [f"--bind={self.state_dir / 'containers'}:/var/lib/containers",
                 f"--bind={self.state_dir / 'kubelet'}:/var/lib/kubelet",
                 "--bind=/dev/kmsg",
                 f"--bind-ro={host_site_packages()}:{SITE_PACKAGES_BIND}"]
        # --console=read-only forwards the console to console.log; a passive console's pty is
        # read by nobody, and once ~10 KB of status lines fill it PID 1 blocks in a console
        # write: the node hung in its shutdown after a drain (many units stopping)
        cmd = self.network.command([
            "systemd-nspawn", "--boot", "--keep-unit", "--register=no", "--quiet",
            "--capability=all", "--system-call-filter=@known",
            f"--directory={self.root}", f"--machine={self.name}", f"--uuid={self.machine_id}",
            "--console=read-only", f"--network-bridge={BRIDGE}", *binds])
        env = dict(os.environ, SYSTEMD_NSPAWN_API_VFS_WRITABLE="network")
        console = open(self.console_log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=console, stderr=subprocess.STDOUT,  # noqa: S603
                                     stdin=subprocess.DEVNULL, env=env, preexec_fn=enter,
                                     start_new_session=True)
        console.close()
        owned_by_fixture(self.proc.pid)
        (self.workdir / "nspawn.pid").write_text(str(self.proc.pid))
        self.boots += 1
        log.info("node %s: boot %d (nspawn pid %d)", self.name, self.boots, self.proc.pid)

    def run(self, cmd: Sequence[str], *, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """A command in every namespace of the node."""
        return self.nsenter(cmd, check=check, timeout=timeout, input=input)

    def wait_booted(self, timeout: float = 120) -> None:
        """Until the node's systemd finished booting (running or degraded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise HarnessError(f"node {self.name}: nspawn exited during boot:\n"
                                   f"{self.console_tail()}")
            with contextlib.suppress(HarnessError, subprocess.TimeoutExpired):
                state = self.nsenter(["systemctl", "is-system-running", "--wait"], check=False,
                                     timeout=max(1, deadline - time.monotonic()))
                if state.stdout.strip() in ("running", "degraded"):
                    return
            time.sleep(0.2)
        raise HarnessError(f"node {self.name} not booted after {timeout}s:\n"
                           f"{self.console_tail()}")

    def remove(self) -> None:
        self.stop()
        if (self.workdir / "mounted").exists():
            # nspawn's own mounts are gone with it; the overlay is ours
            if run(["umount", str(self.root)], check=False).returncode != 0:
                run(["umount", "--lazy", str(self.root)], check=False)
        remove_cgroups(self.cgroups)
        shutil.rmtree(self.workdir, ignore_errors=True)


# ---- the cluster ------------------------------------------------------------------------------

@dataclass
class KubeCluster:
    workdir: Path
    values: Path = VALUES
    cp: ControlPlane | None = None
    network: ClusterNetwork | None = None
    nodes: list[KubeNode] = field(default_factory=list)
    supervisor: RebootSupervisor = field(default_factory=lambda: RebootSupervisor([]))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    base: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _approver: threading.Thread | None = None

    def __enter__(self) -> KubeCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- control plane and programs --

    @property
    def kubeconfig(self) -> Path:
        assert self.cp is not None
        return self.cp.kubeconfig

    @property
    def ca_pem(self) -> bytes:
        assert self.cp is not None
        return (self.cp.workdir / "pki" / "ca.crt").read_bytes()

    def start(self) -> None:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.base = ensure_kube_rootfs()
        self.timings["rootfs"] = time.monotonic() - started
        self.network = ClusterNetwork.create()
        try:
            self.cp = ControlPlane.start(self.workdir / "controlplane", scheduler=True,
                                         netns=self.network.path, address=GATEWAY)
            self.timings["control plane"] = time.monotonic() - started
            self._apply_manifests()
            self._apply_inputs()
            self._start_programs()
            self._approver = threading.Thread(target=self._approve_serving_csrs,
                                              name="kubenode-csr-approver", daemon=True)
            self._approver.start()
            self.supervisor.start()
            self.wait_serving()
            self.timings["cluster"] = time.monotonic() - started
        except BaseException:
            self.close()
            raise

    def kubectl(self, *args: str, input: str | None = None, check: bool = True
                ) -> subprocess.CompletedProcess[str]:
        return run(["kubectl", f"--kubeconfig={self.kubeconfig}", *args], input=input,
                   check=check, timeout=120)

    def _apply_manifests(self) -> None:
        files = []
        for entry in MANIFESTS:
            files += ["-f", str(REPO_ROOT / "manifests" / entry)]
        self.kubectl("apply", "--server-side", *files)
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                     "crd", "--all")

    def _apply_inputs(self) -> None:
        """The examples' ControllerConfig (this cluster's CA, the local pause image), the two
        built-in pools (worker maxUnavailable 1) and the pull secret."""
        examples = REPO_ROOT / "examples/cluster"
        cc = yaml.safe_load((examples / "controllerconfig.yaml").read_text())
        ca64 = base64.b64encode(self.ca_pem).decode()
        cc["spec"]["kubeAPIServerServingCAData"] = ca64
        cc["spec"]["rootCAData"] = ca64
        cc["spec"]["clusterDNSIP"] = "10.0.0.10"
        cc["spec"]["images"]["infraImageKey"] = "localhost/pause:3.10"
        pools = list(yaml.safe_load_all((examples / "pools.yaml").read_text()))
        for pool in pools:
            if pool["metadata"]["name"] == "worker":
                pool["spec"]["maxUnavailable"] = 1
        self.kubectl("create", "namespace", "openshift-config", check=False)
        docs = [cc, *pools, yaml.safe_load((examples / "pull-secret.yaml").read_text())]
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))

    def internal_kubeconfig(self, path: Path, user: str = "", groups: tuple[str, ...] = (),
                            token: str = "") -> Path:
        """A kubeconfig for use inside the namespace: a client certificate for `user` in
        `groups`, or a bearer `token`; everything inline (it can be copied into a node)."""
        assert self.cp is not None
        if token:
            creds = {"token": token}
        else:
            cert, key = self.cp.ca.issue(user, groups)
            creds = {"client-certificate-data": base64.b64encode(cert).decode(),
                     "client-key-data": base64.b64encode(key).decode()}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(kubeconfig_text(self.cp.internal_url, self.ca_pem, creds))
        path.chmod(0o600)
        return path

    def service_account_token(self, name: str, bound_node: str = "",
                              seconds: int = 86400) -> str:
        """A TokenRequest token of openshift-machine-config-operator/`name` (bound to a Node)."""
        assert self.cp is not None
        spec: dict[str, Any] = {"expirationSeconds": seconds}
        if bound_node:
            code, node = self.cp.call("GET", f"/api/v1/nodes/{bound_node}")
            if code != 200:
                raise HarnessError(f"node {bound_node}: {code} {node.get('message')}")
            spec["boundObjectRef"] = {"apiVersion": "v1", "kind": "Node", "name": bound_node,
                                      "uid": node["metadata"]["uid"]}
        code, answer = self.cp.call(
            "POST", f"/api/v1/namespaces/{MCO_NAMESPACE}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        if code != 201:
            raise HarnessError(f"token for {name}: {code} {answer.get('message')}")
        return str(answer["status"]["token"])

    def _start_programs(self) -> None:
        """mcc and mcs on the kube store, inside the namespace, with their own accounts."""
        assert self.cp is not None and self.network is not None
        work = self.workdir / "programs"
        work.mkdir(exist_ok=True)
        mcc_kc = self.internal_kubeconfig(
            work / "mcc.kubeconfig", token=self.service_account_token("machine-config-controller"))
        mcs_kc = self.internal_kubeconfig(
            work / "mcs.kubeconfig", token=self.service_account_token("machine-config-server"))
        cert, key = self.cp.ca.issue(GATEWAY, dns=("machine-config-server",), ips=(GATEWAY,),
                                     server=True)
        (work / "mcs.crt").write_bytes(cert)
        (work / "mcs.key").write_bytes(key)
        (work / "mcs.key").chmod(0o600)
        (work / "ca.crt").write_bytes(self.ca_pem)
        python = [sys.executable, "-c"]
        self._spawn("mcc", self.network.command([
            *python, "import sys; from mcc.cli import main; sys.exit(main())",
            "-v", "start", "--store", f"kube:{mcc_kc}", "--values", str(self.values)]))
        self._spawn("mcs", self.network.command([
            *python, "import sys; from mcs.cli import main; sys.exit(main())",
            "start", "--store", f"kube:{mcs_kc}", "--cert", str(work / "mcs.crt"),
            "--key", str(work / "mcs.key"), "--secure-port", str(MCS_PORT),
            "--insecure-port", str(MCS_INSECURE_PORT), "--bind-address", GATEWAY]))

    def _spawn(self, name: str, cmd: list[str]) -> None:
        out = open(self.workdir / f"{name}.log", "ab")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        self.procs[name] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,  # noqa: S603
                                            stdin=subprocess.DEVNULL, cwd=REPO_ROOT, env=env,
                                            start_new_session=True, preexec_fn=_pdeathsig)
        out.close()
        owned_by_fixture(self.procs[name].pid)

    def log_tail(self, name: str, lines: int = 40) -> str:
        try:
            text = (self.workdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise HarnessError(f"{name} exited {proc.returncode}:\n{self.log_tail(name)}")
        assert not self.supervisor.failures, "\n".join(self.supervisor.failures)

    def wait_for(self, what: str, check: Any, timeout: float, describe: Any = None) -> Any:
        """Poll `check()` until truthy (processes checked each time); one-line failure."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            with contextlib.suppress(OSError, ValueError, KeyError, ControlPlaneError):
                value = check()
                if value:
                    return value
            if time.monotonic() > deadline:
                raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}"
                                   + (f"\n{describe()}" if describe else ""))
            time.sleep(0.25)

    def wait_serving(self, pool: str = "worker", timeout: float = 120) -> None:
        """Until mcs serves the pool's rendered config (mcc rendered it)."""
        assert self.network is not None

        def served() -> bool:
            probe = self.network.run(["python3", "-c", (  # type: ignore[union-attr]
                "import ssl,sys,urllib.request as u;"
                f"c=ssl.create_default_context(cafile='{self.workdir / 'programs/ca.crt'}');"
                f"r=u.urlopen('https://{GATEWAY}:{MCS_PORT}/config/{pool}',context=c,timeout=5);"
                "sys.exit(0 if r.status==200 else 1)")], check=False, timeout=30)
            return probe.returncode == 0

        self.wait_for(f"/config/{pool} served by mcs", served, timeout,
                      lambda: f"mcc:\n{self.log_tail('mcc')}\nmcs:\n{self.log_tail('mcs')}")

    def pointer(self, pool: str) -> bytes:
        proc = subprocess.run(
            [sys.executable, "-c", "import sys; from mcs.cli import main; sys.exit(main())",
             "pointer", "--url", f"https://{GATEWAY}:{MCS_PORT}/config/{pool}",
             "--ca", str(self.workdir / "programs/ca.crt")],
            capture_output=True, timeout=60, check=False, cwd=REPO_ROOT)
        if proc.returncode != 0:
            raise HarnessError(f"mcs pointer exited {proc.returncode}: {proc.stderr.decode()}")
        return proc.stdout

    def _approve_serving_csrs(self) -> None:
        """Approve the kubelet-serving CSRs of our own nodes (the machine approver's job)."""
        while not self._stop.wait(1.0):
            with contextlib.suppress(Exception):
                assert self.cp is not None
                names = {f"system:node:{n.name}" for n in self.nodes}
                _, csrs = self.cp.call("GET", "/apis/certificates.k8s.io/v1/"
                                       "certificatesigningrequests")
                for csr in csrs.get("items", []):
                    spec, status = csr["spec"], csr.get("status") or {}
                    if (spec.get("signerName") != "kubernetes.io/kubelet-serving"
                            or spec.get("username") not in names or status.get("conditions")):
                        continue
                    csr["status"] = {"conditions": [{
                        "type": "Approved", "status": "True", "reason": "MachineConfigTests",
                        "message": "a node of this test cluster"}]}
                    self.cp.call("PUT", "/apis/certificates.k8s.io/v1/certificatesigningrequests/"
                                 f"{csr['metadata']['name']}/approval", csr)

    # -- nodes --

    def add_nodes(self, names: Sequence[str], pool: str = "worker") -> list[KubeNode]:
        """Create and boot nodes with only the pool's pointer config (not waiting)."""
        assert self.cp is not None and self.base is not None
        ssh_key = self.workdir / "id_ed25519"
        if not ssh_key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_key)])
        pointer = self.pointer(pool)
        created = []
        for name in names:
            node = KubeNode(name, self.base, self.workdir / name, ssh_key,
                            index=len(self.nodes) + 1, network=self.network)
            self.nodes.append(node)
            node.create()
            prepare_pointer_node(node, pointer)
            kubelet_kc = self.internal_kubeconfig(node.workdir / "kubelet.kubeconfig",
                                                  f"system:node:{name}", ("system:nodes",))
            text = kubelet_kc.read_text()
            (node.state_dir / "kubelet" / "kubeconfig").write_text(text)
            (node.state_dir / "kubelet" / "kubeconfig").chmod(0o600)
            node.put("/etc/kubernetes/kubeconfig", text, 0o600)  # the bootstrap kubeconfig
            node.put(DAEMON_DROPIN, (
                "# node-local (not served): the daemon on the kube store, as this node\n"
                "[Service]\nExecStart=\n"
                f"ExecStart={MCD} start --store kube --kubeconfig {DAEMON_KUBECONFIG} "
                f"--node {name}\n"))
            node.boot()
            node.created_at = time.monotonic()
            self.supervisor.nodes.append(node)
            created.append(node)
        return created

    def node_ready(self, name: str) -> bool:
        assert self.cp is not None
        code, node = self.cp.call("GET", f"/api/v1/nodes/{name}")
        return code == 200 and any(c["type"] == "Ready" and c["status"] == "True"
                                   for c in node.get("status", {}).get("conditions", []))

    def wait_node_ready(self, name: str, timeout: float = 300) -> float:
        started = time.monotonic()
        node = self.node(name)
        self.wait_for(f"node {name} Ready", lambda: self.node_ready(name), timeout,
                      lambda: f"console:\n{node.console_tail()}")
        return time.monotonic() - started

    def node(self, name: str) -> KubeNode:
        return next(n for n in self.nodes if n.name == name)

    def install_daemon_credentials(self, node: KubeNode) -> None:
        """mcd's kubeconfig: a machine-config-daemon token bound to this Node; restart it."""
        token = self.service_account_token("machine-config-daemon", bound_node=node.name)
        kc = self.internal_kubeconfig(node.workdir / "mcd.kubeconfig", token=token)
        node.put(DAEMON_KUBECONFIG, kc.read_text(), 0o600)
        node.daemon_invocation = self.daemon_invocation(node)
        # not waiting for the job: it queues behind whatever the boot still runs (wait_joined
        # waits for the restarted daemon)
        node.run(["systemctl", "restart", "--no-block", "machine-config-daemon.service"])

    @staticmethod
    def daemon_invocation(node: KubeNode) -> str:
        """The daemon service's InvocationID when it is running, else ''."""
        out = node.run(["systemctl", "show", "-p", "InvocationID", "-p", "ActiveState", "-p",
                        "SubState", "machine-config-daemon.service"], check=False).stdout
        props = dict(line.partition("=")[::2] for line in out.splitlines())
        running = (props.get("ActiveState"), props.get("SubState")) == ("active", "running")
        return props.get("InvocationID", "") if running else ""

    def daemon_done(self, name: str) -> bool:
        """The node's daemon reported Done on the config the controller wants there."""
        assert self.cp is not None
        code, node = self.cp.call("GET", f"/api/v1/nodes/{name}")
        a = node.get("metadata", {}).get("annotations", {}) if code == 200 else {}
        prefix = "machineconfiguration.openshift.io/"
        return bool(a.get(prefix + "desiredConfig")) and a.get(prefix + "state") == "Done" \
            and a.get(prefix + "currentConfig") == a.get(prefix + "desiredConfig")

    def wait_joined(self, names: Sequence[str], timeout: float = 300) -> dict[str, float]:
        """Until each node is Ready and its daemon, running with its own credentials, reports
        Done; returns the seconds from node creation to Ready."""
        ready = {}
        for name in names:
            node = self.node(name)
            self.wait_node_ready(name, timeout)
            ready[name] = time.monotonic() - node.created_at
            self.install_daemon_credentials(node)
        for name in names:
            node = self.node(name)
            # the restart with the new credentials is done (a Done from the daemon before it
            # does not count: under load the restart job may still be queued or stopping)
            self.wait_for(f"daemon of {name} restarted", lambda n=node: self.daemon_invocation(n)
                          not in ("", n.daemon_invocation), timeout,
                          lambda n=node: n.run(["systemctl", "status", "--no-pager",
                                                "machine-config-daemon"], check=False).stdout)
            self.wait_for(f"daemon of {name} Done", lambda n=name: self.daemon_done(n), timeout,
                          lambda n=node: n.run(["journalctl", "-u", "machine-config-daemon",
                                                "--no-pager", "-n", "15", "-o", "cat"],
                                               check=False).stdout)
        return ready

    def rss_mb(self) -> dict[str, float]:
        """Resident memory (MB) of the control plane's processes, mcc, mcs, and each node's
        crio, kubelet and mcd."""
        def rss(status: str) -> float:
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
            return 0.0

        out: dict[str, float] = {}
        pids = {name: proc.popen.pid for name, proc in (self.cp.procs.items() if self.cp else ())
                if proc.popen is not None and not name.endswith("-forward")}
        pids.update({name: proc.pid for name, proc in self.procs.items()})
        for name, pid in pids.items():
            with contextlib.suppress(OSError):
                out[name] = rss(Path(f"/proc/{pid}/status").read_text())
        for node in self.nodes:
            with contextlib.suppress(HarnessError, subprocess.TimeoutExpired):
                main = node.run(["systemctl", "show", "-p", "MainPID", "--value", "crio",
                                 "kubelet", "machine-config-daemon"]).stdout.split()
                for unit, pid in zip(("crio", "kubelet", "mcd"), main):
                    status = node.run(["cat", f"/proc/{pid}/status"], check=False).stdout
                    out[f"{node.name} {unit}"] = rss(status)
        return out

    def reboot(self, node: KubeNode) -> None:
        """Ask the node's systemd for a reboot; the supervisor boots it again."""
        node.run(["systemctl", "reboot"], check=False, timeout=30)

    def load_image(self, node: KubeNode, layout: Path, name: str) -> None:
        """Import an OCI image layout (a directory) into the node's CRI-O storage as `name`."""
        target = f"/var/tmp/images/{uuid.uuid4().hex[:8]}"
        shutil.copytree(layout, node.root / target.lstrip("/"))
        try:
            node.run(["copyimg", "--import-from", f"oci:{target}", "--image-name", name],
                     timeout=600)
        finally:
            shutil.rmtree(node.root / target.lstrip("/"), ignore_errors=True)

    # -- teardown --

    def close(self) -> None:
        errors: list[str] = []
        self._stop.set()
        self.supervisor.stop()
        if self._approver is not None:
            self._approver.join(timeout=10)
        for node in self.nodes:  # every node shuts down at once; then each is waited for
            node.request_stop()
        for node in list(self.nodes):
            try:
                node.remove()
            except Exception as err:  # noqa: BLE001 - remove every node, report at the end
                errors.append(f"{node.name}: {err}")
        self.nodes.clear()
        for name, proc in self.procs.items():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
        if self.cp is not None:
            self.cp.stop()
        if self.network is not None:
            self.network.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise HarnessError("cleanup failed: " + "; ".join(errors))
