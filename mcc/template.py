"""The template controller: ignition-templates/<role>/<NN-name>/<platform>/{files,units,extensions}
rendered with sandboxed Jinja2 from a ControllerConfig into the 00-/01- MachineConfigs of each role,
with MCO's platform-directory precedence, zero-byte removal and common/ templates in the first MC.
"""
from __future__ import annotations

import base64
import json
import logging
import re
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import jinja2
import yaml
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

from machineconfig.constants import (
    API_VERSION,
    CONTROLLER_VERSION,
    ENCAPSULATED_CONFIG_PATH,
    GENERATED_BY_CONTROLLER_VERSION_ANNOTATION,
    INTERNAL_IGNITION_VERSION,
    ROLE_LABEL,
)
from machineconfig.errors import InputError, MachineConfigError
from machineconfig.ignition.dataurl import encode_percent
from machineconfig.yamlload import MAX_FILE_BYTES, safe_load

log = logging.getLogger(__name__)

# The tree shipped with this repository (DESIGN.md: ignition-templates/ at the top level).
DEFAULT_TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "ignition-templates"
ROLES = ("master", "worker", "arbiter")
COMMON_DIR = "common"
BASE_DIR = "_base"
ON_PREM_DIR = "on-prem"
ALT_DNS_DIR = "cloud-platform-alt-dns"
SNO_DIR = "sno"
TNF_DIR = "two-node-with-fencing"
KINDS = ("files", "units", "extensions")

# infra.status.platformStatus.type values MCO knows; each maps to its own directory (Go's
# strings.ToLower of the type); any other non-empty type renders as "none".
KNOWN_PLATFORMS = ("AWS", "Azure", "BareMetal", "GCP", "OpenStack", "Libvirt", "oVirt", "VSphere",
                   "KubeVirt", "PowerVS", "None", "External", "Nutanix")
ON_PREM_PLATFORMS = ("BareMetal", "oVirt", "OpenStack", "VSphere", "Nutanix")
# Platforms whose kubelet runs with an external cloud-controller-manager.
EXTERNAL_CLOUD_PLATFORMS = ("AWS", "Azure", "GCP", "OpenStack", "VSphere", "Nutanix", "PowerVS",
                            "KubeVirt", "External")
CREDENTIAL_PROVIDERS = {"AWS": "ecr-credential-provider.yaml", "GCP": "gcr-credential-provider.yaml",
                        "Azure": "acr-credential-provider.yaml"}
# The "Intermediate" TLS profile, the default of apiservers.config.openshift.io/cluster.
TLS_MIN_VERSION = "VersionTLS12"
TLS_CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)
# Paths on the node that templates refer to, exposed as `constants.<name>`.
TEMPLATE_CONSTANTS = {
    "APIServerURLFile": "/etc/kubernetes/apiserver-url.env",
    "MCDBinary": "/usr/local/bin/mcd",
    "EncapsulatedConfigFile": ENCAPSULATED_CONFIG_PATH,
}
EMPTY_PULL_SECRET = '{"auths":{}}'

# kind -> template file name -> (rendered text, template path for error messages)
Picked = dict[str, dict[str, tuple[str, str]]]


# --- ControllerConfig accessors -------------------------------------------------------------

def controller_config_spec(controller_config: Mapping[str, Any]) -> dict[str, Any]:
    """Accept either a whole ControllerConfig object or just its spec."""
    spec = controller_config.get("spec", controller_config)
    if not isinstance(spec, Mapping):
        raise InputError("ControllerConfig spec must be a mapping", path="spec")
    return dict(spec)


def _platform_status(spec: Mapping[str, Any]) -> dict[str, Any]:
    return dict(((spec.get("infra") or {}).get("status") or {}).get("platformStatus") or {})


def platform_type(spec: Mapping[str, Any]) -> str:
    """The platform type as written in the ControllerConfig (e.g. `AWS`, `BareMetal`)."""
    ptype = _platform_status(spec).get("type") or ""
    if not ptype:
        raise InputError("cannot generate MachineConfigs when no platformStatus.type is set",
                         path="spec.infra.status.platformStatus.type")
    if ptype == BASE_DIR:
        raise InputError("platform _base unsupported", path="spec.infra.status.platformStatus.type")
    return str(ptype)


def platform_dir(spec: Mapping[str, Any]) -> str:
    ptype = platform_type(spec)
    if ptype in KNOWN_PLATFORMS:
        return ptype.lower()
    log.warning("the controller config referenced an unsupported platform: %s", ptype)
    return "none"


def control_plane_topology(spec: Mapping[str, Any]) -> str:
    status = (spec.get("infra") or {}).get("status") or {}
    return str(status.get("controlPlaneTopology") or "")


def _alt_dns_available(spec: Mapping[str, Any]) -> bool:
    """Cloud platform with cluster-hosted DNS whose load-balancer IPs are already known."""
    ps = _platform_status(spec)
    key = {"AWS": "aws", "GCP": "gcp", "Azure": "azure"}.get(str(ps.get("type")))
    lb = ((ps.get(key) or {}) if key else {}).get("cloudLoadBalancerConfig") or {}
    return bool(lb.get("dnsType") == "ClusterHosted" and lb.get("clusterHosted"))


def platform_dirs(spec: Mapping[str, Any]) -> list[str]:
    """Platform directories in increasing precedence, as MCO's getPaths."""
    dirs = [BASE_DIR]
    if platform_type(spec) in ON_PREM_PLATFORMS:
        dirs.append(ON_PREM_DIR)
    if _alt_dns_available(spec):
        dirs.append(ALT_DNS_DIR)
    dirs.append(platform_dir(spec))
    topology = control_plane_topology(spec)
    if topology == "SingleReplica":
        dirs.append(SNO_DIR)
    if topology == "DualReplica":
        dirs.append(TNF_DIR)
    return dirs


# --- Jinja ----------------------------------------------------------------------------------

def _b64decode(value: str | bytes) -> str:
    """ControllerConfig byte fields (CA bundles) arrive base64-encoded, as Go marshals []byte;
    PEM text written by hand into a YAML input is passed through."""
    text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
    if text.lstrip().startswith("-----BEGIN"):
        return text
    return base64.b64decode("".join(text.split())).decode("utf-8")


E = TypeVar("E", bound=SandboxedEnvironment)


def _environment(root: Path, kind: type[E]) -> E:
    """The project's templates use SandboxedEnvironment; user templates the BoundedEnvironment."""
    env = kind(loader=jinja2.FileSystemLoader(str(root)), undefined=jinja2.StrictUndefined,
               keep_trailing_newline=True, autoescape=False)
    env.filters["b64decode"] = _b64decode
    env.filters["b64encode"] = lambda s: base64.b64encode(str(s).encode()).decode("ascii")
    env.filters["tojson_compact"] = lambda v: json.dumps(v, separators=(",", ":"))
    env.filters["quote_toml"] = lambda s: json.dumps(str(s))
    return env


def _error_line(exc: BaseException, filename: str) -> int | None:
    """Jinja rewrites tracebacks so template frames carry the template's own file and line."""
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == Path(filename)]
    return lines[-1] if lines else None


def _input_error(e: jinja2.TemplateError, path: Path) -> InputError:
    """A template's error as the file's one-line InputError (syntax errors carry their line;
    Jinja rewrites tracebacks so the others' frames name the template's line)."""
    if isinstance(e, jinja2.TemplateSyntaxError):
        return InputError(f"template syntax error: {e.message}", file=str(path), line=e.lineno)
    if isinstance(e, jinja2.UndefinedError):
        return InputError(f"undefined variable: {e.message}", file=str(path),
                          line=_error_line(e, str(path)))
    return InputError(f"template error: {e}", file=str(path), line=_error_line(e, str(path)))


def render_file(env: SandboxedEnvironment, root: Path, path: Path, context: Mapping[str, Any]) -> str:
    """Render one template; syntax errors and undefined variables name the file and line."""
    name = path.relative_to(root).as_posix()
    try:
        template = env.get_template(name)
        return template.render(**context)
    except jinja2.TemplateError as e:
        raise _input_error(e, path) from e


# A user template's render is bounded (the file is then that file's error, never a hang or a
# memory blow-up of `mcc render` / `mcc start`): its output and every string, list or number it
# builds stay under the input size limit, loop iterations are counted, and the render has a
# wall-clock budget checked at every iteration.
MAX_TEMPLATE_ITERATIONS = 2_000_000
MAX_TEMPLATE_SECONDS = 20.0
_ITER = "mcc_bounded_iter"
_JOIN = "mcc_bounded_join"
_BIG_NUMBER = re.compile(r"\d{%d,}" % len(str(MAX_FILE_BYTES)))
# Filters whose numeric argument sets the size of what they build.
_SIZED_FILTERS = ("center", "indent", "batch", "slice", "wordwrap", "truncate")
_SIZED_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


class TemplateLimitError(SecurityError, MachineConfigError):
    """A user template went over one of the render bounds."""


def _size(value: Any) -> int:
    if isinstance(value, (str, bytes, list, tuple)):
        return len(value)
    return 1


def _check_format(text: Any) -> None:
    if isinstance(text, str) and _BIG_NUMBER.search(text):
        raise TemplateLimitError(f"format width over {MAX_FILE_BYTES}")


class _Bounds(NodeTransformer):
    """Every `{% for %}` iterates through the budget; every `~` joins through the size check."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        visited = self.generic_visit(node)
        assert isinstance(visited, nodes.For)
        node = visited
        node.iter = nodes.Call(nodes.Name(_ITER, "load"), [node.iter], [], None, None,
                               lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        visited = self.generic_visit(node)
        assert isinstance(visited, nodes.Concat)
        node = visited
        return nodes.Call(nodes.Name(_JOIN, "load"), [nodes.List(node.nodes)], [], None, None,
                          lineno=node.lineno)


class BoundedEnvironment(SandboxedEnvironment):
    """The sandbox (no attribute escapes, `range` capped at MAX_RANGE) plus size, iteration
    and time bounds; one environment per render (the budget is the render's)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.iterations = 0
        self.deadline = time.monotonic() + MAX_TEMPLATE_SECONDS
        self.globals[_ITER] = self._bounded_iter
        self.globals[_JOIN] = self._bounded_join
        for name in _SIZED_FILTERS:
            self.filters[name] = self._sized_filter(self.filters[name])
        self.filters["format"] = self._format_filter(self.filters["format"])

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        result = _Bounds().visit(tree)
        assert isinstance(result, nodes.Template)
        return result

    def tick(self) -> None:
        self.iterations += 1
        if self.iterations > MAX_TEMPLATE_ITERATIONS:
            raise TemplateLimitError(f"more than {MAX_TEMPLATE_ITERATIONS} loop iterations")
        if self.iterations % 1024 == 0 and time.monotonic() > self.deadline:
            raise TemplateLimitError(f"rendering took more than {MAX_TEMPLATE_SECONDS:g} s")

    def _bounded_iter(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self.tick()
            yield item

    def _bounded_join(self, parts: list[Any]) -> str:
        texts = [str(p) for p in parts]
        if sum(len(t) for t in texts) > MAX_FILE_BYTES:
            raise TemplateLimitError(f"a string longer than {MAX_FILE_BYTES} bytes")
        return "".join(texts)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if (isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int)
                        and len(seq) * count > MAX_FILE_BYTES):
                    raise TemplateLimitError(f"a value longer than {MAX_FILE_BYTES} bytes")
        elif operator == "**":
            if (isinstance(left, int) and isinstance(right, int)
                    and abs(left) > 1 and right > 0
                    and abs(left).bit_length() * right > 8 * MAX_FILE_BYTES):
                raise TemplateLimitError(f"a number larger than {MAX_FILE_BYTES} bytes")
        elif operator == "+":
            if _size(left) + _size(right) > MAX_FILE_BYTES:
                raise TemplateLimitError(f"a value longer than {MAX_FILE_BYTES} bytes")
        elif operator == "%":
            _check_format(left)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name in _SIZED_METHODS:
                for arg in list(args) + list(kwargs.values()):
                    if isinstance(arg, int) and arg > MAX_FILE_BYTES:
                        raise TemplateLimitError(f"a string longer than {MAX_FILE_BYTES} bytes")
        __self.tick()
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format(getattr(value, "__self__", None))
        return wrapped

    @staticmethod
    def _sized_filter(func: Callable[..., Any]) -> Callable[..., Any]:
        def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
            for arg in list(args) + list(kwargs.values()):
                if isinstance(arg, int) and not isinstance(arg, bool) and arg > MAX_FILE_BYTES:
                    raise TemplateLimitError(f"filter argument {arg} over {MAX_FILE_BYTES}")
            return func(value, *args, **kwargs)
        return bounded

    @staticmethod
    def _format_filter(func: Callable[..., Any]) -> Callable[..., Any]:
        def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
            _check_format(value)
            return func(value, *args, **kwargs)
        return bounded


def render_user_template(path: Path, values: Mapping[str, Any]) -> str:
    """Render a user MachineConfig written as *.yaml.j2; `values` keys are variables (also
    `values`). Bounded (BoundedEnvironment): a template over a bound is an InputError naming
    the file (and line where known), like any other bad input."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise InputError(f"cannot read template: {e.strerror}", file=str(path)) from e
    if size > MAX_FILE_BYTES:
        raise InputError(f"template larger than {MAX_FILE_BYTES} bytes", file=str(path))
    env = _environment(path.parent, BoundedEnvironment)
    context = {**values, "values": dict(values)}
    name = path.name
    try:
        template = env.get_template(name)
        out: list[str] = []
        total = 0
        for chunk in template.generate(**context):
            total += len(chunk)
            if total > MAX_FILE_BYTES:
                raise TemplateLimitError(f"output larger than {MAX_FILE_BYTES} bytes")
            out.append(chunk)
            env.tick()
        return "".join(out)
    except TemplateLimitError as e:
        raise InputError(f"template over a render limit: {e}", file=str(path),
                         line=_error_line(e, str(path))) from e
    except jinja2.TemplateError as e:
        raise _input_error(e, path) from e
    except (OverflowError, MemoryError, RecursionError, ArithmeticError, TypeError,
            ValueError) as e:
        raise InputError(f"template error: {type(e).__name__}: {' '.join(str(e).split())}",
                         file=str(path), line=_error_line(e, str(path))) from e


def template_context(controller_config: Mapping[str, Any], role: str, *,
                     values: Mapping[str, Any] | None = None,
                     pull_secret: str | None = None) -> dict[str, Any]:
    """Variables every template sees: the ControllerConfig spec keys (JSON spelling) plus derived ones."""
    spec = controller_config_spec(controller_config)
    _check_byte_fields(spec)
    ptype = platform_type(spec)
    derived: dict[str, Any] = {
        "spec": spec, "role": role, "platform": platform_dir(spec), "platformType": ptype,
        "controlPlaneTopology": control_plane_topology(spec),
        "cloudProvider": "external" if ptype in EXTERNAL_CLOUD_PLATFORMS else "",
        "credentialProviderConfigFlag": _credential_provider_flag(ptype),
        "pullSecret": _compact_json(pull_secret or EMPTY_PULL_SECRET),
        "tlsMinVersion": TLS_MIN_VERSION, "tlsCipherSuites": list(TLS_CIPHER_SUITES),
        "constants": dict(TEMPLATE_CONSTANTS), "values": dict(values or {}),
    }
    # Optional spec fields default to empty so templates can test them without `is defined`.
    defaults: dict[str, Any] = {"proxy": {}, "additionalTrustBundle": "", "ipFamilies": "IPv4",
                                "networkType": "OVNKubernetes", "images": {}, "dns": {}, "infra": {},
                                "releaseImage": "", "cloudProviderConfig": "", "cloudProviderCAData": ""}
    # `pullSecret` is the secret's JSON text, shadowing the spec's reference as in MCO's RenderConfig.
    context = {**defaults, **spec, **derived}
    for key, value in (values or {}).items():
        if key in context:
            raise InputError(f"value {key!r} would hide the template variable of the same name",
                             path=f"values.{key}")
        context[key] = value
    return context


# ControllerConfig []byte fields the templates decode (Go marshals them as base64)
BYTE_FIELDS = ("kubeAPIServerServingCAData", "rootCAData", "cloudProviderCAData",
               "additionalTrustBundle")


def _check_byte_fields(spec: Mapping[str, Any]) -> None:
    """A CA bundle that is neither PEM text nor base64 of UTF-8 text is the input's error, named
    by its field (not a decoding error deep inside a template)."""
    for name in BYTE_FIELDS:
        value = spec.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise InputError(f"must be a base64 string, got {type(value).__name__}",
                             path=f"spec.{name}")
        if value.lstrip().startswith("-----BEGIN"):
            continue
        try:
            base64.b64decode("".join(value.split()), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"neither PEM nor base64 of text ({e})", path=f"spec.{name}") from e


def _credential_provider_flag(ptype: str) -> str:
    config = CREDENTIAL_PROVIDERS.get(ptype)
    return ("--image-credential-provider-bin-dir=/usr/libexec/kubelet-image-credential-provider-plugins"
            f" --image-credential-provider-config=/etc/kubernetes/credential-providers/{config}"
            if config else "")


def _compact_json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), separators=(",", ":"))
    except ValueError as e:
        raise InputError(f"pull secret is not JSON: {e}") from e


def pull_secret_from_secret(secret: Mapping[str, Any]) -> str:
    """The docker config JSON of a kubernetes.io/dockerconfigjson Secret (data or stringData)."""
    string_data = (secret.get("stringData") or {}).get(".dockerconfigjson")
    if string_data:
        return str(string_data)
    data = (secret.get("data") or {}).get(".dockerconfigjson")
    if not data:
        raise InputError("secret has no .dockerconfigjson", path="data")
    return base64.b64decode(str(data)).decode("utf-8")


# --- Discovery and precedence ---------------------------------------------------------------

def _collect(env: SandboxedEnvironment, root: Path, dirs: list[Path],
             context: Mapping[str, Any]) -> Picked:
    """Walk platform dirs lowest precedence first; later templates replace same-named earlier ones."""
    picked: Picked = {kind: {} for kind in KINDS}
    for pdir in dirs:
        for kind in KINDS:
            kdir = pdir / kind
            if not kdir.is_dir():
                continue
            for path in sorted(p for p in kdir.rglob("*") if p.is_file()):
                if path.stat().st_size == 0:
                    # A zero-byte template means "do not create" what a lower dir provided.
                    picked[kind].pop(path.name, None)
                    continue
                rendered = render_file(env, root, path, context)
                # Output that is only whitespace means the template chose not to apply here.
                if rendered.strip():
                    picked[kind][path.name] = (rendered, str(path))
    return picked


def render_role(controller_config: Mapping[str, Any], templates_dir: Path, role: str, *,
                values: Mapping[str, Any] | None = None,
                pull_secret: str | None = None) -> list[dict[str, Any]]:
    """The template MachineConfigs of one role (custom roles render the worker templates)."""
    templates_dir = Path(templates_dir)
    spec = controller_config_spec(controller_config)
    dirs_order = platform_dirs(spec)
    env = _environment(templates_dir, SandboxedEnvironment)
    context = template_context(controller_config, role, values=values, pull_secret=pull_secret)
    # Custom pools reuse the worker templates, as MCO does.
    role_path = templates_dir / (role if role in ROLES else "worker")
    if not role_path.is_dir():
        raise InputError(f"no templates for role {role}", file=str(role_path))
    configs = []
    common_added = False
    for mc_dir in sorted(p for p in role_path.iterdir() if p.is_dir()):
        dirs: list[Path] = []
        if not common_added:
            dirs += [templates_dir / COMMON_DIR / d for d in dirs_order]
            common_added = True
        dirs += [mc_dir / d for d in dirs_order]
        picked = _collect(env, templates_dir, [d for d in dirs if d.is_dir()], context)
        configs.append(_machine_config(controller_config, role, mc_dir.name, picked))
    return configs


def render_templates(controller_config: Mapping[str, Any], templates_dir: Path,
                     values: Mapping[str, Any] | None = None, *,
                     pull_secret: str | None = None) -> list[dict[str, Any]]:
    """All template MachineConfigs (master, worker, and arbiter for HighlyAvailableArbiter), by name."""
    templates_dir = Path(templates_dir)
    if not templates_dir.is_dir():
        raise InputError("templates directory not found", file=str(templates_dir))
    spec = controller_config_spec(controller_config)
    configs: list[dict[str, Any]] = []
    for role_path in sorted(p for p in templates_dir.iterdir() if p.is_dir()):
        role = role_path.name
        if role == COMMON_DIR or role.startswith("."):
            continue
        if role == "arbiter" and control_plane_topology(spec) != "HighlyAvailableArbiter":
            continue
        configs += render_role(controller_config, templates_dir, role, values=values,
                               pull_secret=pull_secret)
    return sorted(configs, key=lambda mc: str(mc["metadata"]["name"]))


# --- Templates to Ignition ------------------------------------------------------------------

def _load_entry(text: str, source: str) -> dict[str, Any]:
    try:
        data = safe_load(text, source)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(f"rendered template is not valid YAML: {getattr(e, 'problem', e)}",
                         file=source, line=mark.line + 1 if mark else None) from e
    if not isinstance(data, dict):
        raise InputError("rendered template must be a YAML mapping", file=source)
    return data


def _check_keys(entry: Mapping[str, Any], allowed: set[str], source: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise InputError(f"unknown key(s) {', '.join(unknown)}", file=source)


def template_file_to_ignition(entry: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A files/*.yaml entry (path, mode, contents.inline|source, user, group) as an Ignition file."""
    _check_keys(entry, {"path", "mode", "contents", "user", "group", "overwrite", "filesystem"}, source)
    path = entry.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise InputError(f"file template needs an absolute path, got {path!r}", file=source)
    out: dict[str, Any] = {"path": path}
    contents = entry.get("contents") or {}
    if "inline" in contents:
        out["contents"] = {"source": encode_percent(str(contents["inline"]).encode("utf-8"))}
    elif "source" in contents:
        out["contents"] = {"source": str(contents["source"])}
    else:
        out["contents"] = {"source": encode_percent(b"")}
    if entry.get("mode") is not None:
        mode = entry["mode"]
        if not isinstance(mode, int):
            raise InputError(f"file mode must be an integer (YAML octal like 0644), got {mode!r}",
                             file=source)
        out["mode"] = mode
    out["overwrite"] = bool(entry.get("overwrite", True))
    for who in ("user", "group"):
        if entry.get(who):
            out[who] = dict(entry[who])
    return out


def template_unit_to_ignition(entry: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A units/*.yaml entry (name, enabled, mask, contents, dropins) as an Ignition unit."""
    _check_keys(entry, {"name", "enabled", "mask", "contents", "dropins"}, source)
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise InputError("unit template needs a name", file=source)
    out: dict[str, Any] = {"name": name}
    if entry.get("contents") is not None:
        out["contents"] = str(entry["contents"])
    for flag in ("enabled", "mask"):
        if entry.get(flag) is not None:
            out[flag] = bool(entry[flag])
    dropins = [{"name": str(d["name"]), "contents": str(d.get("contents", ""))}
               for d in entry.get("dropins") or []]
    if dropins:
        out["dropins"] = dropins
    return out


def _merge_unit(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """Ignition merge for two units of one name: child fields win, dropins merge by name."""
    merged = {**parent, **{k: v for k, v in child.items() if k != "dropins"}}
    dropins = {d["name"]: d for d in parent.get("dropins", [])}
    for d in child.get("dropins", []):
        dropins[d["name"]] = {**dropins.get(d["name"], {}), **d}
    if dropins:
        merged["dropins"] = list(dropins.values())
    return merged


def build_ignition(picked: Picked) -> dict[str, Any]:
    """Files and units in template-file-name order, accumulated with Ignition's merge rules."""
    files: dict[str, dict[str, Any]] = {}
    for text, source in (picked["files"][n] for n in sorted(picked["files"])):
        f = template_file_to_ignition(_load_entry(text, source), source)
        files[f["path"]] = {**files.get(f["path"], {}), **f}
    units: dict[str, dict[str, Any]] = {}
    for text, source in (picked["units"][n] for n in sorted(picked["units"])):
        u = template_unit_to_ignition(_load_entry(text, source), source)
        units[u["name"]] = _merge_unit(units[u["name"]], u) if u["name"] in units else u
    config: dict[str, Any] = {"ignition": {"version": INTERNAL_IGNITION_VERSION}}
    if files:
        config["storage"] = {"files": list(files.values())}
    if units:
        config["systemd"] = {"units": list(units.values())}
    return config


def generated_machine_config(name: str, role: str, config: dict[str, Any], *,
                             extensions: list[str] | None = None) -> dict[str, Any]:
    """A controller-generated MachineConfig: role label, version annotation, blank osImageURL."""
    return {
        "apiVersion": API_VERSION, "kind": "MachineConfig",
        "metadata": {"name": name, "labels": {ROLE_LABEL: role},
                     "annotations": {GENERATED_BY_CONTROLLER_VERSION_ANNOTATION: CONTROLLER_VERSION}},
        "spec": {"osImageURL": "", "baseOSExtensionsContainerImage": "", "config": config,
                 "kernelArguments": [], "extensions": sorted(extensions or []), "fips": False,
                 "kernelType": ""},
    }


def _machine_config(controller_config: Mapping[str, Any], role: str, name: str,
                    picked: Picked) -> dict[str, Any]:
    extensions = list(picked["extensions"])
    mc = generated_machine_config(name, role, build_ignition(picked), extensions=extensions)
    meta = controller_config.get("metadata") or {}
    if controller_config.get("kind") == "ControllerConfig" and meta.get("name"):
        owner = {"apiVersion": API_VERSION, "kind": "ControllerConfig", "name": meta["name"],
                 "controller": True, "blockOwnerDeletion": True}
        if meta.get("uid"):
            owner["uid"] = meta["uid"]
        mc["metadata"]["ownerReferences"] = [owner]
    return mc
