"""mcs's status page: /status.json only for the admin token (not a pool's bootstrap token), TLS
only, no data and strict headers on the HTML shell; then the page itself in headless Chromium
(Debian's `chromium`) against the real server over a cluster caught mid-rollout: the numbers in
the DOM are the store's, hostile node strings stay text, and a screenshot is kept in
$MC_ARTIFACTS_DIR (default .artifacts/ in the repository), which CI keeps."""
from __future__ import annotations

import json
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from machineconfig import status
from mcs.tokens import AdminToken, PoolTokens
from tests.support.statuskit import (DRIFT_MESSAGE, HOSTILE_NAME, HOSTILE_REASON, Cluster, mid_rollout,
                                 slots_of)
from tests.support.statuspage import PageDOM, artifacts_dir, chromium
from tests.support.statusserver import Running, running_mcs
from tests.unit.server.test_mcs_server import open_url


SLOT_HOLDER = "zincati<img src=x onerror=alert(2)>"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Cluster, Running, Path]]:
    cluster = mid_rollout(tmp_path)
    with running_mcs(f"local:{cluster.inputs}", tmp_path / "state", tmp_path) as server:
        yield cluster, server, tmp_path / "state"


def get(url: str, ca: Path | None, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    ctx = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
    try:
        with open_url(urllib.request.Request(url, headers=headers or {}), ctx) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_the_json_needs_the_admin_token_and_tls(served: tuple[Cluster, Running, Path]) -> None:
    cluster, server, sdir = served
    url = f"{server.https}/status.json"
    admin = AdminToken(sdir).ensure()
    assert (sdir / "admin-token").stat().st_mode & 0o777 == 0o600
    code, headers, body = get(url, server.ca_file)
    assert code == 401 and body == b"the status page's admin token is required " \
                                   b"(mcs admin-token --state SDIR)\n"
    assert headers["WWW-Authenticate"].startswith("Bearer ")
    pool_token = PoolTokens(sdir).token_for("worker")
    assert pool_token
    for wrong in (pool_token, admin[:-1], ""):
        assert get(url, server.ca_file, {"Authorization": f"Bearer {wrong}"})[0] == 401
    code, headers, body = get(url, server.ca_file, {"Authorization": f"Bearer {admin}"})
    assert code == 200 and headers["Cache-Control"] == "no-store"
    doc = json.loads(body)
    assert doc == status.read(cluster.store).to_dict() | {"generated": doc["generated"]}
    # the plain listener serves none of it
    for path in ("/status", "/status.json", "/status.js"):
        code, _, body = get(f"{server.http}{path}", None, {"Authorization": f"Bearer {admin}"})
        assert (code, body) == (404, b"not found: the status page is served over TLS only\n")


def test_the_html_shell_holds_no_data_and_forbids_inline_script(
        served: tuple[Cluster, Running, Path]) -> None:
    cluster, server, _ = served
    code, headers, body = get(f"{server.https}/status", server.ca_file)
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    text = body.decode()
    assert "n1" not in text and cluster.second not in text and "<script src=\"/status.js\"" in text
    code, headers, js = get(f"{server.https}/status.js", server.ca_file)
    assert code == 200 and headers["Content-Type"].startswith("text/javascript")
    # strings from the store become text nodes only
    assert b"innerHTML" not in js and b"insertAdjacentHTML" not in js and b"textContent" in js


def test_chromium_shows_the_rollout_as_the_store_has_it(
        served: tuple[Cluster, Running, Path], tmp_path: Path) -> None:
    cluster, server, sdir = served
    token = AdminToken(sdir).ensure()
    # FleetLock slots: n3 took one and went Degraded, a Zincati host that is no node holds one
    for holder in ("n3", SLOT_HOLDER):
        assert slots_of(cluster.store).acquire_reboot_lock("default", holder, 5)[0] == "taken"
    shot = artifacts_dir() / "status-page.png"
    shot.unlink(missing_ok=True)
    dom = PageDOM()
    dom.feed(chromium(f"{server.https}/status#token={token}", tmp_path / "chromium", shot))
    assert dom.body_state == "loaded", "the page did not render /status.json"
    assert shot.stat().st_size > 10_000
    model = status.read(cluster.store)
    for view in model.pools:
        assert dom.pools[view.name] == {
            "machines": str(view.machines), "updated": str(view.updated),
            "updating": str(view.updating), "degraded": str(view.degraded),
            "ready": str(view.ready), "current": view.current_config,
            "target": view.target_config, "window": view.window or "-"}
        assert dom.progress[view.name] == (str(view.updated), str(view.machines))
    assert dom.pools["worker"] == {
        "machines": "4", "updated": "0", "updating": "1", "degraded": "2", "ready": "0",
        "current": cluster.first, "target": cluster.second, "window": "-"}
    assert {name: cells[2] for name, cells in dom.nodes.items()} == \
        {n.name: n.phase for n in model.nodes}
    assert dom.nodes["n1"][4:6] == [cluster.first, cluster.second]
    # hostile strings are text: no element came out of them
    assert dom.nodes[HOSTILE_NAME][0] == HOSTILE_NAME
    assert dom.nodes[HOSTILE_NAME][6] == HOSTILE_REASON
    assert not [t for t, a in dom.tags if t == "img" or "onerror" in a]
    assert [a.get("src") for t, a in dom.tags if t == "script"] == ["/status.js"]
    assert dom.drift["n3"][1:] == ["n3", "active", DRIFT_MESSAGE]
    slots = {lock.holder: lock.since for lock in slots_of(cluster.store).list_reboot_locks()}
    assert sorted(dom.slots) == sorted(f"default/{holder}" for holder in slots)
    for holder, since in slots.items():
        group, shown, shown_since, held, state = dom.slots[f"default/{holder}"]
        assert (group, shown, shown_since) == ("default", holder, since)
        assert re.fullmatch(r"\d+s|\d+m \d+s", held), held
        assert state == ("Degraded" if holder == "n3" else "-")


def test_chromium_without_a_valid_token_asks_for_one(
        served: tuple[Cluster, Running, Path], tmp_path: Path) -> None:
    _, server, _ = served
    dom = PageDOM()
    page = chromium(f"{server.https}/status#token=not-the-token", tmp_path / "chromium")
    dom.feed(page)
    assert dom.body_state == "login" and dom.nodes == {} and dom.pools == {}
    assert '<p id="message" role="status">that token was not accepted</p>' in page


def test_mcs_admin_token_prints_one_token_made_once(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from mcs import cli

    sdir = tmp_path / "state"
    assert cli.main(["admin-token", "--state", str(sdir)]) == 0
    token = capsys.readouterr().out.strip()
    assert len(token) >= 43 and (sdir / "admin-token").stat().st_mode & 0o777 == 0o600
    assert cli.main(["admin-token", "--state", str(sdir), "--url", "https://mcs.example:22623/"]) == 0
    assert capsys.readouterr().out == f"https://mcs.example:22623/status#token={token}\n"
    assert AdminToken(sdir).allows(f"Bearer {token}")
    assert not AdminToken(sdir).allows(f"Basic {token}")
    # an admin's own token (rotation: replace the file) is taken as it is
    (sdir / "admin-token").write_text("x" * 40 + "\n")
    assert cli.main(["admin-token", "--state", str(sdir)]) == 0
    assert capsys.readouterr().out == "x" * 40 + "\n"


def test_chromium_says_none_where_there_is_nothing(tmp_path: Path) -> None:
    from tests.support.clusterkit import make_store

    _, inputs = make_store(tmp_path)  # a pool, no node yet
    with running_mcs(f"local:{inputs}", tmp_path / "state", tmp_path) as server:
        token = AdminToken(tmp_path / "state").ensure()
        page = chromium(f"{server.https}/status#token={token}", tmp_path / "chromium")
    dom = PageDOM()
    dom.feed(page)
    assert dom.body_state == "loaded" and dom.nodes == {} and dom.drift == {}
    assert dom.pools["worker"]["machines"] == "0"
    for table, columns in (("slots", 5), ("drift", 4), ("nodes", 7)):
        assert f'<table id="{table}">' in page
        after = page[page.index(f'<table id="{table}">'):]
        assert f'<tbody><tr><td class="none" colspan="{columns}">none</td></tr></tbody>' in after
