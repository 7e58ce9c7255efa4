// The mas dashboard's page: follows /api/events (server-sent events) and draws the five pages
// from each "page" document. Every value is set as text (never as HTML), so nothing an agent
// names can run as script here. No library, no build step.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
let latest = null;
let writes = false;

function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

function cell(value, cls) {
  return el("td", cls ? { class: cls } : {}, value);
}

function rate(value) {
  return value === 0 ? "0" : value.toFixed(2);
}

function time(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "-";
}

function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows);
}

function drawAgents(page) {
  fill("agents-table", page.agents.map((a) => {
    const chain = a.audit_intact
      ? cell("intact", "ok")
      : cell(a.audit_broken_at !== null ? `broken at #${a.audit_broken_at}` : "broken", "bad");
    if (!a.audit_intact) chain.title = a.audit_problem || "";
    return el("tr", { "data-agent": a.id },
      cell(a.id), cell(a.replicas_live, "num"), cell(a.capabilities.join(", ")),
      cell(a.roles.join(", ")), cell(a.policy_revisions.join(", ") || "-"),
      cell(a.backlog, "num"),
      cell(a.oldest_pending_s === null ? "-" : `${a.oldest_pending_s.toFixed(1)} s`, "num"),
      cell(rate(a.in_per_s), "num"), cell(rate(a.out_per_s), "num"),
      cell(rate(a.refusals_per_s), "num"), cell(a.dead_letters, "num"), chain);
  }));
}

function drawGraph(page) {
  const svg = document.getElementById("graph-svg");
  const nodes = page.graph.nodes;
  const cx = 320, cy = 210, r = nodes.length > 1 ? 200 : 0;
  const at = {};
  nodes.forEach((id, i) => {
    const angle = Math.PI + (2 * Math.PI * i) / nodes.length; // the first on the left
    at[id] = [cx + r * Math.cos(angle), cy + r * Math.sin(angle)];
  });
  const defs = el("svg:defs", {},
    el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: 28, refY: 5,
      markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" },
      el("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#5b6372" })));
  const edges = page.graph.edges.map((e) => {
    const [x1, y1] = at[e.from], [x2, y2] = at[e.to];
    // each direction is drawn a little to its own side, so a->b and b->a do not overlap
    const len = Math.hypot(x2 - x1, y2 - y1) || 1;
    const ox = ((y2 - y1) / len) * 6, oy = (-(x2 - x1) / len) * 6;
    const group = el("svg:g", { class: "edge", "data-from": e.from, "data-to": e.to,
      "data-accepted": e.accepted, "data-refused": e.refused });
    if (e.accepted) {
      group.append(el("svg:line", { x1: x1 + ox, y1: y1 + oy, x2: x2 + ox, y2: y2 + oy,
        "stroke-width": Math.min(10, 1.5 + e.rate * 2), "marker-end": "url(#arrow)" }));
    }
    if (e.refused) {
      const refused = el("svg:g", { class: "edge refused" });
      refused.append(el("svg:line", { x1: x1 + 2 * ox, y1: y1 + 2 * oy, x2: x2 + 2 * ox,
        y2: y2 + 2 * oy, "stroke-width": 2, "marker-end": "url(#arrow)" }));
      group.append(refused);
    }
    group.append(el("svg:text", { x: (x1 + x2) / 2 + 4 * ox, y: (y1 + y2) / 2 + 4 * oy + 4,
      "text-anchor": "middle" },
      `${e.accepted} sent${e.refused ? `, ${e.refused} refused` : ""} (${rate(e.rate)}/s)`));
    return group;
  });
  const drawn = nodes.map((id) => el("svg:g", { class: "node", "data-agent": id },
    el("svg:circle", { cx: at[id][0], cy: at[id][1], r: 22 }),
    el("svg:text", { x: at[id][0], y: at[id][1] + 38 }, id)));
  svg.replaceChildren(defs, ...edges, ...drawn);
}

function drawDecisions(page) {
  const kind = document.getElementById("kind-filter").value;
  const agent = document.getElementById("agent-filter").value.trim();
  const shown = page.decisions.filter((d) => (!kind || d.kind === kind)
    && (!agent || d.sender.includes(agent) || d.target.includes(agent) || d.trail.includes(agent)));
  fill("decisions-table", shown.map((d) => el("tr", { "data-kind": d.kind },
    cell(time(d.at)), cell(d.count > 1 ? `${d.kind} ×${d.count}` : d.kind, `kind-${d.kind}`),
    cell(d.sender), cell(d.target), cell(d.type),
    cell([d.rule, ...d.detectors].filter(Boolean).join(", ")), cell(d.reason || ""),
    cell(d.trail))));
}

async function act(row, action) {
  const result = document.getElementById("action-result");
  const [namespace, name] = row.agent.split("/");
  const url = `/api/agents/${encodeURIComponent(namespace)}/${encodeURIComponent(name)}`
    + `/dead-letters/${encodeURIComponent(row.id)}/${action}`;
  const token = document.getElementById("token").value;
  const response = await fetch(url, { method: "POST", headers: { Authorization: `Bearer ${token}` } });
  const body = await response.json();
  result.textContent = response.ok
    ? `${action === "replay" ? "replayed" : "deleted"} ${row.id}`
    : `${body.error.code}: ${body.error.message}`;
  result.className = response.ok ? "ok" : "bad";
}

function drawDeadLetters(page) {
  fill("dead-letters-table", page.dead_letters.map((d) => {
    const buttons = el("td", {});
    if (writes) {
      const replay = el("button", { type: "button", class: "replay" }, "Replay");
      replay.addEventListener("click", () => act(d, "replay"));
      const drop = el("button", { type: "button", class: "delete" }, "Delete");
      drop.addEventListener("click", () => act(d, "delete"));
      buttons.append(replay, drop);
    }
    return el("tr", { "data-id": d.id, "data-agent": d.agent },
      cell(d.agent), cell(d.id), cell(d.sender || "-"), cell(d.type || "-"), cell(d.reason),
      cell(d.attempts, "num"), cell(time(d.failed_at)), buttons);
  }));
}

function drawPolicies(page) {
  document.getElementById("revision").textContent = page.policies.revision || "-";
  fill("policies-table", page.policies.policies.map((p) => el("tr", { "data-policy": p.name },
    cell(p.name), cell(p.status, p.status === "applied" ? "ok" : "bad"), cell(p.rules, "num"),
    cell(p.agents.join(", ")), cell(p.enforcing.join(", ") || "-"),
    cell(p.behind.join(", ") || "-"))));
}

function draw() {
  if (!latest) return;
  drawAgents(latest);
  drawGraph(latest);
  drawDecisions(latest);
  drawDeadLetters(latest);
  drawPolicies(latest);
}

function show() {
  const current = (location.hash || "#agents").slice(1);
  for (const section of document.querySelectorAll(".page")) {
    section.classList.toggle("active", section.id === current);
  }
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === current);
  }
}

async function start() {
  const kinds = ["accepted", "redacted", "denied", "rate_limited", "dlp_blocked",
    "unauthenticated", "refused_on_receive", "circuit_open", "unsigned",
    "credentials_expired", "received"];
  const select = document.getElementById("kind-filter");
  for (const kind of kinds) select.append(el("option", { value: kind }, kind));
  select.addEventListener("change", draw);
  document.getElementById("agent-filter").addEventListener("input", draw);
  window.addEventListener("hashchange", show);
  show();
  writes = (await (await fetch("/api/config")).json()).writes;
  document.getElementById("writes-on").hidden = !writes;
  document.getElementById("writes-off").hidden = writes;
  const status = document.getElementById("status");
  const source = new EventSource("/api/events");
  source.addEventListener("page", (event) => {
    latest = JSON.parse(event.data);
    status.textContent = `live · ${new Date(latest.now).toLocaleTimeString()}`;
    document.body.dataset.version = String(Number(document.body.dataset.version || 0) + 1);
    draw();
  });
  source.addEventListener("error", () => { status.textContent = "reconnecting…"; });
}

start();
