"""MCO's Ignition glue: version dispatch texts, spec 2 folding, gzipped payloads."""
from __future__ import annotations

import base64
import gzip
import json

import pytest

from machineconfig import mcoparse
from machineconfig.mcoparse import IgnitionConfigError


def raw(config: object) -> bytes:
    return json.dumps(config).encode()


@pytest.mark.parametrize("version, expected", [
    (None, mcoparse.INVALID_VERSION), ("", mcoparse.INVALID_VERSION),
    ("3.x", mcoparse.INVALID_VERSION), ("3.6.0", mcoparse.UNKNOWN_VERSION),
    ("3.7.0-experimental", mcoparse.UNKNOWN_VERSION), ("2.3.0", mcoparse.UNKNOWN_VERSION),
    ("1.0.0", mcoparse.UNKNOWN_VERSION), ("3.4.0+build", mcoparse.UNKNOWN_VERSION),
])
def test_version_dispatch_errors(version: str | None, expected: str) -> None:
    config = {"ignition": {} if version is None else {"version": version}}
    with pytest.raises(IgnitionConfigError) as err:
        mcoparse.ign_parse_wrapper(raw(config))
    assert str(err.value) == expected
    with pytest.raises(IgnitionConfigError) as err:
        mcoparse.parse_and_convert_config(raw(config))
    assert str(err.value) == "failed to parse Ignition config: " + expected


@pytest.mark.parametrize("version", ["3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0",
                                     "03.4.0", "3.4.0-"])
def test_spec3_versions_convert_to_internal(version: str) -> None:
    parsed = mcoparse.ign_parse_wrapper(raw({"ignition": {"version": version}}))
    assert parsed.major == 3
    assert parsed.config == {"ignition": {"version": "3.5.0"}}


def test_spec2_is_folded_then_converted() -> None:
    config = {"ignition": {"version": "2.2.0"}, "storage": {"files": [
        {"filesystem": "root", "path": "/etc/a", "contents": {"source": "data:,1"}, "mode": 420},
        {"filesystem": "root", "path": "/etc/a", "contents": {"source": "data:,2"}, "mode": 384},
    ]}}
    parsed = mcoparse.ign_parse_wrapper(raw(config))
    assert parsed.major == 2 and len(parsed.config["storage"]["files"]) == 2
    converted = mcoparse.parse_and_convert_config(raw(config))
    files = converted["storage"]["files"]
    assert [(f["path"], f["contents"]["source"], f["mode"]) for f in files] == [
        ("/etc/a", "data:,2", 384)]
    assert converted["ignition"]["version"] == "3.5.0"


def test_file_modes_above_0777_are_refused() -> None:
    config = {"ignition": {"version": "3.2.0"},
              "storage": {"files": [{"path": "/usr/bin/x", "mode": 0o4755}]}}
    with pytest.raises(IgnitionConfigError, match=r"^invalid mode 04755 for /usr/bin/x, "
                                                  r"cannot exceed 0777$"):
        mcoparse.check_machine_config_ignition(raw(config))


def test_results_are_fresh_copies() -> None:
    data = raw({"ignition": {"version": "3.2.0"}})
    first = mcoparse.parse_and_convert_config(data)
    first["ignition"]["version"] = "changed"
    assert mcoparse.parse_and_convert_config(data)["ignition"]["version"] == "3.5.0"


def test_gzipped_payloads() -> None:
    data = raw({"ignition": {"version": "3.2.0"}})
    expected = {"ignition": {"version": "3.5.0"}}
    assert mcoparse.parse_and_convert_gzipped_config(data) == expected
    assert mcoparse.parse_and_convert_gzipped_config(gzip.compress(data)) == expected
    assert mcoparse.parse_and_convert_gzipped_config(
        base64.b64encode(gzip.compress(data))) == expected


def test_a_lone_surrogate_escape_is_read_as_go_reads_it_not_a_crash() -> None:
    # json.loads keeps an unpaired "\udc80" escape as a lone surrogate, which has no UTF-8 form;
    # Go's decoder reads it as U+FFFD (hostile input is an error or a value, never a crash)
    obj = json.loads('{"ignition": {"version": "3.5.0"}, "storage": {"files": [{"path": '
                     '"/etc/x", "contents": {"source": "data:,a"}, "user": {"name": "c\\udc80"}}]}}')
    raw = mcoparse.raw_config(obj)
    assert raw is not None and json.loads(raw) == obj
    config = mcoparse.parse_and_convert_config(raw)
    assert config["storage"]["files"][0]["user"]["name"] == "c\ufffd"
