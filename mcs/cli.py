"""The `mcs` command line: `mcs bootstrap` serves a bootstrap directory, `mcs start` serves a store
(and the node API), `mcs pointer` prints the pointer Ignition config new machines boot with, and
`mcs node revoke|list` administers the node tokens of a state directory; `mcs fleetlock
list|release` the FleetLock reboot slots held; `mcs admin-token` prints the status page's token.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from machineconfig import constants

if TYPE_CHECKING:
    from mcs.options import BootstrapOptions, StoreOptions

log = logging.getLogger(__name__)


def _port(text: str) -> int | None:
    """A TCP port; 0 picks a free one, -1 (or `off`) disables the listener."""
    if text in ("off", "-1"):
        return None
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 2 <= value <= 366 * 24 * 3600:
        raise argparse.ArgumentTypeError(f"not a lifetime between 2 seconds and a year: {text}")
    return value


def _interval(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 60:
        raise argparse.ArgumentTypeError(f"not an interval between 0 and 60 seconds: {text}")
    return value


def _listen_args(p: argparse.ArgumentParser) -> None:
    """Where `mcs bootstrap` and `mcs start` listen."""
    p.add_argument("--secure-port", type=_port, default=constants.SECURE_PORT,
                   help="HTTPS port (0: any free port, -1: off)")
    p.add_argument("--insecure-port", type=_port, default=constants.INSECURE_PORT,
                   help="plain HTTP port (0: any free port, -1: off)")
    p.add_argument("--bind-address", default=None, help="address to listen on (default: all interfaces)")


def _timeout_args(p: argparse.ArgumentParser, response: str, checked: str) -> None:
    """The client deadlines and input check interval of `mcs bootstrap` and `mcs start`; `response`
    is the help of --response-timeout, `checked` what --input-check-interval checks."""
    from mcs.cache import INPUT_CHECK_INTERVAL

    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a client has to send a request head (and the keep-alive idle limit)")
    p.add_argument("--response-timeout", type=float, default=60.0, help=response)
    p.add_argument("--input-check-interval", type=_interval, default=INPUT_CHECK_INTERVAL, metavar="SECONDS",
                   help=f"check {checked} at most this often, not on every request: a change is served "
                        f"within this bound (default {INPUT_CHECK_INTERVAL}; 0: every request)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcs", description="machine-config server: serves Ignition to joining machines")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    boot = sub.add_parser("bootstrap", help="serve every pool of a bootstrap directory (`mcc render --out DIR`)")
    boot.add_argument("--server-basedir", type=Path, default=Path("/etc/mcs/bootstrap"),
                      help="directory with machine-pools/, machine-configs/, controller-config/")
    boot.add_argument("--bootstrap-kubeconfig", type=Path, default=Path("/etc/kubernetes/kubeconfig"),
                      help="kubeconfig served to machines as /etc/kubernetes/kubeconfig (must exist)")
    boot.add_argument("--cert", type=Path, help="TLS certificate (PEM); reloaded when the file changes")
    boot.add_argument("--key", type=Path, help="TLS private key (PEM); reloaded when the file changes")
    _listen_args(boot)
    boot.add_argument("--workers", type=int, default=1,
                      help="worker processes sharing the ports (0: one per CPU)")
    boot.add_argument("--token-file", type=Path,
                      help="`pool token` per line; /config/<pool> then needs `Authorization: Bearer <token>`")
    boot.add_argument("--bootstrap-certs", action="append", default=[], metavar="REGISTRY=FILE",
                      help="serve FILE (relative to the base directory) as /etc/docker/certs.d/REGISTRY/ca.crt")
    _timeout_args(boot, response="seconds a client has to receive one response",
                  checked="the input files")
    boot.set_defaults(func=_bootstrap)

    start = sub.add_parser("start", help="serve pools from a store, and the node API for daemons")
    start.add_argument("--store", required=True, help="store URL: local:DIR (input YAML directory), or kube / "
                       "kube:KUBECONFIG (the Kubernetes API; in-cluster config by default)")
    start.add_argument("--state", type=Path, metavar="SDIR",
                       help="state directory (shared with `mcc start`); bootstrap tokens in SDIR/tokens. Required "
                       "for a local store; with kube, without it there is no node API (daemons use the API server)")
    start.add_argument("--kubeconfig", help="kubeconfig of --store kube")
    start.add_argument("--cert", type=Path, help="TLS certificate (PEM); reloaded when the file changes")
    start.add_argument("--key", type=Path, help="TLS private key (PEM); reloaded when the file changes")
    start.add_argument("--ca", type=Path,
                       help="CA (PEM) handed to nodes in node-credentials.json (default: --cert itself)")
    _listen_args(start)
    start.add_argument("--advertise-url", help="node API URL written into served configs "
                       "(default: scheme and Host of the request for the config)")
    start.add_argument("--token-file", type=Path,
                       help="extra `pool token` lines also accepted for /config/<pool>")
    start.add_argument("--bootstrap-kubeconfig", type=Path,
                       help="kubeconfig served as /etc/kubernetes/kubeconfig (default: none is served)")
    start.add_argument("--node-token-ttl", type=_seconds, default=24 * 3600, metavar="SECONDS",
                       help="lifetime of the node tokens the node API issues; daemons renew theirs at "
                            "half-life (default 86400)")
    _timeout_args(start, response="seconds a client has to receive one response (long polls get their own)",
                  checked="the store revision and input files")
    start.set_defaults(func=_start)

    node = sub.add_parser("node", help="administer the node API's node tokens (store mode)")
    node.set_defaults(func=_node)
    node_sub = node.add_subparsers(dest="node_command", required=True)
    revoke = node_sub.add_parser("revoke", help="end every token of a node at once; it may then register "
                                 "again with its pool's bootstrap token (a reinstalled or lost machine)")
    revoke.add_argument("name", help="node name")
    revoke.add_argument("--state", type=Path, metavar="SDIR", required=True, help="the server's state directory")
    listing = node_sub.add_parser("list", help="the nodes holding a token")
    listing.add_argument("--state", type=Path, metavar="SDIR", required=True, help="the server's state directory")

    fleet = sub.add_parser("fleetlock", help="the FleetLock reboot slots held (local store)")
    fleet.set_defaults(func=_fleetlock)
    fleet_sub = fleet.add_subparsers(dest="fleetlock_command", required=True)
    for name, text in (("list", "every slot held: group, holder id, since"),
                       ("release", "give a holder's slot back (a machine that never came back)")):
        cmd = fleet_sub.add_parser(name, help=text)
        if name == "release":
            cmd.add_argument("id", help="the holder's FleetLock client id")
            cmd.add_argument("--group", default="default", help="its group (default: default)")
        else:
            cmd.add_argument("-o", "--output", choices=("text", "json"), default="text")
        cmd.add_argument("--store", required=True, metavar="URL", help="local:DIR, as mcs start")
        cmd.add_argument("--state", required=True, metavar="SDIR", help="the state directory")

    admin = sub.add_parser("admin-token", help="print the status page's admin token (created if "
                           "missing); with --url, the page's address that carries it")
    admin.add_argument("--state", type=Path, metavar="SDIR", required=True, help="the server's state directory")
    admin.set_defaults(func=_admin_token)
    admin.add_argument("--url", help="the server's TLS URL, e.g. https://HOST:22623: print "
                       "URL/status#token=TOKEN (the fragment never leaves the browser)")

    ptr = sub.add_parser("pointer", help="print the pointer Ignition config for a pool")
    ptr.add_argument("--url", required=True, help="https://HOST:22623/config/<pool>")
    ptr.add_argument("--ca", type=Path, required=True, help="CA certificate (PEM) that signed the server certificate")
    ptr.add_argument("--token", help="bearer token sent in Ignition's httpHeaders")
    ptr.add_argument("--state", type=Path, metavar="SDIR",
                     help="take the pool's bootstrap token from SDIR/tokens (created if missing)")
    ptr.add_argument("--pool", help="the pool whose token --state gives (default: the URL's last path part)")
    ptr.set_defaults(func=_pointer)
    return parser


def _bootstrap(args: argparse.Namespace) -> int:
    if not args.bootstrap_kubeconfig.is_file():
        log.error("kubeconfig not found at %s", args.bootstrap_kubeconfig)
        return 2
    workers = args.workers if args.workers > 0 else (os.cpu_count() or 1)
    metrics_dir: str | None = None
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Must be set before prometheus-client is first imported (in _serve), so workers share counters.
        metrics_dir = tempfile.mkdtemp(prefix="mcs-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

    def options(listen: dict[str, Any]) -> BootstrapOptions:
        from mcs.options import BootstrapOptions
        from mcs.sources.bootstrap import parse_registry_cert

        registry_cas = tuple(parse_registry_cert(v) for v in args.bootstrap_certs)
        return BootstrapOptions(basedir=args.server_basedir, kubeconfig=args.bootstrap_kubeconfig,
                                workers=workers, registry_cas=registry_cas, **listen)

    try:
        return _serve(args, options)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _start(args: argparse.Namespace) -> int:
    from machineconfig.store import StoreError, store_scheme, store_url
    from mcs.options import StoreOptions

    def options(listen: dict[str, Any]) -> StoreOptions:
        store = store_url(args.store, args.kubeconfig)
        if args.state is None and store_scheme(store) != constants.STORE_KUBE:
            raise ValueError(f"--state is required with store {store}")
        if args.advertise_url is not None and not args.advertise_url.startswith(("https://", "http://")):
            raise ValueError("--advertise-url must be an http(s) URL")
        return StoreOptions(store=store, state_dir=args.state, kubeconfig=args.bootstrap_kubeconfig, ca=args.ca,
                            advertise_url=args.advertise_url, node_token_ttl=args.node_token_ttl, **listen)

    return _serve(args, options)


def _serve(args: argparse.Namespace, options: Callable[[dict[str, Any]], BootstrapOptions | StoreOptions]) -> int:
    """What `mcs bootstrap` and `mcs start` share: TLS and listener checks (exit status 2 for bad
    arguments, also when `options` raises ValueError or StoreError), then the server (1 if it fails)."""
    from machineconfig.store import StoreError
    from mcs.auth import TokenFileError
    from mcs.server import run

    if (args.cert is None) != (args.key is None):
        log.error("--cert and --key go together")
        return 2
    if args.cert is None and args.secure_port is not None:
        log.warning("no --cert/--key: the HTTPS listener is off")
    listen = dict(cert=args.cert, key=args.key, secure_port=args.secure_port if args.cert is not None else None,
                  insecure_port=args.insecure_port, bind_address=args.bind_address, token_file=args.token_file,
                  header_timeout=args.header_timeout, response_timeout=args.response_timeout,
                  input_check_interval=args.input_check_interval)
    try:
        chosen = options(listen)
    except (StoreError, ValueError) as e:
        log.error("%s", e)
        return 2
    if chosen.secure_port is None and chosen.insecure_port is None:
        log.error("both listeners are off")
        return 2
    try:
        return run(chosen)
    except (TokenFileError, StoreError, OSError, ValueError) as e:
        log.error("%s", e)
        return 1


def _pointer_token(args: argparse.Namespace) -> str | None:
    if args.token is not None or args.state is None:
        return str(args.token) if args.token is not None else None
    from urllib.parse import urlsplit

    from mcs.tokens import PoolTokens

    pool = args.pool or urlsplit(args.url).path.rstrip("/").rsplit("/", 1)[-1]
    tokens = PoolTokens(args.state)
    tokens.ensure([pool])
    token = tokens.token_for(pool)
    if token is None:
        raise ValueError(f"no bootstrap token for pool {pool!r} (is it a valid pool name?)")
    return token


def _pointer(args: argparse.Namespace) -> int:
    from mcs.pointer import render_pointer

    try:
        token = _pointer_token(args)
        sys.stdout.buffer.write(render_pointer(args.url, args.ca.read_bytes(), token))
    except (OSError, ValueError) as e:  # PointerError is a ValueError
        print(f"mcs pointer: {e}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    return 0


def _node(args: argparse.Namespace) -> int:
    from mcs.tokens import NODE_TOKENS_FILE, NodeTokens

    if not (args.state / NODE_TOKENS_FILE).exists():
        print(f"mcs node: no {NODE_TOKENS_FILE} in {args.state}", file=sys.stderr)
        return 1
    try:
        tokens = NodeTokens(args.state)
        if args.node_command == "list":
            for name in tokens.names():
                print(name)
            return 0
        if not tokens.revoke(args.name):
            print(f"mcs node revoke: node {args.name} holds no token", file=sys.stderr)
            return 1
    except (OSError, ValueError) as e:
        print(f"mcs node: {e}", file=sys.stderr)
        return 1
    # A running server re-reads the file within a second: the node's token stops working then.
    log.info("revoked every token of node %s; it may register again with its pool's bootstrap token",
             args.name)
    return 0


def _fleetlock(args: argparse.Namespace) -> int:
    from machineconfig.rollout import pool_for_group
    from machineconfig.store import open_store
    from machineconfig.store.base import RebootLocks, StoreError
    from mcs import fleetlock

    try:
        store = open_store(args.store, args.state)
        if not isinstance(store, RebootLocks):
            print(f"mcs fleetlock: {args.store}: this store keeps no reboot slots", file=sys.stderr)
            return 1
        if args.fleetlock_command == "list":
            locks = store.list_reboot_locks()
            out = fleetlock.dumps(locks) if args.output == "json" else fleetlock.format_locks(locks)
            sys.stdout.write(out)
            return 0
        if not store.release_reboot_lock(args.group, args.id):
            print(f"mcs fleetlock release: {args.id} holds no slot of group {args.group}",
                  file=sys.stderr)
            return 1
    except StoreError as e:
        print(f"mcs fleetlock: {e}", file=sys.stderr)
        return 1
    store.record_event("MachineConfigPool", pool_for_group(args.group), "RebootSlotReleased",
                       f"an administrator released the reboot slot of {args.id} "
                       f"(group {args.group})")
    log.info("released the reboot slot of %s in group %s", args.id, args.group)
    return 0


def _admin_token(args: argparse.Namespace) -> int:
    from mcs.tokens import AdminToken

    try:
        args.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = AdminToken(args.state).ensure()
    except (OSError, ValueError) as e:
        print(f"mcs admin-token: {e}", file=sys.stderr)
        return 1
    print(f"{args.url.rstrip('/')}/status#token={token}" if args.url else token)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
