// The service map: nodes coloured by the one health definition, edges as wide as their
// request rate, a stable layered layout (callers left of callees), and the user's zoom and
// pan kept across refreshes.
import { chartFor } from "./charts.js";
import { HEALTH_COLOURS, fmt } from "./dom.js";

const SYMBOLS = { service: "circle", database: "roundRect", messaging: "diamond", virtual: "triangle" };

export function layers(nodes, edges) {
  const inbound = new Map(nodes.map((n) => [n.id, 0]));
  const out = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) {
    if (!out.has(e.source) || !inbound.has(e.target) || e.source === e.target) continue;
    out.get(e.source).push(e.target);
    inbound.set(e.target, inbound.get(e.target) + 1);
  }
  const depth = new Map();
  const queue = nodes.filter((n) => inbound.get(n.id) === 0).map((n) => n.id);
  if (!queue.length && nodes.length) queue.push(nodes[0].id);
  for (const id of queue) depth.set(id, 0);
  while (queue.length) {  // breadth first: a node sits one layer right of its first caller
    const id = queue.shift();
    for (const next of out.get(id) || []) {
      if (!depth.has(next)) { depth.set(next, depth.get(id) + 1); queue.push(next); }
    }
  }
  for (const n of nodes) if (!depth.has(n.id)) depth.set(n.id, 0);
  const byLayer = new Map();
  for (const n of [...nodes].sort((a, b) => String(a.id).localeCompare(String(b.id)))) {
    const d = depth.get(n.id);
    if (!byLayer.has(d)) byLayer.set(d, []);
    byLayer.get(d).push(n.id);
  }
  const pos = new Map();
  for (const [d, ids] of byLayer) ids.forEach((id, i) => pos.set(id, [d * 240, (i - (ids.length - 1) / 2) * 110]));
  return pos;
}

export function drawGraph(node, nodes, edges, { highlight = [], onClick } = {}) {
  const chart = chartFor(node);
  const pos = layers(nodes, edges);
  const maxRate = Math.max(1e-9, ...edges.map((e) => e.requests_per_s || 0));
  const marked = new Set(highlight);
  const previous = chart.getOption();
  const kept = previous && previous.series && previous.series[0] ? previous.series[0] : {};
  chart.setOption({
    animation: false,
    tooltip: { renderMode: "richText", formatter: (p) => (p.dataType === "edge"
      ? `${p.data.source} → ${p.data.target}\n${fmt(p.data.rate, "reqps")}, errors ${fmt(p.data.error_rate, "percentunit")}, p95 ${fmt(p.data.p95, "ms")}`
      : `${p.data.name} (${p.data.kind})\n${fmt(p.data.rate, "reqps")}, errors ${fmt(p.data.error_rate, "percentunit")}, p95 ${fmt(p.data.p95, "ms")}`) },
    series: [{
      type: "graph", layout: "none", roam: true, draggable: false,
      zoom: kept.zoom ?? 1, center: kept.center ?? undefined,
      edgeSymbol: ["none", "arrow"], edgeSymbolSize: 8,
      label: { show: true, position: "bottom", fontSize: 11, lineHeight: 14, distance: 6 },
      data: nodes.map((n) => ({
        id: String(n.id), name: String(n.id), kind: n.kind, rate: n.requests_per_s, error_rate: n.error_rate,
        p95: n.p95_ms, x: pos.get(n.id)[0], y: pos.get(n.id)[1],
        symbol: SYMBOLS[n.kind] || "circle", symbolSize: n.kind === "service" ? 34 : 28,
        itemStyle: { color: HEALTH_COLOURS[n.health] || HEALTH_COLOURS[""],
          borderColor: marked.has(n.id) ? "#1f4fd1" : "#fff", borderWidth: marked.has(n.id) ? 4 : 1,
          borderType: n.kind === "virtual" ? "dashed" : "solid" },
        label: { formatter: `${n.id}\np95 ${fmt(n.p95_ms, "ms")} · ${fmt(n.error_rate, "percentunit")}` },
      })),
      links: edges.filter((e) => pos.has(e.source) && pos.has(e.target)).map((e) => ({
        source: String(e.source), target: String(e.target), rate: e.requests_per_s, error_rate: e.error_rate,
        p95: e.client_p95_ms,
        lineStyle: { width: 1 + 7 * Math.log1p(e.requests_per_s || 0) / Math.log1p(maxRate),
          color: HEALTH_COLOURS[e.health] || HEALTH_COLOURS[""], opacity: 0.8, curveness: 0.08,
          type: e.connection_type === "virtual_node" ? "dashed" : "solid" },
      })),
    }],
  }, true);
  chart.off("click");
  if (onClick) chart.on("click", (p) => { if (p.dataType === "node") onClick(p.data.name); });
  return chart;
}
