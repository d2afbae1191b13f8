"""What a node that follows its pool looks like from the inside: the daemon runs, it reports
Done on the pool's rendered config, and every file and unit of that config is on disk as the
config says. Parameterised by testinfra's --hosts and by --mc-config (see conftest.py).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from tests.hosts.conftest import HostFacts
from tests.hosts.expected import file_contents

DAEMON_UNIT = "machine-config-daemon.service"
STATE_FILE = "/etc/machine-config-daemon/state.json"
UNIT_DIR = "/etc/systemd/system"
DEFAULT_FILE_MODE = 0o644


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_json(host: Any, path: str) -> dict[str, Any]:
    f = host.file(path)
    assert f.exists, f"{host.backend.hostname}: no {path}"
    return dict(json.loads(f.content_string))


def test_daemon_service_is_active_and_enabled(host: Any) -> None:
    daemon = host.service(DAEMON_UNIT)
    assert daemon.is_running, host.run(f"systemctl status --no-pager {DAEMON_UNIT}").stdout
    assert daemon.is_enabled


def test_state_is_done(host: Any) -> None:
    state = read_json(host, STATE_FILE)
    assert state.get("state") == "Done", state


def test_current_config_is_the_pools(host: Any, expected: dict[str, Any]) -> None:
    state = read_json(host, STATE_FILE)
    assert state.get("currentConfig") == expected["metadata"]["name"], state
    assert state.get("desiredConfig") == expected["metadata"]["name"], state


def test_managed_file(host: Any, managed_file: dict[str, Any], facts: HostFacts) -> None:
    path = managed_file["path"]
    want = file_contents(managed_file)
    found = facts.files[path]
    assert found is not None, f"{path} missing"
    mode = int(managed_file.get("mode", DEFAULT_FILE_MODE))
    assert found.mode == mode, f"{path}: mode {oct(found.mode)}, want {oct(mode)}"
    owner = (managed_file.get("user") or {}).get("name")
    if owner:
        assert found.user == owner, f"{path}: owner {found.user}, want {owner}"
    if found.sha256 != hashlib.sha256(want).hexdigest():
        # only now the contents, for a readable difference
        assert host.file(path).content == want, f"{path}: contents differ from the config"


def test_managed_unit(managed_unit: dict[str, Any], facts: HostFacts) -> None:
    name = managed_unit["name"]
    enabled = facts.enabled[name]
    if managed_unit.get("mask"):
        assert enabled == "masked", f"{name}: is-enabled says {enabled!r}, want masked"
        return
    if managed_unit.get("contents") is not None:
        path = f"{UNIT_DIR}/{name}"
        assert facts.files[path] is not None, f"{path} missing"
        assert facts.files[path].sha256 == sha256(managed_unit["contents"]), \
            f"{path}: contents differ from the config"
    for dropin in managed_unit.get("dropins") or []:
        path = f"{UNIT_DIR}/{name}.d/{dropin['name']}"
        assert facts.files[path] is not None, f"{path} missing"
        assert facts.files[path].sha256 == sha256(dropin.get("contents") or ""), \
            f"{path}: contents differ from the config"
    if managed_unit.get("enabled") is True:
        assert enabled in ("enabled", "enabled-runtime", "alias"), \
            f"{name}: is-enabled says {enabled!r}, want enabled"
    elif managed_unit.get("enabled") is False:
        assert enabled not in ("enabled", "enabled-runtime"), \
            f"{name}: is-enabled says {enabled!r}, want not enabled"


def test_crio_and_kubelet_units_are_present(host: Any) -> None:
    for name in ("crio.service", "kubelet.service"):
        load = host.run(f"systemctl show -P LoadState {name}").stdout.strip()
        assert load == "loaded", f"{name}: LoadState {load!r}"
