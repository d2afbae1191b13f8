"""The pointer config (`mcs pointer`): merge source, CA inline, token in httpHeaders, valid per our
own validator, and the CLI's error handling.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from machineconfig.ignition.dataurl import decode
from machineconfig.ignition.parse import parse
from mcs.cli import main
from mcs.pointer import PointerError, pointer_config, render_pointer

CA = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
URL = "https://api-int.example.com:22623/config/worker"


def test_pointer_without_token() -> None:
    config = pointer_config(URL, CA)
    assert config == {"ignition": {
        "config": {"merge": [{"source": URL}]},
        "security": {"tls": {"certificateAuthorities": [{"source": config["ignition"]["security"]["tls"]
                                                         ["certificateAuthorities"][0]["source"]}]}},
        "version": "3.5.0"}}
    source = config["ignition"]["security"]["tls"]["certificateAuthorities"][0]["source"]
    assert source.startswith("data:text/plain;charset=utf-8;base64,") and decode(source) == CA


def test_pointer_with_token_is_valid_ignition() -> None:
    raw = render_pointer(URL, CA, "abc123")
    assert raw.endswith(b"}\n") and raw.count(b"\n") == 1
    result = parse(raw)
    assert result.version == "3.5.0"
    assert not [line for line in result.report.lines() if line.startswith("error")]
    merge = result.config["ignition"]["config"]["merge"][0]
    assert merge["httpHeaders"] == [{"name": "Authorization", "value": "Bearer abc123"}]
    assert merge["source"] == URL


@pytest.mark.parametrize(("url", "ca", "token"), [
    ("ftp://host/config/worker", CA, None), ("https:///config/worker", CA, None), (URL, b"not a cert", None),
    (URL, CA, "two words"),
])
def test_pointer_refuses(url: str, ca: bytes, token: str | None) -> None:
    with pytest.raises(PointerError):
        pointer_config(url, ca, token)


def test_cli_pointer(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(CA)
    assert main(["pointer", "--url", URL, "--ca", str(ca), "--token", "t0k"]) == 0
    out = json.loads(capsysbinary.readouterr().out)
    assert out["ignition"]["config"]["merge"][0]["httpHeaders"][0]["value"] == "Bearer t0k"
    assert main(["pointer", "--url", URL, "--ca", str(tmp_path / "missing")]) == 1
    assert b"mcs pointer:" in capsysbinary.readouterr().err


def test_cli_bootstrap_argument_errors(tmp_path: Path) -> None:
    kc = tmp_path / "kubeconfig"
    kc.write_text("x")
    assert main(["bootstrap", "--server-basedir", str(tmp_path), "--bootstrap-kubeconfig", str(kc),
                 "--cert", str(kc)]) == 2
    assert main(["bootstrap", "--server-basedir", str(tmp_path), "--bootstrap-kubeconfig", str(kc),
                 "--insecure-port", "off"]) == 2
    bad_tokens = tmp_path / "tokens"
    bad_tokens.write_text("worker\n")
    assert main(["bootstrap", "--server-basedir", str(tmp_path), "--bootstrap-kubeconfig", str(kc),
                 "--insecure-port", "0", "--bind-address", "127.0.0.1", "--token-file", str(bad_tokens)]) == 1
    with pytest.raises(SystemExit):
        main(["bootstrap", "--secure-port", "70000"])
