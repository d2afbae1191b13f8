"""Host checks for machine-config nodes, run with pytest-testinfra against any hosts: the e2e
test's nspawn nodes, the Vagrant VMs, or your own machines.

    pytest tests/hosts --hosts=ssh://worker-1,ssh://worker-2 --ssh-config=FILE [--sudo] \\
        --mc-config=CONFIG [--mc-ca=CA.crt --mc-token-file=FILE]

CONFIG is what the hosts must be on, the pool's rendered config:
- a file: a rendered MachineConfig (JSON or YAML, e.g. STATE/rendered/rendered-worker-*.json),
  or a served Ignition config that carries one (/etc/mcs-machine-config-content.json);
- or the server's https://HOST:22623/config/<pool>, fetched with --mc-ca and the pool's
  bootstrap token from --mc-token-file (the token alone, or `pool token` lines as in
  STATE/tokens).

Without --hosts and --mc-config the directory is not collected (a plain `pytest` run of the
repository has no hosts to check); the e2e and Vagrant tests run it with both.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.hosts.expected import ConfigError, load_expected


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("machine-config hosts")
    group.addoption("--mc-config", dest="mc_config", default=None,
                    help="the rendered config the hosts must be on: a MachineConfig or served "
                         "Ignition file, or https://HOST:PORT/config/<pool>")
    group.addoption("--mc-ca", dest="mc_ca", default=None,
                    help="CA (PEM) of the server, with an https --mc-config")
    group.addoption("--mc-token-file", dest="mc_token_file", default=None,
                    help="the pool's bootstrap token, with an https --mc-config")
    group.addoption("--mc-kubeconfig", dest="mc_kubeconfig", default=None,
                    help="the hosts are Kubernetes nodes of this cluster: also check kubelet, "
                         "CRI-O and the Node's Ready condition (test_kubernetes.py)")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name == "conftest.py":
        return None
    if collection_path.name == "test_kubernetes.py" and \
            not config.getoption("mc_kubeconfig", default=None):
        return True  # not Kubernetes nodes (the embedded store's nodes, the Vagrant box)
    if config.getoption("mc_config", default=None) and config.getoption("hosts", default=None):
        return None
    return True


def expected_config(config: pytest.Config) -> dict[str, Any]:
    cached = getattr(config, "_mc_expected", None)
    if cached is None:
        where = config.getoption("mc_config", default=None)
        if not where:
            raise pytest.UsageError("tests/hosts needs --mc-config (see tests/hosts/README.md)")
        try:
            cached = load_expected(where, config.getoption("mc_ca", default=None),
                                   config.getoption("mc_token_file", default=None))
        except ConfigError as err:
            raise pytest.UsageError(str(err)) from None
        config._mc_expected = cached  # type: ignore[attr-defined]
    return dict(cached)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per managed file and per unit of the expected config, named by path/unit."""
    if "managed_file" in metafunc.fixturenames:
        ign = expected_config(metafunc.config)["spec"]["config"]
        files = (ign.get("storage") or {}).get("files") or []
        metafunc.parametrize("managed_file", files, ids=[f["path"] for f in files])
    if "managed_unit" in metafunc.fixturenames:
        ign = expected_config(metafunc.config)["spec"]["config"]
        units = (ign.get("systemd") or {}).get("units") or []
        metafunc.parametrize("managed_unit", units, ids=[u["name"] for u in units])


@pytest.fixture(scope="session")
def expected(request: pytest.FixtureRequest) -> dict[str, Any]:
    return expected_config(request.config)


# ---- what a host has, gathered with one command per host --------------------------------------
# (each command is an ssh round trip; on an emulated VM that costs seconds)

UNIT_DIR = "/etc/systemd/system"


@dataclass
class FileFacts:
    sha256: str
    mode: int
    user: str


@dataclass
class HostFacts:
    files: dict[str, FileFacts | None] = field(default_factory=dict)
    enabled: dict[str, str] = field(default_factory=dict)


def gather_facts(host: Any, config: dict[str, Any]) -> HostFacts:
    """sha256, mode and owner of every file the config manages (and of its unit files and
    drop-ins), and `systemctl is-enabled` of every unit, in one shell command."""
    ign = config["spec"]["config"]
    paths = [str(f["path"]) for f in (ign.get("storage") or {}).get("files") or []]
    units = (ign.get("systemd") or {}).get("units") or []
    for unit in units:
        if unit.get("contents") is not None:
            paths.append(f"{UNIT_DIR}/{unit['name']}")
        paths += [f"{UNIT_DIR}/{unit['name']}.d/{d['name']}" for d in unit.get("dropins") or []]
    script = ["f() { if [ -f \"$1\" ]; then printf 'F %s %s %s\\n' "
              "\"$(sha256sum < \"$1\" | cut -d' ' -f1)\" \"$(stat -c '%a:%U' \"$1\")\" \"$1\"; "
              "else printf 'F - - %s\\n' \"$1\"; fi; }"]
    script += [f"f {shlex.quote(p)}" for p in paths]
    script += [f"printf 'U %s %s\\n' {shlex.quote(u['name'])} "
               f"\"$(systemctl is-enabled {shlex.quote(u['name'])} 2>/dev/null)\"" for u in units]
    out = host.check_output("\n".join(script))
    facts = HostFacts()
    for line in out.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "F":
            digest, mode_user, path = rest.split(" ", 2)
            if digest == "-":
                facts.files[path] = None
            else:
                mode, _, user = mode_user.partition(":")
                facts.files[path] = FileFacts(digest, int(mode, 8), user)
        elif kind == "U":
            name, _, state = rest.partition(" ")
            facts.enabled[name] = state.strip()
    missing = [p for p in paths if p not in facts.files]
    if missing:
        raise AssertionError(f"no facts for {missing} in:\n{out[-2000:]}")
    return facts


_FACTS: dict[str, HostFacts] = {}


@pytest.fixture
def facts(host: Any, expected: dict[str, Any]) -> HostFacts:
    key = str(host.backend.get_pytest_id())
    if key not in _FACTS:
        _FACTS[key] = gather_facts(host, expected)
    return _FACTS[key]
