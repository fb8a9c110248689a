// The live insights feed: newest first, each card replaced in place by its newer versions.
import { post } from "./api.js";
import { clear, el, when } from "./dom.js";
import { badges, narrative } from "./narrative.js";

const USER_KEY = "otel-insights-user";

function card(insight) {
  const status = el("span", { class: "feedback-status" });
  const send = async (verdict) => {
    const user = document.getElementById("feedback-user").value.trim() || "anonymous";
    localStorage.setItem(USER_KEY, user);
    try {
      await post("/api/feedback", { insight_id: insight.insight_id, verdict, user });
      status.textContent = verdict === "helpful" ? "Thanks: marked helpful" : "Thanks: marked a false alarm";
    } catch (err) {
      status.textContent = `Not saved: ${err.message}`;
    }
  };
  return el("article", { class: `insight sev-${insight.severity}`, dataset: { insightId: insight.insight_id, version: insight.version } },
    el("header", {},
      el("h3", {}, insight.suspected_origin ? insight.suspected_origin.entity : insight.incident_id),
      badges(insight),
      el("span", { class: "updated" }, `v${insight.version} · ${insight.change} · ${when(insight.updated_at)}`)),
    narrative(insight),
    el("footer", {},
      el("a", { href: `#/dashboards/${encodeURIComponent(insight.dashboard_id)}`, class: "dash-link" }, "Incident dashboard"),
      el("button", { type: "button", class: "fb-helpful", onclick: () => send("helpful") }, "Helpful"),
      el("button", { type: "button", class: "fb-false", onclick: () => send("false_alarm") }, "False alarm"),
      status));
}

export function renderFeed(view, insights) {
  clear(view);
  const list = el("div", { id: "feed", class: "feed" });
  view.append(
    el("div", { class: "toolbar" }, el("h2", {}, "Insights"),
      el("label", {}, "Your name (for feedback) ",
        el("input", { id: "feedback-user", value: localStorage.getItem(USER_KEY) || "", maxlength: 100 }))),
    list);
  if (!insights.length) {
    list.append(el("p", { class: "empty" }, "No insights yet. They appear here as incidents open, without a reload."));
  }
  for (const i of insights) list.append(card(i));
}

export function upsertCard(insight) {
  const list = document.getElementById("feed");
  if (!list) return;
  for (const empty of list.querySelectorAll(".empty")) empty.remove();
  for (const old of list.querySelectorAll("article.insight")) if (old.dataset.insightId === insight.insight_id) old.remove();
  list.prepend(card(insight));
}
