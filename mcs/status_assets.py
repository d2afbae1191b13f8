"""The status page's three static files: an HTML shell with no data in it, its stylesheet, and a
few lines of plain JavaScript that poll /status.json with the admin token and build the tables
with textContent only (every string from the store stays text; the CSP allows no inline script).
"""
from __future__ import annotations

REFRESH_SECONDS = 5

HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>machine-config status</title>
<link rel="stylesheet" href="/status.css">
<script src="/status.js" defer></script>
</head>
<body data-state="empty">
<header><h1>machine-config status</h1><p id="generated"></p><p id="message" role="status"></p></header>
<form id="login" hidden>
<label for="token">Admin token (<code>mcs admin-token --state SDIR</code>), kept in this tab only:</label>
<input id="token" type="password" autocomplete="off" required>
<button type="submit">Show status</button>
</form>
<main id="status" hidden>
<h2>Pools</h2>
<table id="pools"><thead><tr><th>Pool</th><th>Progress</th><th>Machines</th><th>Updated</th>
<th>Updating</th><th>Degraded</th><th>Ready</th><th>Current config</th><th>Target config</th>
<th>Maintenance window</th></tr></thead><tbody></tbody></table>
<h2>FleetLock reboot slots held</h2>
<table id="slots"><thead><tr><th>Group</th><th>Holder</th><th>Since</th><th>Held for</th>
<th>Node state</th></tr></thead><tbody></tbody></table>
<h2>Drift alerts</h2>
<table id="drift"><thead><tr><th>Time</th><th>Node</th><th>Alert</th><th>Message</th></tr></thead>
<tbody></tbody></table>
<h2>Nodes</h2>
<table id="nodes"><thead><tr><th>Node</th><th>Pool</th><th>Phase</th><th>State</th>
<th>Current config</th><th>Desired config</th><th>Reason</th></tr></thead><tbody></tbody></table>
<h2>Recent events</h2>
<table id="events"><thead><tr><th>Time</th><th>Type</th><th>Object</th><th>Reason</th>
<th>Message</th></tr></thead><tbody></tbody></table>
</main>
</body>
</html>
"""

CSS = """body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; }
h1 { font-size: 1.4em; margin: 0; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 2px 8px; border-bottom: 1px solid #ddd; vertical-align: top; }
td { overflow-wrap: break-word; } td.cfg { word-break: break-all; min-width: 12em; }
td.time { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
progress { width: 10em; }
.Degraded, .Warning, .active { color: #b00020; font-weight: 600; }
.Updating { color: #8a5a00; } .Updated { color: #1b6e20; }
td.none { color: #666; }
#message { color: #b00020; } #generated { color: #666; margin: 0; }
"""

JS = """"use strict";
(function () {
  var KEY = "mcs-admin-token";
  // The token may come once in the fragment (never sent to the server, nor logged): keep it in
  // this tab's sessionStorage and drop it from the address bar.
  var m = /^#token=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(KEY, m[1]);
    history.replaceState(null, "", location.pathname);
  }
  function $(id) { return document.getElementById(id); }
  function cell(text, cls) {
    var td = document.createElement("td");
    td.textContent = text === undefined || text === null || text === "" ? "-" : String(text);
    if (cls) { td.className = cls; }
    return td;
  }
  function named(td, field) {
    td.setAttribute("data-field", field);
    return td;
  }
  function num(value, field) { return named(cell(value, "num"), field); }
  // "3d 4h", "12m 5s", "40s": from `since` to the model's own time, as `mcc status` says it
  function heldFor(since, generated) {
    var secs = Math.max(0, Math.floor((Date.parse(generated) - Date.parse(since)) / 1000));
    if (isNaN(secs)) { return "?"; }
    var parts = [[Math.floor(secs / 86400), "d"], [Math.floor(secs %% 86400 / 3600), "h"],
                 [Math.floor(secs %% 3600 / 60), "m"], [secs %% 60, "s"]];
    while (parts.length > 1 && parts[0][0] === 0) { parts.shift(); }
    return parts.slice(0, 2).map(function (p) { return p[0] + p[1]; }).join(" ");
  }
  function fill(id, rows) {
    var table = $(id), body = table.tBodies[0];
    while (body.firstChild) { body.removeChild(body.firstChild); }
    if (!rows.length) {
      var none = cell("none", "none");
      none.colSpan = table.tHead.rows[0].cells.length;
      rows = [document.createElement("tr")];
      rows[0].appendChild(none);
    }
    rows.forEach(function (tr) { body.appendChild(tr); });
  }
  function render(s) {
    fill("pools", s.pools.map(function (p) {
      var tr = document.createElement("tr"), bar = document.createElement("progress");
      var td = document.createElement("td");
      tr.setAttribute("data-pool", p.name);
      bar.max = p.machines || 1;
      bar.value = p.machines ? p.updated : 1;
      bar.textContent = p.updated + "/" + p.machines;
      td.appendChild(bar);
      tr.append(cell(p.name), td, num(p.machines, "machines"), num(p.updated, "updated"),
                num(p.updating, "updating"), num(p.degraded, "degraded"), num(p.ready, "ready"),
                named(cell(p.currentConfig, "cfg"), "current"),
                named(cell(p.targetConfig + (p.paused ? " (paused)" : ""), "cfg"), "target"),
                named(cell(p.window), "window"));
      if (p.degradedMessage) { tr.title = p.degradedMessage; }
      return tr;
    }));
    fill("slots", (s.rebootSlots || []).map(function (r) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-slot", r.group + "/" + r.holder);
      tr.append(cell(r.group), cell(r.holder), cell(r.since, "time"),
                named(cell(heldFor(r.since, s.generated), "num"), "held"), cell(r.nodeState));
      return tr;
    }));
    fill("drift", s.drift.map(function (a) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-node", a.node);
      tr.append(cell(a.time, "time"), cell(a.node), cell(a.active ? "active" : "resolved",
                a.active ? "active" : ""), cell(a.message));
      return tr;
    }));
    fill("nodes", s.nodes.map(function (n) {
      var tr = document.createElement("tr"), state = n.state || "-";
      tr.setAttribute("data-node", n.name);
      tr.setAttribute("data-phase", n.phase);
      if (n.cordoned) { state += ", cordoned"; }
      if (!n.ready) { state += ", not ready"; }
      tr.append(cell(n.name), cell(n.pool), cell(n.phase, n.phase), cell(state),
                cell(n.currentConfig, "cfg"), cell(n.desiredConfig, "cfg"), cell(n.reason));
      return tr;
    }));
    fill("events", s.events.map(function (e) {
      var tr = document.createElement("tr");
      tr.append(cell(e.time, "time"), cell(e.type, e.type), cell(e.kind + "/" + e.name),
                cell(e.reason), cell(e.message + (e.count > 1 ? " (x" + e.count + ")" : "")));
      return tr;
    }));
    $("generated").textContent = "as of " + s.generated + ", refreshed every %(refresh)d s";
    $("message").textContent = "";
    $("login").hidden = true;
    $("status").hidden = false;
    document.body.setAttribute("data-state", "loaded");
  }
  function ask(text) {
    $("message").textContent = text;
    $("login").hidden = false;
    document.body.setAttribute("data-state", "login");
  }
  function refresh() {
    var token = sessionStorage.getItem(KEY);
    if (!token) {
      if (document.body.getAttribute("data-state") !== "login") { ask(""); }
      return;
    }
    fetch("/status.json", {headers: {"Authorization": "Bearer " + token}, cache: "no-store"})
      .then(function (r) {
        if (r.status === 401) {
          sessionStorage.removeItem(KEY);
          ask("that token was not accepted");
          return null;
        }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (s) { if (s) { render(s); } })
      .catch(function (err) { $("message").textContent = "not refreshed: " + err.message; });
  }
  $("login").addEventListener("submit", function (ev) {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("token").value.trim());
    $("token").value = "";
    refresh();
  });
  refresh();
  setInterval(refresh, %(refresh)d * 1000);
})();
""" % {"refresh": REFRESH_SECONDS}
