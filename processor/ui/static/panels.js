// Dashboard panels rendered from a spec: each data panel runs its catalogue queries through
// the API (the spec holds no SQL) over the dashboard's time range.
import { query } from "./api.js";
import { bars, heatmap, lines, stateTimeline } from "./charts.js";
import { clear, el, fmt, HEALTH_COLOURS, when } from "./dom.js";
import { drawGraph } from "./graph.js";
import { narrative, badges } from "./narrative.js";

export function timeRange(spec, now = Date.now()) {
  const parse = (t) => {
    if (t === "now") return now;
    const m = /^now-(\d+)([smhd])$/.exec(t);
    if (m) return now - Number(m[1]) * { s: 1e3, m: 6e4, h: 36e5, d: 864e5 }[m[2]];
    return Date.parse(t);
  };
  return [Math.max(0, parse(spec.time_range.from)), parse(spec.time_range.to)];
}

function params(q, spec, range, catalogue) {
  const out = {};
  for (const [k, v] of Object.entries(q.params)) {
    out[k] = typeof v === "object" && v !== null ? (spec.variables.find((x) => x.name === v.var) || {}).default || "" : v;
  }
  out.since_ms = range[0];
  out.until_ms = range[1] + 1;
  const takes = (catalogue[q.name] || { params: [] }).params;
  if (takes.includes("step_s")) out.step_s = Math.max(0, Math.ceil((range[1] - range[0]) / 1000 / 240));
  return out;
}

function table(rows, fields, unit) {
  const cols = fields && fields.length ? fields : Object.keys(rows[0] || {});
  return el("table", { class: "data" },
    el("thead", {}, el("tr", {}, cols.map((c) => el("th", {}, c)))),
    el("tbody", {}, rows.slice(0, 200).map((r) => el("tr", {}, cols.map((c) => {
      const v = r[c];
      const td = el("td", { class: typeof v === "number" ? "num" : "" },
        c.endsWith("_ms") ? fmt(v, "ms") : c === "error_rate" || c.endsWith("error_rate") ? fmt(v, "percentunit")
          : /(^|_)(window_start|window_end|updated_at|detected_at|last_window|time)$/.test(c) ? when(v) : fmt(v, unit));
      if (c === "health" && v) td.dataset.health = v;
      return td;
    })))));
}

function stat(rows, field, unit, thresholds) {
  const value = rows.length ? rows[0][field] : null;
  let colour = "";
  for (const t of thresholds || []) if (t.value === null || (value !== null && value >= t.value)) colour = t.health || "";
  const box = el("div", { class: "stat" }, el("span", { class: "value" }, fmt(value, unit)));
  if (colour) box.dataset.health = colour;
  return box;
}

export async function renderPanel(body, panel, spec, range, catalogue) {
  clear(body);
  const fields = panel.fields || [];
  if (panel.type === "text") {
    body.append(el("pre", { class: "text" }, panel.text));
    return true;
  }
  if (panel.type === "insight") {
    const rows = await query("insight", { incident_id: panel.incident_id, since_ms: 0 });
    if (!rows.length) { body.append(el("p", { class: "empty" }, "The insight is not stored yet.")); return false; }
    const insight = JSON.parse(rows[0].message);
    body.append(badges(insight), narrative(insight));
    return true;
  }
  const results = await Promise.all(panel.queries.map((q) => query(q.name, params(q, spec, range, catalogue))));
  const rows = results[0] || [];
  if (panel.type === "topology") {
    const [nodes, edges] = panel.queries[0].name === "topology_nodes" ? results : [results[1], results[0]];
    if (!nodes.length) { body.append(el("p", { class: "empty" }, "No traffic in this range.")); return false; }
    const box = el("div", { class: "chart" });
    body.append(box);
    drawGraph(box, nodes, edges, { highlight: panel.highlight || [] });
    return true;
  }
  if (!rows.length) { body.append(el("p", { class: "empty" }, "No data in this range.")); return false; }
  if (panel.type === "table") body.append(table(rows, fields, panel.unit));
  else if (panel.type === "stat") body.append(stat(rows, fields[0], panel.unit, panel.thresholds));
  else {
    const box = el("div", { class: "chart" });
    body.append(box);
    if (panel.type === "heatmap") heatmap(box, rows);
    else if (panel.type === "bar") bars(box, rows, fields[0], panel.unit);
    else if (fields.includes("health")) stateTimeline(box, rows);
    else lines(box, rows, fields.length ? fields : Object.keys(rows[0]).filter((k) => k !== "time"), panel.unit, panel.thresholds);
  }
  return true;
}

export { HEALTH_COLOURS };
