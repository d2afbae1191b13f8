"""What a joining machine is served: the pool's rendered config, ControllerConfig overrides, MCO's
appended files in MCO's order and format, and the conversion to the requested spec version.
Pure functions; reading the inputs is `mcs.sources`' job.
"""
from __future__ import annotations

import base64
import binascii
import copy
import json
import logging
import re
from typing import Any

from machineconfig import constants
from machineconfig.errors import InputError, MachineConfigError
from machineconfig.ignition.dataurl import encode_percent
from machineconfig.ignition.translate import Inexpressible, TranslationError, translate
from machineconfig.mcoparse import IgnitionConfigError
from machineconfig.rendered_config import RenderedConfig
from mcs.negotiate import version_less

log = logging.getLogger(__name__)

JSON = dict[str, Any]

# What Kubernetes allows as a MachineConfigPool's name (a cluster-scoped object's): a DNS-1123
# subdomain, dot-separated lowercase alphanumeric labels with inner '-', at most 253 characters. No
# such name holds '/', '..' or a leading '.', so it is safe as a path component.
POOL_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_POOL_NAME = 253


def valid_pool_name(name: str) -> bool:
    """True when `name` can name a pool; checked before a name touches a file system or a store."""
    return len(name) <= MAX_POOL_NAME and POOL_NAME.fullmatch(name) is not None

# On-node paths of what the server adds (MCO's pkg/server and daemon constants).
KUBELET_CA_PATH = "/etc/kubernetes/kubelet-ca.crt"
CLOUD_CA_PATH = "/etc/kubernetes/static-pod-resources/configmaps/cloud-config/ca-bundle.pem"
KUBECONFIG_PATH = "/etc/kubernetes/kubeconfig"
MC_CONTENT_PATH = "/etc/mcs-machine-config-content.json"

_KARGS_SINCE = "3.3.0"


class NotFound(MachineConfigError):
    """The pool, or the rendered config it names, is not there (HTTP 404). `str()` is safe to show."""


class ServeError(MachineConfigError):
    """The config exists but cannot be served (HTTP 500). `str()` is one line and holds no secret."""


class NotAcceptable(ServeError):
    """The config uses a field the requested spec cannot express (HTTP 406): refused, never dropped.
    `str()` is one line naming the field and the version; it depends only on the config and version."""


# -- Go encoding/json compatible output ------------------------------------------------------------

_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")


def embedded(text: str) -> bytes:
    """The bytes `text` becomes in a served config when a source writes it as a JSON string inside
    an inline file (node-credentials.json's server URL): JSON, then percent-encoding, then JSON again.
    Each step maps characters one by one, so the result can be spliced in place of another's."""
    in_file = go_json(text)[1:-1]
    in_url = encode_percent(in_file)[len("data:,"):]
    return go_json(in_url)[1:-1]


def go_json(value: Any, indent: int | None = None) -> bytes:
    """Serialize like Go's json.Marshal / MarshalIndent: UTF-8, HTML-safe escapes, keys in given order."""
    if indent is None:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        text = json.dumps(value, ensure_ascii=False, indent=indent, separators=(",", ": "))
    # These characters only ever occur inside JSON strings, so a textual pass is exact.
    text = _GO_ESCAPE_RE.sub(lambda m: _GO_ESCAPES[m.group(0)], text)
    return text.encode("utf-8")


# -- the MachineConfig object as Go marshals it -----------------------------------------------------

_META_ORDER = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
               "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
               "annotations", "ownerReferences", "finalizers", "managedFields")
_OWNER_ORDER = ("apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion")


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def _go_object(rc: RenderedConfig, config: Any, kernel_arguments: list[str] | None) -> JSON:
    """The MachineConfig in Go field order: omitempty metadata, all seven spec keys, `config` given."""
    out: JSON = {}
    for key in ("kind", "apiVersion"):
        if rc.object.get(key):
            out[key] = rc.object[key]
    meta: JSON = {}
    for key in _META_ORDER:
        val = rc.metadata.get(key)
        if val in (None, "", 0, [], {}):
            continue
        if key in ("labels", "annotations"):
            val = {k: val[k] for k in sorted(val)}
        elif key == "ownerReferences":
            val = [{k: ref[k] for k in _OWNER_ORDER if k in ref} for ref in val]
        meta[key] = val
    out["metadata"] = meta
    spec = rc.spec
    out["spec"] = {"osImageURL": spec.os_image_url,
                   "baseOSExtensionsContainerImage": spec.base_os_extensions_container_image,
                   "config": config, "kernelArguments": kernel_arguments, "extensions": spec.extensions,
                   "fips": spec.fips, "kernelType": spec.kernel_type}
    return out


# -- building the served config ---------------------------------------------------------------------

def _file_entry(path: str, contents: bytes, mode: int = 0o644) -> JSON:
    # Go field order of an Ignition 3 file: Node (overwrite, path) then contents and mode.
    return {"overwrite": True, "path": path, "contents": {"source": encode_percent(contents)}, "mode": mode}


def _files(config: JSON) -> list[JSON]:
    storage = config.setdefault("storage", {})
    files: list[JSON] = storage.setdefault("files", [])
    return files


def _override_or_append(config: JSON, path: str, data: bytes) -> None:
    """MCO's addDataAndMaybeAppendToIgnition: replace the source if the path exists, else append."""
    if not data:
        return
    for entry in _files(config):
        if entry.get("path") == path:
            entry.setdefault("contents", {})["source"] = encode_percent(data)
            return
    _files(config).append(_file_entry(path, data))


def _cc_bytes(cc: JSON, key: str) -> bytes:
    raw = (cc.get("spec") or {}).get(key) or ""
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError, TypeError) as e:
        raise ServeError(f"controller config: spec.{key} is not base64") from e


def migrate_kernel_args(config: JSON, kernel_arguments: list[str] | None, version: str) -> list[str] | None:
    """Below 3.3 Ignition has no kernelArguments: the MC spec's kernel arguments with shouldExist
    moved in; shouldNotExist is refused."""
    if not version_less(version, _KARGS_SINCE):
        return kernel_arguments
    kargs = config.pop("kernelArguments", None) or {}
    if kargs.get("shouldNotExist"):
        raise ServeError(f"cannot serve version {version} with Ignition kernelArguments.shouldNotExist set")
    for karg in kargs.get("shouldExist") or []:
        kernel_arguments = list(kernel_arguments or []) + [karg]
    return kernel_arguments


def _empty_config(version: str) -> JSON:
    return {"ignition": {"version": version}}


def build_served(config_name: str, mc: RenderedConfig | JSON, cc: JSON, kubeconfig: bytes | None, version: str,
                 registry_cas: list[tuple[str, bytes]] | None = None,
                 extra_files: list[tuple[str, bytes, int]] | None = None) -> bytes:
    """The bytes served for one rendered MachineConfig at one spec version (MCO's GetConfig + convert).

    Without a kubeconfig (store mode: there is no API server) that file is left out; `extra_files`
    (path, contents, mode) go just before the encapsulated config, which stays last. `mc` is
    the rendered config as the store gives it, or as read from the bootstrap directory.
    """
    try:
        rc = RenderedConfig.of(mc)
    except InputError as e:
        raise ServeError(f"machine config {config_name}: {e.message}") from e
    if rc.config_raw is None:
        raise ServeError(f"machine config {config_name} has no Ignition config")
    try:
        kernel_arguments = rc.spec.kernel_arguments
        # MCO's ParseAndConvertConfig, parsed once per rendered config; ours to change: a copy.
        config = copy.deepcopy(rc.ignition)
    except InputError as e:  # a spec field of the wrong type (RenderedConfig.spec names it)
        raise ServeError(f"machine config {config_name} has an invalid spec: {e}") from e
    except IgnitionConfigError as e:
        raise ServeError(f"rendered config {config_name} is not valid Ignition: {one_line(str(e))}") from e

    kernel_arguments = migrate_kernel_args(config, kernel_arguments, version)
    _override_or_append(config, KUBELET_CA_PATH, _cc_bytes(cc, "kubeAPIServerServingCAData"))
    _override_or_append(config, CLOUD_CA_PATH, _cc_bytes(cc, "cloudProviderCAData"))

    annotations = {
        constants.CURRENT_CONFIG_ANNOTATION: config_name,
        constants.DESIRED_CONFIG_ANNOTATION: config_name,
        constants.FIRST_PIVOT_CONFIG_ANNOTATION: config_name,
        constants.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: constants.STATE_DONE,
    }
    files = _files(config)
    files.append(_file_entry(constants.NODE_ANNOTATIONS_PATH, go_json(_sorted_keys(annotations))))
    if kubeconfig is not None:
        files.append(_file_entry(KUBECONFIG_PATH, kubeconfig))
    # The full object as served (kernel arguments migrated, config as stored), a debugging aid.
    stored = _sorted_keys(json.loads(rc.config_raw))
    files.append(_file_entry(MC_CONTENT_PATH, go_json(_go_object(rc, stored, kernel_arguments), indent=4)))
    for registry, ca in registry_cas or ():
        files.append(_file_entry(f"/etc/docker/certs.d/{registry}/ca.crt", ca))
    for path, contents, mode in extra_files or ():
        files.append(_file_entry(path, contents, mode))
    # Always last: what machine-config-daemon-firstboot applies (kargs, OS image, extensions).
    files.append(_file_entry(constants.ENCAPSULATED_CONFIG_PATH,
                             go_json(_go_object(rc, _empty_config(version), kernel_arguments))))

    return go_json(convert(config, version))


def convert(config: JSON, version: str) -> JSON:
    """The one place a config changes spec version (3.5 canonical dict to 2.2, 3.0-3.4 or 3.6)."""
    try:
        return translate(config, version)
    except Inexpressible as e:
        raise NotAcceptable(f"config uses {e.field}, which spec {version} cannot express") from e
    except TranslationError as e:
        raise ServeError(f"cannot convert to spec {version}: {one_line(str(e))}") from e


def one_line(text: str) -> str:
    """`text` on one line, at most 300 characters (error texts a client or a log may show)."""
    return " ".join(text.split())[:300]
