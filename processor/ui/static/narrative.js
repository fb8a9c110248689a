// An insight as people read it: what was observed kept apart from what may have caused it.
import { el, when } from "./dom.js";

// Names in a narrative are written in backticks: shown as code, still as text nodes.
export function rich(text) {
  return String(text || "").split("`").map((part, i) => (i % 2 ? el("code", {}, part) : part));
}

function points(list) {
  return el("ul", {}, (list || []).map((p) => el("li", {}, rich(p.text))));
}

export function narrative(insight) {
  const n = insight.narrative || {};
  const origin = insight.suspected_origin ? insight.suspected_origin.entity : null;
  return el("div", { class: "narrative" },
    el("p", { class: "summary" }, rich(n.summary)),
    origin ? el("p", { class: "origin" }, "Suspected origin: ", el("strong", { class: "name" }, origin)) : null,
    el("div", { class: "columns" },
      el("section", { class: "observed" }, el("h4", {}, "Observed"), points(n.observed)),
      el("section", { class: "causes" }, el("h4", {}, "Possible causes"), points(n.possible_causes))),
    (n.suggested_checks || []).length
      ? el("section", { class: "checks" }, el("h4", {}, "Suggested checks"), el("ul", {}, n.suggested_checks.map((c) => el("li", {}, rich(c)))))
      : null,
    el("p", { class: "meta" }, `${insight.first_window ? when(insight.first_window) : ""} → ${when(insight.last_window)}`));
}

export function badges(insight) {
  const narrator = insight.narrator === "template" ? "template" : `model ${insight.model || insight.narrator}`;
  return el("span", { class: "badges" },
    el("span", { class: `badge sev-${insight.severity}` }, insight.severity),
    el("span", { class: `badge status-${insight.status}` }, insight.status),
    el("span", { class: `badge ${insight.grounded ? "grounded" : "ungrounded"}` }, insight.grounded ? "grounded" : "not grounded"),
    el("span", { class: "badge narrator" }, narrator));
}
