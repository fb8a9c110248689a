// ECharts, vendored (vendor/echarts, see its MANIFEST.json): charts render into canvas, and
// tooltips use ECharts' rich-text mode, so no data ever becomes HTML.
import * as echarts from "./vendor/echarts/echarts.esm.min.js";
import { HEALTH_COLOURS, fmt } from "./dom.js";

export { echarts };

const charts = new WeakMap();

export function chartFor(node) {
  let chart = charts.get(node);
  if (!chart) {
    // A container not laid out yet has no size, and ECharts' view coordinate system (graphs)
    // fails on a zero rectangle: start at a default size; the observer sizes it right.
    chart = echarts.init(node, null, { renderer: "canvas", width: node.clientWidth || 480, height: node.clientHeight || 240 });
    charts.set(node, chart);
    new ResizeObserver(() => { if (node.clientWidth && node.clientHeight) chart.resize({ width: "auto", height: "auto" }); }).observe(node);
  }
  return chart;
}

const TOOLTIP = { trigger: "axis", renderMode: "richText", confine: true };

function thresholdLines(thresholds) {
  return (thresholds || []).filter((t) => t.value !== null && t.value !== undefined).map((t) => ({
    yAxis: t.value, lineStyle: { color: t.color === "yellow" ? HEALTH_COLOURS.degraded : t.color === "red"
      ? HEALTH_COLOURS.critical : "#888", type: "dashed" }, label: { formatter: t.health || "" },
  }));
}

export function lines(node, rows, fields, unit, thresholds) {
  const chart = chartFor(node);
  chart.setOption({
    animation: false,
    tooltip: { ...TOOLTIP, valueFormatter: (v) => fmt(v, unit) },
    legend: { type: "scroll", top: 0 },
    grid: { left: 56, right: 16, top: 28, bottom: 28 },
    xAxis: { type: "time" },
    yAxis: { type: "value", axisLabel: { formatter: (v) => fmt(v, unit) } },
    series: fields.map((f, i) => ({
      name: f, type: "line", showSymbol: false, data: rows.map((r) => [r.time, r[f]]),
      markLine: i === 0 && thresholds && thresholds.length ? { symbol: "none", silent: true, data: thresholdLines(thresholds) } : undefined,
    })),
  }, true);
  return chart;
}

export function stateTimeline(node, rows) {
  const states = ["insufficient_data", "healthy", "degraded", "critical"];
  const times = [...new Set(rows.map((r) => r.time))];
  const names = [...new Set(rows.map((r) => r.service))];
  const chart = chartFor(node);
  chart.setOption({
    animation: false,
    tooltip: { renderMode: "richText", formatter: (p) => `${names[p.value[1]]}: ${states[p.value[2]]}` },
    grid: { left: 120, right: 16, top: 8, bottom: 28 },
    xAxis: { type: "category", data: times.map((t) => t.slice(11, 19)) },
    yAxis: { type: "category", data: names },
    visualMap: { show: false, type: "piecewise", dimension: 2,
      pieces: states.map((s, i) => ({ value: i, color: HEALTH_COLOURS[s] })) },
    series: [{ type: "heatmap", data: rows.map((r) => [times.indexOf(r.time), names.indexOf(r.service), Math.max(0, states.indexOf(r.health))]) }],
  }, true);
  return chart;
}

export function bars(node, rows, field, unit) {
  const chart = chartFor(node);
  const label = (r) => (r.client !== undefined ? `${r.client} → ${r.server}` : String(Object.values(r)[0]));
  chart.setOption({
    animation: false,
    tooltip: { ...TOOLTIP, trigger: "item", valueFormatter: (v) => fmt(v, unit) },
    grid: { left: 180, right: 24, top: 8, bottom: 24 },
    xAxis: { type: "value", axisLabel: { formatter: (v) => fmt(v, unit) } },
    yAxis: { type: "category", inverse: true, data: rows.map(label) },
    series: [{ type: "bar", data: rows.map((r) => r[field]) }],
  }, true);
  return chart;
}

export function heatmap(node, rows) {
  const buckets = rows.length ? Object.keys(rows[0]).filter((k) => k !== "time") : [];
  const data = [];
  let max = 1;
  rows.forEach((r, x) => buckets.forEach((b, y) => { data.push([x, y, r[b]]); max = Math.max(max, r[b]); }));
  const chart = chartFor(node);
  chart.setOption({
    animation: false,
    tooltip: { renderMode: "richText", formatter: (p) => `≤ ${buckets[p.value[1]]} ms: ${p.value[2]}` },
    grid: { left: 56, right: 16, top: 8, bottom: 40 },
    xAxis: { type: "category", data: rows.map((r) => String(r.time).slice(11, 19)) },
    yAxis: { type: "category", data: buckets.map((b) => (b === "+Inf" ? b : `${b} ms`)) },
    visualMap: { min: 0, max, calculable: false, orient: "horizontal", left: "center", bottom: 0, itemHeight: 80 },
    series: [{ type: "heatmap", data }],
  }, true);
  return chart;
}
