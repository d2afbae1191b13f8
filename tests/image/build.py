"""The project's container image, built offline as an OCI layout: a base layer made from a
debootstrap rootfs (Debian bookworm minbase with python3 and Debian's python3-dbus; the node
harness's recipe mechanism, cached by the recipe's hash) and an application layer holding the
venv at /opt/machine-config and the ignition templates, as manifests/Containerfile lays them out.

Nothing is pulled from a container registry: the base comes from the Debian mirror, the Python
dependencies are wheels fetched once by pip (pinned to the versions installed here, cached by
their hash), the project's wheel is built from the working tree. No compiler, apt cache or docs
end up in the image. `scripts/image` is the command; tests/image use it as a cached fixture.
"""
from __future__ import annotations

import argparse
import fcntl
import gzip
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.image.oci import LAYER_MTIME, Layer, read_image, write_layer, write_layout
from tests.node.rootfs import CACHE_DIR, REPO_ROOT, ROOTFS_RECIPE, HarnessError, ensure_rootfs, run

log = logging.getLogger(__name__)

# Everything that decides the base layer; its hash names the cached rootfs and layer blob.
BASE_RECIPE: dict[str, object] = {
    "suite": "bookworm",
    "variant": "minbase",
    "mirror": ROOTFS_RECIPE["mirror"],
    # python3-dbus is the daemon's D-Bus binding (Debian's build: no compiler in the image)
    "include": sorted(["python3", "python3-dbus"]),
    "purpose": "container image base",
    # bump when customise_base() changes
    "customise": 1,
}
# bump when the application layer's recipe (install_application) changes
APP_RECIPE_VERSION = 3

VENV = "/opt/machine-config"
TEMPLATES = "/usr/share/machine-config/ignition-templates"
USER = "1000:1000"  # mcc and mcs run as this user (the daemon's pod runs as root)
# the Python the base carries (wheels are chosen for it, not for the builder's interpreter)
# (bookworm: CPython 3.11, glibc 2.36; pip does not widen a --platform, so every older
# manylinux tag is listed)
TARGET_PYTHON = ("3.11", "cp311")
TARGET_PLATFORMS = tuple([f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)]
                         + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"])
SOURCES = ("pyproject.toml", "README.md", "machineconfig", "mcc", "mcs", "mcd", "ignition-templates")
# the runtime fills these in; their contents never go into a layer
RUNTIME_DIRS = ("dev", "proc", "sys", "run", "tmp", "var/tmp")
# and the base layer leaves out ldconfig's cache of file dates (the only difference between
# two debootstraps of the same packages)
BASE_EXCLUDE = RUNTIME_DIRS + ("var/cache/ldconfig",)
BASE_LAYER_VERSION = 2  # bump when the base layer is packed differently
KEEP_LAYERS = 4
DEFAULT_REF = "localhost/machine-config:{version}"


def project_version() -> str:
    return str(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"])


# ---- the base ----------------------------------------------------------------------------------

def customise_base(root: Path) -> None:
    """Trim the debootstrap tree to what a container needs and add the image's user."""
    run(["chroot", str(root), "useradd", "--uid", "1000", "--user-group", "--no-create-home",
         "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "machine-config"])
    for doc in (root / "usr/share/doc").iterdir():
        # the copyright files stay (the licences travel with the binaries); the rest is docs
        for entry in doc.iterdir() if doc.is_dir() and not doc.is_symlink() else ():
            if entry.name != "copyright":
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for tree in ("usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian",
                 "usr/share/linda", "var/lib/apt/lists", "var/cache/apt", "var/cache/debconf",
                 "var/log"):
        shutil.rmtree(root / tree, ignore_errors=True)
        (root / tree).mkdir(mode=0o755)
    for leftover in ("etc/hostname", "etc/resolv.conf", "etc/machine-id"):
        # the runtime provides these; debootstrap copied the build host's
        (root / leftover).unlink(missing_ok=True)


def base_layer() -> tuple[Layer, Path]:
    """The base layer's blob (cached) and the rootfs it was packed from."""
    rootfs = ensure_rootfs(BASE_RECIPE, customise_base, name="image-rootfs")
    cache = CACHE_DIR / f"image-base-{rootfs.name.rsplit('-', 1)[1]}-{BASE_LAYER_VERSION}"
    layer = _cached_layer(cache, lambda blobs: write_layer(
        rootfs, blobs, exclude=BASE_EXCLUDE,
        created_by=f"debootstrap {BASE_RECIPE['variant']} {BASE_RECIPE['suite']} "
                   f"--include={','.join(BASE_RECIPE['include'])}"))  # type: ignore[arg-type]
    return layer, rootfs


def _cached_layer(cache: Path, make: Callable[[Path], Layer]) -> Layer:
    meta = cache / "layer.json"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if meta.exists():
            layer = Layer.from_json(json.loads(meta.read_text()))
            if layer.path.is_file():
                os.utime(meta)  # recently used: pruned last
                return layer
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        layer = make(cache)
        tmp = cache / ".layer.json.tmp"
        tmp.write_text(json.dumps(layer.to_json(), sort_keys=True))
        os.replace(tmp, meta)
        _prune(cache)
        return layer


def _prune(latest: Path) -> None:
    """Keep the KEEP_LAYERS most recently used layers of latest's kind (every source change
    makes a new application layer; worktrees sharing the cache each keep theirs a while)."""
    kind = latest.name.rsplit("-", 1)[0] + "-"
    entries = sorted((p for p in CACHE_DIR.glob(f"{kind}*") if (p / "layer.json").exists()),
                     key=lambda p: (p / "layer.json").stat().st_mtime, reverse=True)
    for stale in entries[KEEP_LAYERS:]:
        log.info("pruning %s", stale)
        shutil.rmtree(stale, ignore_errors=True)


# ---- the Python side ---------------------------------------------------------------------------

def runtime_requirements() -> list[str]:
    """The project's dependencies and its kube extra. The daemon extra (dbus-python) is the
    base's Debian python3-dbus, seen through the venv's system site-packages."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return sorted([*project["dependencies"], *project["optional-dependencies"]["kube"]])


def pinned_versions() -> dict[str, str]:
    """The versions installed where this runs (the ones the tests ran with): the image gets the
    same. dbus-python is Debian's, the project is built from the tree."""
    pins = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower().replace("_", "-") not in ("machine-config", "dbus-python"):
            pins[name.lower()] = dist.version
    return dict(sorted(pins.items()))


def _pip(*args: str, env: dict[str, str] | None = None) -> None:
    """The builder's own pip (its index settings, its cache); a failure names the command."""
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise HarnessError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stderr[-2000:]}")


def ensure_wheelhouse() -> Path:
    """Binary wheels of every runtime dependency (and pip itself, which installs them in the
    image and is then left out), for the base's Python; fetched once per requirement set."""
    requirements = runtime_requirements()
    pins = pinned_versions()
    pip_version = importlib.metadata.version("pip")
    key = hashlib.sha256(json.dumps([requirements, pins, pip_version, TARGET_PYTHON,
                                     TARGET_PLATFORMS],
                                    sort_keys=True).encode()).hexdigest()[:16]
    target = CACHE_DIR / f"image-wheels-{key}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        work = CACHE_DIR / f"build-image-wheels-{key}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        constraints = work / "constraints.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
        version, abi = TARGET_PYTHON
        platforms = [arg for platform in TARGET_PLATFORMS for arg in ("--platform", platform)]
        log.info("fetching wheels for %s", ", ".join(requirements))
        try:
            _pip("download", "--quiet", "--only-binary", ":all:", "--python-version", version,
                 "--implementation", "cp", "--abi", abi, *platforms,
                 "--constraint", str(constraints), "--dest", str(work),
                 *requirements, f"pip=={pip_version}")
        except HarnessError:
            shutil.rmtree(work, ignore_errors=True)
            raise
        constraints.unlink()
        (work / ".complete").write_text(json.dumps(requirements))
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
        return target


def source_digest() -> str:
    """A hash of every file the application layer is made of (what the Containerfile copies)."""
    sha = hashlib.sha256()
    for path in _source_files():
        sha.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0")
        sha.update(oct(path.stat().st_mode & 0o111).encode() + b"\0")
        sha.update(hashlib.sha256(path.read_bytes()).digest())
    return sha.hexdigest()


def _source_files() -> list[Path]:
    files = []
    for name in SOURCES:
        top = REPO_ROOT / name
        if top.is_file():
            files.append(top)
            continue
        for path in sorted(top.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.append(path)
    return files


def _stage_sources(stage: Path) -> None:
    for path in _source_files():
        target = stage / path.relative_to(REPO_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


# What runs inside a private mount namespace: the base, read-only, under an overlay whose upper
# directory becomes the application layer; the staged wheels and templates on /mnt.
INSTALL_SCRIPT = r"""
set -eu
base=$1 upper=$2 work=$3 merged=$4 stage=$5 pip_wheel=$6 project_wheel=$7
mount -t overlay overlay -o "lowerdir=$base,upperdir=$upper,workdir=$work" "$merged"
mount --bind "$stage" "$merged/mnt"
mount -o remount,bind,ro "$merged/mnt"
chroot "$merged" /usr/bin/python3 -m venv --without-pip --system-site-packages {venv}
chroot "$merged" {venv}/bin/python "/mnt/wheels/$pip_wheel/pip" install --quiet --no-index \
    --find-links /mnt/wheels --no-compile --no-cache-dir --disable-pip-version-check \
    --root-user-action ignore "/mnt/dist/$project_wheel[daemon,kube]"
# hash-checked .pyc: valid whatever the layer's mtimes, written once (the root fs is read-only)
chroot "$merged" {venv}/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
    {venv}/lib
# wheels may ship their extensions with debug info (uvloop's: 12 of its 14 MB)
find "$merged{venv}" -name '*.so' -type f -exec strip --strip-unneeded {{}} +
mkdir -p "$merged{templates_parent}"
cp -R "$stage/ignition-templates" "$merged{templates}"
chmod -R u+rwX,go+rX,go-w "$merged{templates}" "$merged{venv}"
""".format(venv=VENV, templates=TEMPLATES, templates_parent=str(Path(TEMPLATES).parent))


def application_layer(base_rootfs: Path) -> Layer:
    """The venv with the project and its dependencies, and the templates: one layer, cached by
    a hash of the sources, the wheels and this recipe."""
    wheels = ensure_wheelhouse()
    key = hashlib.sha256(json.dumps(
        [source_digest(), wheels.name, base_rootfs.name, APP_RECIPE_VERSION]).encode()
    ).hexdigest()[:16]
    return _cached_layer(CACHE_DIR / f"image-app-{key}",
                         lambda blobs: _build_application_layer(base_rootfs, wheels, blobs))


def _build_application_layer(base_rootfs: Path, wheels: Path, blobs: Path) -> Layer:
    with tempfile.TemporaryDirectory(prefix="mc-image-", dir=CACHE_DIR) as tmp_name:
        tmp = Path(tmp_name)
        stage, upper, work, merged = (tmp / d for d in ("stage", "upper", "work", "merged"))
        for directory in (stage / "dist", upper, work, merged):
            directory.mkdir(parents=True)
        _stage_sources(stage / "src")
        # the wheel's zip dates (and so its hash, which pip records) from SOURCE_DATE_EPOCH
        _pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(stage / "dist"),
             str(stage / "src"), env={"SOURCE_DATE_EPOCH": str(LAYER_MTIME)})
        project_wheel = next((stage / "dist").glob("*.whl")).name
        shutil.copytree(wheels, stage / "wheels", copy_function=_link_or_copy)
        shutil.copytree(REPO_ROOT / "ignition-templates", stage / "ignition-templates",
                        ignore=shutil.ignore_patterns("__pycache__"))
        pip_wheel = next((stage / "wheels").glob("pip-*.whl")).name
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", INSTALL_SCRIPT, "sh",
             str(base_rootfs), str(upper), str(work), str(merged), str(stage), pip_wheel,
             project_wheel], capture_output=True, text=True, env=env, timeout=1800)
        if proc.returncode != 0:
            raise HarnessError(f"installing the project into the image failed "
                               f"({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        _check_upper(upper)
        return write_layer(upper, blobs, exclude=RUNTIME_DIRS + ("root", "mnt"), owner_root=True,
                           created_by=f"venv {VENV} with {project_wheel}[daemon,kube]; "
                                      f"templates at {TEMPLATES}")


def _link_or_copy(src: str, dst: str) -> object:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _check_upper(upper: Path) -> None:
    """The install only adds files: a whiteout (a deleted or replaced base file) is a bug."""
    for path in upper.rglob("*"):
        st = path.lstat()
        if not (path.is_dir() or path.is_file() or path.is_symlink()):
            raise HarnessError(f"the install removed or replaced {path.relative_to(upper)} "
                               f"of the base (mode {st.st_mode:o})")


# ---- the image ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Built:
    layout: Path
    refs: list[str]
    manifest_digest: str
    compressed_bytes: int
    uncompressed_bytes: int
    seconds: float


def image_config() -> dict[str, object]:
    return {
        "User": USER,
        "Env": [f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8"],
        "WorkingDir": "/",
    }


def build(output: Path, refs: Sequence[str]) -> Built:
    """Build (or reuse the cached layers of) the image and write it as an OCI layout."""
    started = time.monotonic()
    if os.geteuid() != 0:
        raise HarnessError("building the image needs root (debootstrap, overlay mounts, chroot)")
    missing = [tool for tool in ("debootstrap", "unshare", "chroot", "mount", "strip")
               if shutil.which(tool) is None]
    if missing:
        raise HarnessError(f"building the image needs {', '.join(missing)} "
                           "(apt-get install debootstrap util-linux coreutils binutils)")
    base, base_rootfs = base_layer()
    app = application_layer(base_rootfs)
    version = project_version()
    labels = {"org.opencontainers.image.title": "machine-config",
              "org.opencontainers.image.version": version,
              "org.opencontainers.image.base.name": f"debian:{BASE_RECIPE['suite']} (debootstrap)"}
    digest = write_layout(output, [base, app], config=image_config(), refs=refs, labels=labels)
    uncompressed = 0
    for layer in (base, app):
        with gzip.open(layer.path, "rb") as plain:
            uncompressed += sum(len(chunk) for chunk in iter(lambda: plain.read(1 << 20), b""))
    return Built(output, list(refs), digest, base.size + app.size, uncompressed,
                 time.monotonic() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/image",
        description="Build machine-config's container image offline as an OCI image layout "
                    "(as root; the first build runs debootstrap and fetches wheels once).")
    parser.add_argument("--output", type=Path, default=Path("machine-config-image"),
                        help="the OCI layout directory to write (default: ./machine-config-image)")
    parser.add_argument("--tag", action="append", dest="tags", metavar="REF",
                        help="a name for the image in the layout's index (repeatable; default "
                             + DEFAULT_REF.format(version="VERSION") + ")")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="image: %(message)s")
    refs = args.tags or [DEFAULT_REF.format(version=project_version())]
    try:
        built = build(args.output.resolve(), refs)
        read_image(built.layout)
    except (HarnessError, OSError) as e:
        print(f"scripts/image: {e}", file=sys.stderr)
        return 1
    print(f"{built.layout}: {built.manifest_digest}\n"
          f"  size {built.compressed_bytes / 1e6:.1f} MB compressed, "
          f"{built.uncompressed_bytes / 1e6:.1f} MB unpacked; built in {built.seconds:.1f} s")
    for ref in built.refs:
        print(f"  {ref}   e.g. skopeo copy oci:{built.layout}:{ref} containers-storage:{ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
