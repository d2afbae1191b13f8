"""Gzip data URLs are decompressed as a capped stream, and no decoded bytes are cached: a gzip
bomb is refused with bounded memory (measured in a subprocess by its peak RSS), many large files
do not pile up in memory, and the error names the file.
"""
from __future__ import annotations

import base64
import functools
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from machineconfig.disruption import decoded_contents
from machineconfig.ignition.dataurl import (ContentsTooLargeError, DataURLError, contents_digest,
                                            decode_contents, gunzip_capped)

ROOT = Path(__file__).resolve().parents[3]
GIB = 1 << 30


def gzip_of_zeros(size: int) -> bytes:
    """gzip of `size` zero bytes (a multiple of 16 MiB) as repeated 16 MiB members, which a
    gzip reader concatenates: quick to build, never `size` bytes in memory."""
    member = _zeros_member()
    assert size % (16 << 20) == 0
    return member * (size // (16 << 20))


@functools.cache
def _zeros_member() -> bytes:
    return gzip.compress(bytes(16 << 20), compresslevel=9)


def gzip_entry(path: str, packed: bytes) -> dict[str, object]:
    return {"path": path, "contents": {"compression": "gzip", "source":
            "data:;base64," + base64.b64encode(packed).decode()}}


# The child decodes the entries in the JSON file it is given and prints its peak RSS (KiB).
CHILD = """
import json, resource, sys
from machineconfig.disruption import decoded_contents
entries = json.load(open(sys.argv[1]))
errors = []
for entry in entries:
    try:
        decoded_contents(entry)
    except Exception as err:
        errors.append(f"{type(err).__name__}: {err}")
print(json.dumps({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "errors": errors}))
"""


def run_child(tmp_path: Path, entries: list[dict[str, object]]) -> dict[str, object]:
    spec = tmp_path / "entries.json"
    spec.write_text(json.dumps(entries))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(spec)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_a_gzip_bomb_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    bomb = gzip_entry("/etc/bomb.conf", gzip_of_zeros(GIB))  # ~1.4 MB of config
    result = run_child(tmp_path, [bomb])
    assert result["errors"] == ["ContentsTooLargeError: file /etc/bomb.conf: contents exceed "
                                "268435456 bytes after gzip decompression (the limit, "
                                "MACHINECONFIG_MAX_FILE_BYTES)"]
    # the cap (256 MiB) plus the interpreter; today's code needs over 2 GiB
    assert int(str(result["maxrss_kib"])) < 450 * 1024


def test_decoded_files_are_not_kept_in_memory(tmp_path: Path) -> None:
    # 40 distinct files of 16 MiB each: 640 MiB if every decoded file were cached
    entries = [gzip_entry(f"/etc/f{i}", gzip_of_zeros(16 << 20) + gzip.compress(str(i).encode()))
               for i in range(40)]
    result = run_child(tmp_path, entries)
    assert result["errors"] == []
    # measured 284-331 MiB (one file at a time, plus the allocator's slack); caching every
    # decoded file would add 640 MiB on top
    assert int(str(result["maxrss_kib"])) < 450 * 1024


def test_the_limit_is_configurable_and_names_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MACHINECONFIG_MAX_FILE_BYTES", "1000")
    entry = gzip_entry("/etc/big", gzip.compress(b"x" * 1001))
    with pytest.raises(ContentsTooLargeError, match="^file /etc/big: contents exceed 1000 bytes"):
        decoded_contents(entry)
    assert decoded_contents(gzip_entry("/etc/ok", gzip.compress(b"x" * 1000))) == b"x" * 1000
    with pytest.raises(ContentsTooLargeError, match="file /etc/plain"):
        decode_contents("data:," + "y" * 1001, "", "/etc/plain")
    monkeypatch.setenv("MACHINECONFIG_MAX_FILE_BYTES", "lots")
    with pytest.raises(DataURLError, match="not a byte count"):
        decoded_contents(entry)


def test_streamed_gunzip_matches_gzip_decompress() -> None:
    for data in (b"", b"a", b"hello\n" * 100_000, bytes(range(256)) * 5000):
        assert gunzip_capped(gzip.compress(data), 1 << 30) == data
    two_members = gzip.compress(b"one ") + gzip.compress(b"two")
    assert gunzip_capped(two_members, 100) == gzip.decompress(two_members) == b"one two"
    with pytest.raises(DataURLError, match="truncated"):
        gunzip_capped(gzip.compress(b"abc" * 1000)[:-12], 1 << 20, "/etc/t")
    with pytest.raises(DataURLError, match="bad gzip data"):
        decode_contents("data:,not%20gzip", "gzip", "/etc/g")


def test_digests_are_what_is_cached() -> None:
    size, digest = contents_digest("data:,abc", "", "/etc/a")
    assert (size, len(digest)) == (3, 64)
    assert contents_digest.cache_info().currsize >= 1
