"""On a real node: a config cannot make the daemon write outside its root, neither through a
unit name that climbs out of the unit directory (`mcd apply` on /) nor through a link in a
`--root` that points elsewhere (`mcd firstboot --root`)."""
from __future__ import annotations

import base64
import json

import pytest

from tests.node.harness import Node
from tests.node.machineconfigs import apply, file_entry, machine_config

pytestmark = pytest.mark.timeout(300)


def test_a_config_cannot_escape_the_root(node: Node) -> None:
    host = node.testinfra()
    # a root whose /etc links to a directory outside it
    host.run_expect([0], "mkdir -p /var/tmp/outside /srv/newroot && echo keep > "
                         "/var/tmp/outside/victim && ln -s /var/tmp/outside /srv/newroot/etc")
    config = {"ignition": {"version": "3.5.0"}, "storage": {"files": [
        {"path": "/etc/victim", "overwrite": True, "contents": {"source": "data:,pwned"}}]}}
    url = "data:application/json;base64," + base64.b64encode(json.dumps(config).encode()).decode()
    host.run_expect([0], f"mcd firstboot --url '{url}' --root /srv/newroot --no-reboot "
                         "--retry-for 5")
    assert host.file("/var/tmp/outside/victim").content_string == "keep\n"
    assert host.file("/srv/newroot/var/tmp/outside/victim").content_string == "pwned"
    a = machine_config("rendered-a", files=[file_entry("/etc/mct/a.conf", "a\n")])
    b = machine_config("rendered-b", files=[file_entry("/etc/mct/first.conf", "first\n")],
                       units=[{"name": "../../../../var/tmp/evil.service",
                               "contents": "[Service]\nExecStart=/bin/true\n"}])
    status, summary = apply(node, a, b)
    assert (status, summary["state"]) == (1, "Degraded"), summary
    assert "not a plain file name" in str(summary["reason"])
    assert not host.file("/var/tmp/evil.service").exists
    assert not host.file("/etc/mct/first.conf").exists  # refused before anything was written
