"""mcd.systemd against a real manager: the unit file states asked many at a time (one
ListUnitFilesByPatterns call) are the answers GetUnitFileState gives unit by unit."""
from __future__ import annotations

import json

import pytest

from tests.node.harness import Node

pytestmark = pytest.mark.timeout(300)

COMPARE = r"""
import json, sys
from mcd.systemd import Systemd
names = json.loads(sys.argv[1])
systemd = Systemd()
print(json.dumps([systemd.unit_file_states(names), {n: systemd.unit_file_state(n) for n in names}]))
"""


def test_batched_unit_file_states_are_the_per_unit_answers(node: Node) -> None:
    node.put("/etc/systemd/system/mct-on.service",
             "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
             "Alias=mct-alias.service\n")
    node.put("/etc/systemd/system/mct-off.service",
             "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n")
    node.put("/etc/systemd/system/mct-static.service", "[Service]\nExecStart=/bin/true\n")
    node.put("/etc/systemd/system/mct-tmpl@.service",
             "[Service]\nExecStart=/bin/true %i\n[Install]\nWantedBy=multi-user.target\n")
    node.put("/root/compare.py", COMPARE)
    node.nsenter(["systemctl", "daemon-reload"])
    node.nsenter(["systemctl", "enable", "mct-on.service", "mct-tmpl@one.service"])
    node.nsenter(["systemctl", "mask", "systemd-tmpfiles-clean.timer"])
    names = ["mct-on.service", "mct-alias.service", "mct-off.service", "mct-static.service",
             "mct-tmpl@.service", "mct-tmpl@one.service", "mct-tmpl@two.service",
             "systemd-tmpfiles-clean.timer", "ssh.service", "sshd.service", "dbus.service",
             "getty@tty1.service", "multi-user.target", "mct-missing.service",
             "mct\\x2dmissing.service", "kubelet.service"]
    out = node.nsenter(["/opt/machine-config/venv/bin/python", "/root/compare.py",
                        json.dumps(names)]).stdout
    batched, single = json.loads(out.strip().splitlines()[-1])
    assert batched == single
    # the cases the comparison is about are there
    assert single["mct-on.service"] == "enabled" and single["mct-off.service"] == "disabled"
    assert single["systemd-tmpfiles-clean.timer"] == "masked"
    assert single["mct-missing.service"] == "not-found"
