"""Go's path.Clean/path.Join semantics and Ignition's absolute-path rule (validatePath)."""
from __future__ import annotations

ERR_NO_PATH = "path not specified"
ERR_RELATIVE = "path not absolute"
ERR_DIRTY = "path is not fully simplified"


def go_clean(path: str) -> str:
    """path.Clean: collapse //, . and .., drop trailing /; "" becomes "."."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    cleaned = "/".join(out)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def go_join(*parts: str) -> str:
    """path.Join: join the non-empty parts with / and clean."""
    joined = "/".join(p for p in parts if p)
    return go_clean(joined) if joined else ""


def validate_path(path: str) -> str | None:
    """None for a clean absolute path, else upstream's error text."""
    if path == "":
        return ERR_NO_PATH
    if not path.startswith("/"):
        return ERR_RELATIVE
    if go_clean(path) != path:
        return ERR_DIRTY
    return None
