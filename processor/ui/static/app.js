// The page: routes (#/map, #/insights, #/dashboards[/id]), the live stream, the banner.
import { get, listen } from "./api.js";
import { renderDashboard, renderList } from "./dashboards.js";
import { clear, el } from "./dom.js";
import { renderFeed, upsertCard } from "./feed.js";
import { renderMap } from "./map.js";

const ctx = { insights: new Map(), status: {}, catalogue: {}, unread: 0 };
let leave = null;

function banner(text) {
  const b = document.getElementById("banner");
  b.hidden = !text;
  b.textContent = text || "";
}

async function route() {
  if (leave) { leave(); leave = null; }
  const view = document.getElementById("view");
  const [path] = location.hash.replace(/^#\/?/, "").split("?");
  const [page, id] = path.split("/");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.route === (page || "map"));
  try {
    if (page === "insights") {
      ctx.unread = 0;
      document.getElementById("unread").hidden = true;
      renderFeed(view, [...ctx.insights.values()].sort((a, b) => String(b.updated_at).localeCompare(String(a.updated_at))));
    } else if (page === "dashboards" && id) {
      await renderDashboard(view, decodeURIComponent(id), ctx.catalogue);
    } else if (page === "dashboards") {
      await renderList(view);
    } else {
      leave = renderMap(view, ctx);
    }
  } catch (err) {
    clear(view);
    view.append(el("p", { class: "error" }, err.message));
  }
}

function onEvent(kind, data) {
  if (kind === "insight") {
    ctx.insights.set(data.insight_id, data);
    if (location.hash.startsWith("#/insights")) upsertCard(data);
    else {
      ctx.unread += 1;
      const badge = document.getElementById("unread");
      badge.hidden = false;
      badge.textContent = String(ctx.unread);
    }
  }
}

async function start() {
  try {
    ctx.status = await get("/api/status");
    for (const q of await get("/api/catalogue")) ctx.catalogue[q.name] = q;
    for (const i of await get("/api/insights")) ctx.insights.set(i.insight_id, i);
    banner("");
  } catch (err) {
    banner(`The otel-insights API did not answer: ${err.message}`);
  }
  listen(onEvent, (state) => {
    const live = document.getElementById("live");
    live.textContent = state;
    live.dataset.state = state;
  });
  window.addEventListener("hashchange", route);
  await route();
}

start();
