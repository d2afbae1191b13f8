"""The config the hosts must be on (--mc-config): a rendered MachineConfig from a file, or the one
a served Ignition config carries, from a file or fetched from the server.
"""
from __future__ import annotations

import gzip
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

# what the server appends to a served config: the whole rendered MachineConfig, and (as MCO)
# the same with an empty Ignition config, for the first-boot completion
MC_CONTENT = "/etc/mcs-machine-config-content.json"
ENCAPSULATED = "/etc/ignition-machine-config-encapsulated.json"
ACCEPT = "application/vnd.coreos.ignition+json;version=3.5.0"


class ConfigError(ValueError):
    """--mc-config names nothing usable; the message says which file, URL or field."""


def _decode_source(source: str) -> bytes:
    from machineconfig.ignition.dataurl import decode
    return bytes(decode(source))


def file_contents(entry: dict[str, Any]) -> bytes:
    """What an Ignition storage.files entry writes (data URL, optionally gzip)."""
    contents = entry.get("contents") or {}
    source = contents.get("source")
    data = _decode_source(str(source)) if source else b""
    if contents.get("compression") == "gzip":
        data = gzip.decompress(data)
    return data


def _token(path: str, pool: str) -> str:
    lines = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    if len(lines) == 1 and len(lines[0]) == 1:
        return lines[0][0]
    for parts in lines:
        if len(parts) == 2 and parts[0] == pool:
            return parts[1]
    raise ConfigError(f"--mc-token-file {path}: no token for pool {pool!r}")


def _fetch(url: str, ca: str | None, token_file: str | None) -> bytes:
    if not ca or not token_file:
        raise ConfigError(f"--mc-config {url}: needs --mc-ca and --mc-token-file")
    pool = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    request = urllib.request.Request(url, headers={
        "Accept": ACCEPT, "Authorization": f"Bearer {_token(token_file, pool)}"})
    context = ssl.create_default_context(cafile=ca)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as err:
        raise ConfigError(f"--mc-config {url}: HTTP {err.code}") from None
    except OSError as err:
        raise ConfigError(f"--mc-config {url}: {err}") from None


def load_expected(where: str, ca: str | None = None, token_file: str | None = None
                  ) -> dict[str, Any]:
    """The rendered MachineConfig named by --mc-config (a file or the server's URL)."""
    if where.startswith(("https://", "http://")):
        text = _fetch(where, ca, token_file).decode()
    else:
        try:
            text = Path(where).read_text()
        except OSError as err:
            raise ConfigError(f"--mc-config {where}: {err.strerror}") from None
    try:
        doc = json.loads(text)
    except ValueError:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"--mc-config {where}: neither JSON nor YAML: {err}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"--mc-config {where}: not a MachineConfig or an Ignition config")
    if "ignition" in doc and "spec" not in doc:
        # a served config: the rendered MachineConfig travels in it as a file
        files = (doc.get("storage") or {}).get("files") or []
        entry = next((f for f in files if f.get("path") == MC_CONTENT), None)
        if entry is None:
            raise ConfigError(f"--mc-config {where}: Ignition config without {MC_CONTENT}")
        doc = json.loads(file_contents(entry))
    if doc.get("kind") != "MachineConfig" or not (doc.get("metadata") or {}).get("name"):
        raise ConfigError(f"--mc-config {where}: $.kind must be MachineConfig with a "
                          "$.metadata.name")
    config = (doc.get("spec") or {}).get("config")
    if isinstance(config, str):
        doc["spec"]["config"] = json.loads(config)
    if not isinstance(doc["spec"].get("config"), dict):
        raise ConfigError(f"--mc-config {where}: no $.spec.config")
    return dict(doc)
