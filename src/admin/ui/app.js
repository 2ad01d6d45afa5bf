// ecs-xds's operator page: reads the admin server's JSON every 2 s and draws it. Every value
// shown comes from AWS tags, Envoy or templates, so text is only ever set as text (never as
// HTML).
"use strict";

const REFRESH_MS = 2000;
const TYPES = ["cds", "eds", "lds", "rds", "sds"];
const state = { tab: "services", selected: null, timer: null };

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

// --- fetching, with the admin token when one is needed -------------------------------------

class Refused extends Error {}

async function read(path, asText) {
  const token = sessionStorage.getItem("ecs-xds-token");
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) {
    showLogin("this server wants its admin token");
    throw new Refused("401");
  }
  if (!response.ok && response.status !== 503) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Refused(path + ": " + message);
  }
  return asText ? response.text() : response.json();
}

function showLogin(why) {
  document.getElementById("login").hidden = false;
  document.getElementById("login-why").textContent = why;
}

function setError(message) {
  const el = document.getElementById("error");
  el.hidden = !message;
  el.textContent = message || "";
}

// --- services -------------------------------------------------------------------------------

function counts(items) {
  const out = {};
  for (const item of items) out[item] = (out[item] || 0) + 1;
  return out;
}

function countList(map, classOf) {
  return Object.entries(map).map(([k, n]) => h("div", { class: classOf ? classOf(k) : null }, `${k}: ${n}`));
}

function policyLines(cluster) {
  const r = cluster.route || {};
  const o = cluster.overrides || {};
  const lines = [];
  if (r.timeout) lines.push(`timeout ${r.timeout}`);
  if (r.idle_timeout) lines.push(`idle timeout ${r.idle_timeout}`);
  if (r.retries !== undefined) lines.push(`retries ${r.retries}` + (r.retry_on ? ` on ${r.retry_on}` : ""));
  if (r.per_try_timeout) lines.push(`per try ${r.per_try_timeout}`);
  if (r.weights && r.weights.length) lines.push("weights " + r.weights.map((w) => `rev ${w.revision}: ${w.weight}`).join(", "));
  if (r.protocol) lines.push(`protocol ${r.protocol}`);
  if (r.hosts && r.hosts.length) lines.push("hosts " + r.hosts.join(" "));
  if (o.lb_policy) lines.push(`lb ${o.lb_policy}`);
  if (o.connect_timeout) lines.push(`connect timeout ${o.connect_timeout}`);
  const cb = o.circuit_breakers || {};
  const cbs = Object.entries(cb).map(([k, v]) => `${k} ${v}`);
  if (cbs.length) lines.push("circuit breakers: " + cbs.join(", "));
  const od = o.outlier_detection || {};
  const ods = Object.entries(od).map(([k, v]) => `${k} ${v}`);
  if (ods.length) lines.push("outlier detection: " + ods.join(", "));
  if (o.zone_aware !== undefined) lines.push(`zone aware ${o.zone_aware}`);
  return lines.length ? lines.map((l) => h("div", {}, l)) : "-";
}

function securityLines(cluster) {
  const s = cluster.security || {};
  const lines = [];
  if (s.mtls) lines.push(`mtls ${s.mtls}`);
  if (s.allow_from) lines.push("allow from " + (Array.isArray(s.allow_from.services) ? s.allow_from.services.join(" ") || "nobody" : JSON.stringify(s.allow_from)));
  if (s.authz) lines.push(`authz ${s.authz}`);
  return lines.length ? lines.map((l) => h("div", {}, l)) : "-";
}

function sourceText(source) {
  return source.kind === "ecs" ? `ecs:${source.ecs_cluster}/${source.service}` : `cloudmap:${source.namespace}/${source.service}`;
}

function endpointList(endpoints) {
  if (!endpoints.length) return "none";
  const byHealth = countList(counts(endpoints.map((e) => e.health)), (k) => "health-" + k);
  const rows = endpoints.map((e) => h("li", { class: "health-" + e.health },
    `${e.address}:${e.port} ${e.health} ${e.locality.zone || ""} w${e.weight}` + (e.revision ? ` rev ${e.revision}` : "") + ` ${e.id}`));
  return [byHealth, h("details", {}, h("summary", {}, `${endpoints.length} endpoints`), h("ul", {}, rows))];
}

async function drawServices() {
  const inventory = await read("/inventory");
  const warnings = document.getElementById("warnings");
  warnings.replaceChildren(...(inventory.warnings || []).map((w) => h("li", {}, w)));
  const rows = Object.values(inventory.clusters || {}).map((c) => {
    const eps = c.endpoints || [];
    return h("tr", { class: "service", "data-cluster": c.name },
      h("td", {}, c.name),
      h("td", {}, sourceText(c.source)),
      h("td", {}, endpointList(eps)),
      h("td", {}, countList(counts(eps.map((e) => e.locality.zone || "-")))),
      h("td", {}, countList(counts(eps.map((e) => (e.revision ? "rev " + e.revision : "-"))))),
      h("td", {}, policyLines(c)),
      h("td", {}, securityLines(c)),
      h("td", {}, c.backends ? (c.backends.length ? c.backends.join(" ") : "nothing") : "-"));
  });
  document.getElementById("services-rows").replaceChildren(...rows);
}

// --- envoys ---------------------------------------------------------------------------------

function typesOf(node) {
  const out = {};
  for (const stream of node.streams) for (const [ty, v] of Object.entries(stream.types)) out[ty] = v;
  return out;
}

function nodeState(node) {
  const types = Object.values(typesOf(node));
  if (types.some((t) => t.last_nack)) return 0;
  if (types.some((t) => t.sent_version && t.sent_version !== t.acked_version)) return 1;
  return 2;
}

function short(version) {
  return version ? version.slice(0, 10) : "-";
}

function versionCell(t) {
  if (!t) return h("td", { class: "version" }, "-");
  const lag = t.sent_version && t.sent_version !== t.acked_version;
  return h("td", { class: "version" + (lag ? " lagging" : ""), title: `sent ${t.sent_version || "-"}\nACKed ${t.acked_version || "-"}` },
    short(t.acked_version), lag ? ` (sent ${short(t.sent_version)})` : "");
}

function nackCell(types) {
  const nacks = Object.entries(types).filter(([, t]) => t.last_nack);
  return h("td", { class: "nack-text" }, nacks.map(([ty, t]) => h("div", { class: "nack-message" }, `${ty} ${short(t.last_nack.rejected_version)}: ${t.last_nack.message}`)));
}

async function drawEnvoys() {
  const view = await read("/nodes");
  const filter = document.getElementById("filter").value.trim().toLowerCase();
  const nodes = view.nodes
    .filter((n) => !filter || [n.node_id, n.node_type, n.service, n.zone].some((v) => (v || "").toLowerCase().includes(filter)))
    .sort((a, b) => nodeState(a) - nodeState(b) || a.node_id.localeCompare(b.node_id));
  const rows = nodes.map((n) => {
    const types = typesOf(n);
    const since = n.streams.map((s) => s.connected_at).filter(Boolean).sort()[0];
    const cls = ["envoy", ["nack", "lag", "ok"][nodeState(n)], n.node_id === state.selected ? "selected" : null].filter(Boolean).join(" ");
    return h("tr", { class: cls, "data-node": n.node_id, onclick: () => select(n.node_id) },
      h("td", {}, n.node_id), h("td", {}, n.node_type), h("td", {}, n.service || "-"),
      h("td", {}, n.zone || "-"), h("td", {}, since ? since.replace("T", " ").slice(0, 19) : "-"),
      TYPES.map((ty) => versionCell(types[ty])), nackCell(types));
  });
  document.getElementById("envoys-rows").replaceChildren(...rows);
  document.getElementById("envoys-replica").textContent =
    `${view.nodes.length} Envoys connected to replica ${view.replica}; each replica lists its own.`;
  if (state.selected) await drawExplain();
}

function select(nodeId) {
  state.selected = nodeId;
  location.hash = "envoy=" + encodeURIComponent(nodeId);
  refresh();
}

function dl(pairs) {
  return h("dl", {}, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function dumpButton(label, path, pre) {
  return h("button", { type: "button", onclick: async () => {
    try { pre.textContent = JSON.stringify(await read(path), null, 2); } catch (e) { pre.textContent = String(e.message); }
  } }, label);
}

async function drawExplain() {
  const box = document.getElementById("explain");
  let e;
  try {
    e = await read("/explain/" + encodeURIComponent(state.selected));
  } catch (err) {
    box.hidden = false;
    box.replaceChildren(h("p", { class: "error" }, err.message));
    return;
  }
  const snapshot = e.snapshot || { versions: {}, resources: {} };
  const served = {};
  for (const s of e.streams) for (const [ty, t] of Object.entries(s.types)) served[ty] = t;
  const perType = TYPES.map((ty) => {
    const names = snapshot.resources[ty] || [];
    const t = served[ty] || {};
    return h("tr", {}, h("td", {}, ty), h("td", { class: "version" }, short(snapshot.versions[ty])),
      h("td", { class: "version" }, short(t.sent_version)), h("td", { class: "version" }, short(t.acked_version)),
      h("td", {}, h("details", {}, h("summary", {}, `${names.length} resources`), h("div", {}, names.join(", ")))));
  });
  const pre = h("pre", {});
  box.hidden = false;
  box.replaceChildren(
    h("h2", {}, `Envoy ${e.node_id}`),
    dl([["node type", `${e.node_type} (read from ${e.node_type_rule})`],
      ["service", `${e.service || "-"} (from ${e.service_from})`],
      ["zone / region", `${e.zone || "-"} / ${e.region || "-"}`],
      ["what it gets", e.scope],
      ["places with their own snapshot", e.places.length ? e.places.join(", ") : "none"],
      ["streams", e.streams.map((s) => `${s.service} ${s.mode}` + (s.identity ? ` (verified ${s.identity})` : "")).join("; ")],
      ["replica", e.replica]]),
    h("table", {}, h("thead", {}, h("tr", {}, ["type", "current", "sent", "ACKed", "resources"].map((c) => h("th", {}, c)))), h("tbody", {}, perType)),
    h("p", {}, h("a", { href: e.snapshot_url, target: "_blank", class: "snapshot-link" }, "its snapshot (Envoy JSON)"), " ",
      dumpButton("show its snapshot", e.snapshot_url, pre), " ", dumpButton("show its CSDS dump", e.csds_url, pre)),
    pre);
}

// --- graph ----------------------------------------------------------------------------------

// Columns by depth from the services nobody calls (longest path, cycles cut after as many
// rounds as there are nodes), rows in name order within a column.
function layout(graph, width) {
  const depth = Object.fromEntries(graph.nodes.map((n) => [n.id, 0]));
  for (let round = 0; round < graph.nodes.length; round++) {
    let moved = false;
    for (const e of graph.edges) {
      if (e.from !== e.to && depth[e.to] < depth[e.from] + 1) { depth[e.to] = depth[e.from] + 1; moved = true; }
    }
    if (!moved) break;
  }
  const columns = {};
  for (const n of graph.nodes) (columns[depth[n.id]] = columns[depth[n.id]] || []).push(n);
  const at = {};
  for (const [d, nodes] of Object.entries(columns)) nodes.forEach((n, i) => { at[n.id] = { x: 20 + d * (width + 60), y: 20 + i * 64 }; });
  return at;
}

function nodeLabel(n) {
  if (n.kind === "missing") return `${n.id} (nobody serves it)`;
  if (n.kind === "caller") return `${n.id} (caller)`;
  return `${n.id}: ${n.healthy} of ${n.endpoints} healthy`;
}

async function drawGraph() {
  const graph = await read("/graph");
  const labels = Object.fromEntries(graph.nodes.map((n) => [n.id, nodeLabel(n)]));
  const W = Math.max(160, ...Object.values(labels).map((l) => l.length * 7 + 16)), H = 40;
  const at = layout(graph, W);
  const el = document.getElementById("graph-svg");
  const width = Math.max(400, ...Object.values(at).map((p) => p.x + W + 20));
  const height = Math.max(120, ...Object.values(at).map((p) => p.y + H + 20));
  el.setAttribute("viewBox", `0 0 ${width} ${height}`);
  el.setAttribute("height", height);
  const defs = svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "8", markerHeight: "8", orient: "auto-start-reverse" },
    svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#475467" })));
  const edges = graph.edges.map((e) => {
    const a = at[e.from], b = at[e.to];
    const [x1, y1, x2, y2] = [a.x + W, a.y + H / 2, b.x, b.y + H / 2];
    const d = b.x > a.x ? `M ${x1} ${y1} C ${x1 + 60} ${y1}, ${x2 - 60} ${y2}, ${x2} ${y2}` : `M ${a.x + W / 2} ${a.y + H} C ${a.x + W / 2} ${a.y + H + 40}, ${b.x + W / 2} ${b.y + H + 40}, ${b.x + W / 2} ${b.y + H}`;
    const cls = "edge" + (e.missing ? " missing" : "") + (e.allowed === false ? " denied" : "");
    return svg("path", { d, class: cls, "marker-end": "url(#arrow)", "data-from": e.from, "data-to": e.to },
      svg("title", {}, `${e.from} → ${e.to} (declared as ${e.declared_as.join(" ")})` + (e.allowed === false ? "; its allow-from leaves the caller out" : "")));
  });
  const nodes = graph.nodes.map((n) => {
    const p = at[n.id];
    const label = labels[n.id];
    return svg("g", { class: "node " + n.kind, "data-id": n.id, transform: `translate(${p.x} ${p.y})` },
      svg("rect", { width: W, height: H, rx: 6 }), svg("text", { x: 8, y: 25 }, label),
      svg("title", {}, n.clusters.length ? `clusters: ${n.clusters.join(", ")}` : n.kind));
  });
  el.replaceChildren(defs, ...edges, ...nodes);
}

// --- changes --------------------------------------------------------------------------------

async function drawChanges() {
  const log = await read("/changes");
  const rows = log.changes.map((c) => h("tr", { class: "change " + c.outcome, "data-kind": c.kind },
    h("td", {}, c.seq), h("td", {}, c.at.replace("T", " ").slice(0, 23)), h("td", {}, c.kind),
    h("td", { class: c.outcome === "failed" ? "error" : null }, c.outcome),
    h("td", {}, c.summary, c.error ? h("div", { class: "error" }, c.error) : null)));
  document.getElementById("changes-rows").replaceChildren(...rows);
}

// --- the loop -------------------------------------------------------------------------------

const DRAW = { services: drawServices, envoys: drawEnvoys, graph: drawGraph, changes: drawChanges };

async function header() {
  const ready = document.getElementById("ready");
  const text = (await read("/readyz", true)).trim();
  ready.textContent = text;
  ready.className = "badge " + (text === "ready" ? "ready" : "not-ready");
}

async function refresh() {
  clearTimeout(state.timer);
  try {
    await Promise.all([header(), DRAW[state.tab]()]);
    setError(null);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = state.tab;
  } catch (e) {
    if (!(e instanceof Refused && e.message === "401")) setError(e.message);
  }
  state.timer = setTimeout(refresh, REFRESH_MS);
}

function show(tab) {
  state.tab = tab;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === tab);
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== tab;
  delete document.body.dataset.loaded;
  refresh();
}

function fromHash() {
  const m = /^#envoy=(.*)$/.exec(location.hash);
  if (m) { state.selected = decodeURIComponent(m[1]); return "envoys"; }
  const tab = location.hash.slice(1);
  return DRAW[tab] ? tab : "services";
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("#tabs button")) {
    b.addEventListener("click", () => { state.selected = null; location.hash = b.dataset.tab; show(b.dataset.tab); });
  }
  document.getElementById("filter").addEventListener("input", () => refresh());
  document.getElementById("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem("ecs-xds-token", document.getElementById("token").value);
    document.getElementById("login").hidden = true;
    refresh();
  });
  read("/nodes").then((v) => { document.getElementById("replica").textContent = "replica " + v.replica; }).catch(() => {});
  show(fromHash());
});
