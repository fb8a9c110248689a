// Building DOM from data: every piece of text goes in as a text node, never as HTML, because
// service names, span attributes and model output are untrusted.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

export function fmt(value, unit) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  if (unit === "percentunit" || unit === "percent") return `${(value * 100).toFixed(value < 0.01 ? 2 : 1)}%`;
  if (unit === "ms") return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${value.toFixed(value < 10 ? 2 : 1)} ms`;
  if (unit === "reqps") return `${value.toFixed(value < 10 ? 2 : 1)}/s`;
  if (Number.isInteger(value)) return value.toLocaleString("en");
  return value.toFixed(Math.abs(value) < 10 ? 3 : 1);
}

export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().replace("T", " ").slice(0, 19) + "Z";
}

export const HEALTH_COLOURS = {
  healthy: "#2e9e57", degraded: "#e0a100", critical: "#d6323a", insufficient_data: "#9aa0a6", "": "#9aa0a6",
};
