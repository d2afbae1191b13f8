"""The container image as an OCI layout: every digest matches, the layers are reproducible, and
the three programs run from the unpacked layers as the image's own user, with the templates the
controller renders from and without a compiler, apt cache or docs."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.image.build import TEMPLATES, USER, VENV, Built
from tests.image.conftest import REF
from tests.image.oci import LAYER_MTIME, Layer, LayoutError, read_image, write_layer, write_layout

REPO = Path(__file__).resolve().parents[2]
# a guard against the image growing by accident: today's image is well under it
MAX_COMPRESSED_MB = 65  # 55 MB until cryptography (5 MB) became a runtime dependency


def in_image(root: Path, *argv: str, user: str = USER) -> subprocess.CompletedProcess[str]:
    """Run argv inside the unpacked image as the image config runs it (its Env, its User)."""
    config = json.loads((root.parent / "config.json").read_text())
    env = dict(item.split("=", 1) for item in config["config"]["Env"])
    return subprocess.run(["chroot", f"--userspec={user}", str(root), *argv],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="session")
def image_root(image_layout: Built, unpacked_image: Path) -> Path:
    image = read_image(image_layout.layout, REF)
    (unpacked_image.parent / "config.json").write_text(json.dumps(image.config))
    return unpacked_image


# ---- the layout ------------------------------------------------------------------------------

def test_layout_digests_and_config(image_layout: Built) -> None:
    image = read_image(image_layout.layout, REF)  # checks every digest, size and diff_id
    assert image.manifest_digest == image_layout.manifest_digest
    assert json.loads((image_layout.layout / "oci-layout").read_text()) == \
        {"imageLayoutVersion": "1.0.0"}
    assert len(image.layer_paths) == 2
    config = image.config["config"]
    assert isinstance(config, dict)
    assert config["User"] == "1000:1000"
    assert f"PATH={VENV}/bin:" in " ".join(config["Env"])
    assert image.config["os"] == "linux" and image.config["architecture"] == "amd64"
    assert image.compressed_size == image_layout.compressed_bytes
    assert image.compressed_size < MAX_COMPRESSED_MB * 1e6, image.compressed_size


def test_layers_hold_no_devices_and_one_mtime(image_layout: Built) -> None:
    for path in read_image(image_layout.layout, REF).layer_paths:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                assert member.isreg() or member.isdir() or member.issym() or member.islnk(), \
                    member.name
                assert member.mtime == LAYER_MTIME, member.name
                assert not member.name.startswith(("dev/", "proc/", "tmp/")), member.name


def test_tampered_blob_is_named(image_layout: Built, tmp_path: Path) -> None:
    copy = tmp_path / "layout"
    shutil.copytree(image_layout.layout, copy)
    image = read_image(copy, REF)
    config_digest = image.manifest["config"]["digest"]  # type: ignore[index]
    config_blob = copy / "blobs" / "sha256" / config_digest.split(":")[1]
    config_blob.write_bytes(config_blob.read_bytes().replace(b"1000:1000", b"0000:0000"))
    with pytest.raises(LayoutError, match=f"manifest config: blob content hashes to .* not "
                                          f"{config_digest}"):
        read_image(copy, REF)


def test_write_layer_is_reproducible(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "b").write_text("b\n")
    (tree / "etc" / "a").write_text("a\n")
    (tree / "link").symlink_to("etc/a")
    (tree / "hard").hardlink_to(tree / "etc" / "a")
    (tree / "tmp" / "junk").mkdir(parents=True)
    first = write_layer(tree, tmp_path / "blobs1", created_by="test", exclude=["tmp"])
    (tree / "etc" / "a").touch()  # a newer mtime, same content
    second = write_layer(tree, tmp_path / "blobs2", created_by="test", exclude=["tmp"])
    assert (first.digest, first.diff_id) == (second.digest, second.diff_id)
    with tarfile.open(first.path, "r:gz") as tar:
        names = [(m.name, m.type) for m in tar]
    assert names == [("etc", tarfile.DIRTYPE), ("etc/a", tarfile.REGTYPE),
                     ("etc/b", tarfile.REGTYPE), ("hard", tarfile.LNKTYPE),
                     ("link", tarfile.SYMTYPE), ("tmp", tarfile.DIRTYPE)]
    with gzip.open(first.path) as plain:
        assert plain.read(1)  # a valid gzip stream
    layout = tmp_path / "layout"
    digests = {write_layout(layout, [first], config={}, refs=["x:1"], labels={})
               for _ in range(2)}
    assert len(digests) == 1
    image = read_image(layout, "x:1")
    assert image.layer_paths[0].name == first.digest.split(":")[1]
    assert Layer.from_json(first.to_json()) == first


# ---- the unpacked image ------------------------------------------------------------------------

@pytest.mark.parametrize("program", ["mcc", "mcs", "mcd"])
def test_entrypoint_help(image_root: Path, program: str) -> None:
    proc = in_image(image_root, program, "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"usage: {program}" in proc.stdout


def test_daemon_dependencies_import_as_root(image_root: Path) -> None:
    proc = in_image(image_root, "python", "-c",
                    "import dbus, dbus.mainloop.glib, uvloop, lightkube, pydantic_core, yaml;"
                    "from mcd import cli; print(yaml.CSafeLoader.__name__)", user="0:0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "CSafeLoader"


def test_every_module_of_the_project_imports_in_the_image(image_root: Path) -> None:
    """A dependency only the test venv has (cryptography once was) fails here, not in a pod."""
    code = ("import importlib, pkgutil\n"
            "names = []\n"
            "for top in ('machineconfig', 'mcc', 'mcs', 'mcd'):\n"
            "    package = importlib.import_module(top)\n"
            "    for info in pkgutil.walk_packages(package.__path__, top + '.'):\n"
            "        importlib.import_module(info.name)\n"
            "        names.append(info.name)\n"
            "print(len(names))\n")
    proc = in_image(image_root, "python", "-c", code, user="0:0")
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) > 100


def test_controller_renders_from_the_image_templates(image_root: Path, tmp_path: Path) -> None:
    """`mcc render` in the image, from the templates the image carries, gives the rendered
    names (content hashes) the working tree gives."""
    inputs = image_root / "tmp" / tmp_path.name
    shutil.copytree(REPO / "examples" / "cluster", inputs,
                    ignore=shutil.ignore_patterns("*.j2", "README.md"))
    try:
        proc = in_image(image_root, "mcc", "render", f"/tmp/{tmp_path.name}",
                        "--templates", TEMPLATES, "-o", "json")
        assert proc.returncode == 0, proc.stderr
        here = subprocess.run(
            [sys.executable, "-c", "import sys; from mcc.cli import main; sys.exit(main())",
             "render", str(inputs), "--templates", str(REPO / "ignition-templates"), "-o", "json"],
            capture_output=True, text=True, timeout=300, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        assert here.returncode == 0, here.stderr
    finally:
        shutil.rmtree(inputs)
    rendered = json.loads(proc.stdout)["items"]
    names = sorted(item["metadata"]["name"] for item in rendered)
    assert names == sorted(item["metadata"]["name"] for item in json.loads(here.stdout)["items"])
    worker = next(item for item in rendered if item["metadata"]["name"].startswith("rendered-worker-"))
    paths = {f["path"] for f in worker["spec"]["config"]["storage"]["files"]}
    assert "/usr/local/sbin/dynamic-system-reserved-calc.sh" in paths  # from the templates


def test_image_is_trimmed(image_root: Path) -> None:
    for tool in ("gcc", "cc", "make", "pip", "pip3"):
        assert in_image(image_root, "sh", "-c", f"command -v {tool}").returncode != 0, tool
    assert not any((image_root / "var/lib/apt/lists").iterdir())
    assert not any((image_root / "var/cache/apt").iterdir())
    assert not any((image_root / "usr/share/man").iterdir())
    leftovers = [p for p in (image_root / "usr/share/doc").rglob("*")
                 if p.is_file() and p.name != "copyright"]
    assert leftovers == []
    # compiled ahead of time: the controller's and server's root filesystem is read-only
    assert list((image_root / VENV.lstrip("/")).rglob("mcc/__pycache__/cli.*.pyc"))
