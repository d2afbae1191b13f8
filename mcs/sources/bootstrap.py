"""MCO's bootstrap layout on disk as a config source (`mcs bootstrap`; what `mcc render --out DIR`
writes): which rendered config each pool serves, the state of every input file (for cache
invalidation), and reading the inputs.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from machineconfig import constants
from machineconfig.bootstrap_layout import CONTROLLER_CONFIG_DIR, MACHINE_CONFIGS_DIR, MACHINE_POOLS_DIR
from machineconfig.errors import InputError
from machineconfig.yamlload import decode_text, load_text, read_bounded
from mcs.serve import JSON, NotFound, ServeError, build_served, valid_pool_name
from machineconfig.atomicfile import Signature, stat_signature
from mcs.sources import CONFIG_NAME, Resolved, choose_config

log = logging.getLogger(__name__)

def load_object(path: Path) -> JSON:
    """One Kubernetes object from a YAML (or JSON) file; ServeError names the file, not its content.

    The file is bounded like any input (size, depth, aliases: machineconfig.yamlload)."""
    try:
        raw = read_bounded(str(path))
    except InputError as e:
        if not path.exists() and not path.is_symlink():
            raise FileNotFoundError(str(path)) from None
        raise ServeError(f"cannot read {path.name}: {e.message}") from None
    try:
        docs = load_text(decode_text(raw, path.name), path.name)
    except InputError as e:
        where = f" line {e.line}" if e.line else ""
        raise ServeError(f"cannot parse {path.name}:{where}: {e.message}") from None
    if len(docs) != 1 or not isinstance(docs[0].data, dict):
        raise ServeError(f"{path.name}: not an object")
    data: JSON = docs[0].data
    return data


def parse_registry_cert(value: str) -> tuple[str, str]:
    """`--bootstrap-certs registry=relative/ca.crt`; the registry becomes a path component."""
    registry, sep, rel = value.partition("=")
    if not sep or not registry or not rel or "=" in rel or "/" in registry or registry in (".", ".."):
        raise ValueError(f"--bootstrap-certs wants registry=file, got {value!r}")
    return registry, rel


class BootstrapSource:
    """Reads DIR/machine-pools/<pool>.yaml, DIR/machine-configs/<name>.yaml and the ControllerConfig."""

    def __init__(self, basedir: Path, kubeconfig: Path, registry_cas: list[tuple[str, str]] | None = None) -> None:
        self.basedir = basedir
        self.kubeconfig = kubeconfig
        # MCO's --bootstrap-certs: registry -> CA file relative to the base directory.
        self.registry_cas = [(registry, str(basedir / rel)) for registry, rel in registry_cas or ()]
        self.cc_path = basedir / CONTROLLER_CONFIG_DIR / f"{constants.CONTROLLER_CONFIG_NAME}.yaml"
        self._pools: dict[str, tuple[Signature, str]] = {}
        # Plain strings for the per-request stat calls: pathlib joins cost more than the stat.
        self._pool_dir = os.path.join(basedir, MACHINE_POOLS_DIR)
        self._config_dir = os.path.join(basedir, MACHINE_CONFIGS_DIR)
        self._cc = str(self.cc_path)
        self._kubeconfig = str(kubeconfig)

    def pool_path(self, pool: str) -> str:
        if not valid_pool_name(pool):
            raise ValueError("invalid pool name")
        return f"{self._pool_dir}/{pool}.yaml"

    def has_pool(self, pool: str) -> bool:
        return valid_pool_name(pool) and stat_signature(self.pool_path(pool)) is not None

    def describe(self) -> str:
        return str(self.basedir)

    def close(self) -> None:
        """Nothing to release: the files are read per build."""

    def config_path(self, name: str) -> str:
        return f"{self._config_dir}/{name}.yaml"

    def pools(self) -> list[str]:
        """Every pool the directory holds (we serve them all, not only master like MCO's bootstrap)."""
        try:
            names = os.listdir(self._pool_dir)
        except FileNotFoundError:
            return []
        return sorted(n[:-5] for n in names if n.endswith(".yaml") and valid_pool_name(n[:-5]))

    def resolve(self, pool: str) -> Resolved:
        """Cheap (a few stat calls): the config name and input signature; parses the pool only on change."""
        if not valid_pool_name(pool):
            raise NotFound("no such pool: invalid pool name")
        pool_path = self.pool_path(pool)
        pool_sig = stat_signature(pool_path)
        if pool_sig is None:
            self._pools.pop(pool, None)
            raise NotFound(f"pool {pool!r} not found")
        cached = self._pools.get(pool)
        if cached is not None and cached[0] == pool_sig:
            name = cached[1]
        else:
            name = choose_config(load_object(Path(pool_path)))
            if not name:
                raise NotFound(f"pool {pool!r} has no rendered config yet")
            if not CONFIG_NAME.match(name) or ".." in name:
                raise ServeError(f"pool {pool!r} names an invalid config")
            self._pools[pool] = (pool_sig, name)
        mc_sig = stat_signature(self.config_path(name))
        if mc_sig is None:
            raise NotFound(f"rendered config {name!r} of pool {pool!r} not found")
        signature = (pool_sig, mc_sig, stat_signature(self._cc), stat_signature(self._kubeconfig),
                     *(stat_signature(path) for _, path in self.registry_cas))
        return Resolved(pool, name, signature)

    def build(self, resolved: Resolved, version: str) -> bytes:
        """Read the inputs and build the served bytes (slow path; callers cache the result)."""
        try:
            mc = load_object(Path(self.config_path(resolved.config_name)))
        except FileNotFoundError as e:
            raise NotFound(f"rendered config {resolved.config_name!r} not found") from e
        try:
            cc = load_object(self.cc_path)
        except FileNotFoundError as e:
            raise ServeError("controller config not found") from e
        try:
            kubeconfig = self.kubeconfig.read_bytes()
        except OSError as e:
            raise ServeError("bootstrap kubeconfig cannot be read") from e
        cas: list[tuple[str, bytes]] = []
        for registry, path in self.registry_cas:
            try:
                cas.append((registry, Path(path).read_bytes()))
            except OSError as e:
                raise ServeError(f"bootstrap cert for {registry} cannot be read") from e
        return build_served(resolved.config_name, mc, cc, kubeconfig, version, cas)
