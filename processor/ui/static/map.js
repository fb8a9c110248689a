// The service map page: the graph with its node list, a time range, live refresh, and a
// service's detail (RED over time, its edges, anomalies, its incident's narrative) on click.
import { query } from "./api.js";
import { lines } from "./charts.js";
import { clear, el, fmt, when } from "./dom.js";
import { drawGraph } from "./graph.js";
import { narrative, badges } from "./narrative.js";

const RANGES = ["15m", "1h", "6h", "24h"];
// Long ranges read the hourly rollups (whole hours, from the start of the first one).
const ROLLED_UP = new Set(["6h", "24h"]);
const REFRESH_MS = 10000;

function emptyState(status) {
  return el("div", { class: "empty", id: "map-empty" },
    el("p", {}, "No data yet."),
    el("p", {}, `Is the collector's kafka exporter writing to topic `, el("code", {}, status.input_topic || "?"),
      ` on ${status.brokers || "the brokers"}, with `, el("code", {}, "partition_traces_by_id: true"), "?"),
    el("p", {}, "Windows appear once they are final: a window's length plus the allowed lateness after its traffic."));
}

export function errorState(err, status) {
  const unreachable = err.status === 503 || err.status === 500;
  return el("div", { class: "error", id: "map-error" },
    el("p", {}, unreachable ? `ClickHouse at ${status.clickhouse || "?"} did not answer: ` : "The query failed: ", err.message));
}

function nodeList(nodes, onPick) {
  return el("ul", { id: "node-list", class: "nodes" }, nodes.map((n) => el("li",
    { dataset: { health: n.health, kind: n.kind, node: n.id }, tabindex: 0, onclick: () => onPick(n.id),
      onkeydown: (ev) => { if (ev.key === "Enter") onPick(n.id); } },
    el("span", { class: "dot" }), el("span", { class: "name" }, n.id),
    el("span", { class: "metrics" }, `${fmt(n.requests_per_s, "reqps")} · ${fmt(n.error_rate, "percentunit")} · p95 ${fmt(n.p95_ms, "ms")}`))));
}

async function detail(box, service, range, insights) {
  clear(box);
  box.hidden = false;
  const red = el("div", { class: "chart" });
  const latency = el("div", { class: "chart" });
  box.append(el("header", {}, el("h3", {}, service), el("button", { type: "button", onclick: () => { box.hidden = true; } }, "Close")),
    el("h4", {}, "Requests and errors"), red, el("h4", {}, "Latency"), latency);
  const [rows, edges, anomalies] = await Promise.all([
    query("service_red", { service, since: range }),
    query("service_edges", { service, since: range }),
    query("anomalies", { service, since: range, limit: 50 }),
  ]);
  lines(red, rows, ["requests_per_s", "errors_per_s"], "reqps");
  lines(latency, rows, ["p50_ms", "p95_ms", "p99_ms"], "ms");
  box.append(el("h4", {}, "Callers and callees"), el("table", { class: "data", id: "detail-edges" },
    el("thead", {}, el("tr", {}, ["", "peer", "type", "requests/s", "errors", "p95"].map((h) => el("th", {}, h)))),
    el("tbody", {}, edges.map((e) => el("tr", { dataset: { health: e.health } }, el("td", {}, e.direction === "inbound" ? "←" : "→"),
      el("td", {}, e.peer), el("td", {}, e.connection_type || "rpc"), el("td", { class: "num" }, fmt(e.requests_per_s, "reqps")),
      el("td", { class: "num" }, fmt(e.error_rate, "percentunit")),
      el("td", { class: "num" }, fmt(e.direction === "inbound" ? e.server_p95_ms : e.client_p95_ms, "ms")))))));
  box.append(el("h4", {}, "Anomalies"), anomalies.length
    ? el("ul", { class: "anomalies" }, anomalies.map((a) => el("li", {}, `${when(a.window_start)} ${a.entity} ${a.metric}: `
      + `${fmt(a.observed)} (expected ${fmt(a.expected)}), ${a.severity}`)))
    : el("p", { class: "empty" }, "None in this range."));
  const mine = [...insights.values()].filter((i) => (i.entities || []).some((e) => e.entity === service
    || e.entity.startsWith(`${service}->`) || e.entity.endsWith(`->${service}`)));
  mine.sort((a, b) => String(b.updated_at).localeCompare(String(a.updated_at)));
  if (mine.length) box.append(el("h4", {}, "Incident"), badges(mine[0]), narrative(mine[0]));
}

export function renderMap(view, ctx) {
  clear(view);
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  let range = RANGES.includes(params.get("range")) ? params.get("range") : "1h";
  const chartBox = el("div", { class: "chart map", id: "map-chart" });
  const aside = el("aside", { class: "side" });
  const drawer = el("section", { class: "detail", id: "detail", hidden: true });
  const stamp = el("span", { class: "meta", id: "map-updated" });
  const select = el("select", { id: "range", onchange: () => { range = select.value; load(); } },
    RANGES.map((r) => el("option", { value: r, selected: r === range }, `last ${r}`)));
  view.append(el("div", { class: "toolbar" }, el("h2", {}, "Service map"), select, stamp),
    el("div", { class: "map-layout" }, chartBox, aside), drawer);
  const pick = (service) => detail(drawer, service, range, ctx.insights).catch((err) => drawer.append(el("p", { class: "error" }, err.message)));
  let alive = true;
  async function load() {
    try {
      const [n, e] = ROLLED_UP.has(range) ? ["map_nodes", "map_edges"] : ["topology_nodes", "topology"];
      const [nodes, edges] = await Promise.all([query(n, { since: range }), query(e, { since: range })]);
      for (const old of view.querySelectorAll("#map-empty, #map-error")) old.remove();
      clear(aside);
      if (!nodes.length) { aside.append(emptyState(ctx.status)); chartBox.hidden = true; return; }
      chartBox.hidden = false;
      drawGraph(chartBox, nodes, edges, { onClick: pick });
      aside.append(nodeList(nodes, pick));
      stamp.textContent = `updated ${new Date().toISOString().slice(11, 19)}Z`;
    } catch (err) {
      clear(aside);
      aside.append(errorState(err, ctx.status));
    }
  }
  load();
  const timer = setInterval(() => { if (alive && !document.hidden) load(); }, REFRESH_MS);
  return () => { alive = false; clearInterval(timer); };
}
