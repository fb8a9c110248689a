// Generated and saved dashboards: the list, one dashboard rendered from its spec, and saving a
// dashboard as a custom one (a title, the panels to keep, their order).
import { get, post, put } from "./api.js";
import { clear, el, when } from "./dom.js";
import { renderPanel, timeRange } from "./panels.js";

export async function renderList(view) {
  clear(view);
  const rows = await get("/api/dashboards");
  view.append(el("div", { class: "toolbar" }, el("h2", {}, "Dashboards")));
  if (!rows.length) {
    view.append(el("p", { class: "empty" }, "No dashboards yet. One is generated for each incident; "
      + "`otel-insights dashboards generate --service NAME` makes one for a service."));
    return;
  }
  const groups = [["Saved", rows.filter((r) => r.kind === "custom")], ["Generated", rows.filter((r) => r.kind !== "custom")]];
  for (const [title, list] of groups) {
    if (!list.length) continue;
    view.append(el("h3", {}, title), el("table", { class: "data dashboards", id: title === "Saved" ? "saved-list" : "generated-list" },
      el("thead", {}, el("tr", {}, ["Title", "Kind", "For", "By", "Version", "Updated"].map((h) => el("th", {}, h)))),
      el("tbody", {}, list.map((r) => el("tr", { dataset: { dashboardId: r.dashboard_id } },
        el("td", {}, el("a", { href: `#/dashboards/${encodeURIComponent(r.dashboard_id)}` }, r.title)),
        el("td", {}, r.kind), el("td", {}, r.audience), el("td", {}, r.generator),
        el("td", { class: "num" }, String(r.version)), el("td", {}, when(r.updated_at)))))));
  }
}

function editor(spec, onSave) {
  const order = spec.panels.map((p) => p.id);
  const titleInput = el("input", { id: "custom-title", value: spec.kind === "custom" ? spec.title : `${spec.title} (saved)`, maxlength: 300 });
  const list = el("ol", { class: "panel-order" });
  const draw = () => {
    clear(list);
    order.forEach((id, i) => {
      const p = spec.panels.find((x) => x.id === id);
      list.append(el("li", { dataset: { panelId: id } }, el("span", {}, `${p.title} (${p.type})`),
        el("button", { type: "button", class: "up", disabled: i === 0, onclick: () => { order.splice(i - 1, 0, order.splice(i, 1)[0]); draw(); } }, "↑"),
        el("button", { type: "button", class: "down", disabled: i === order.length - 1, onclick: () => { order.splice(i + 1, 0, order.splice(i, 1)[0]); draw(); } }, "↓"),
        el("button", { type: "button", class: "remove", disabled: order.length === 1, onclick: () => { order.splice(i, 1); draw(); } }, "✕")));
    });
  };
  draw();
  const status = el("span", { class: "save-status" });
  return el("form", { class: "editor", id: "custom-editor", onsubmit: async (ev) => {
    ev.preventDefault();
    try { await onSave(titleInput.value, order); } catch (err) { status.textContent = `Not saved: ${err.message}`; }
  } }, el("label", {}, "Title ", titleInput), list, el("button", { type: "submit", id: "custom-save" }, "Save"), status);
}

export async function renderDashboard(view, id, catalogue) {
  clear(view);
  const spec = await get(`/api/dashboards/${encodeURIComponent(id)}`);
  const range = timeRange(spec);
  const grid = el("div", { class: "grid", id: "dashboard-grid", dataset: { dashboardId: spec.id, version: spec.version } });
  const tools = el("div", { class: "tools" });
  const save = async (title, panels) => {
    const body = { title, panels };
    const made = spec.kind === "custom"
      ? await put(`/api/dashboards/${encodeURIComponent(spec.id)}`, body)
      : await post(`/api/dashboards/${encodeURIComponent(spec.id)}`, body);
    location.hash = `#/dashboards/${encodeURIComponent(made.id)}`;
  };
  tools.append(el("button", { type: "button", id: "customize", onclick: () => {
    if (!tools.querySelector("form")) tools.append(editor(spec, save));
  } }, spec.kind === "custom" ? "Edit" : "Save as custom"));
  view.append(el("div", { class: "toolbar" }, el("h2", {}, spec.title),
    el("span", { class: "meta" }, `${spec.kind} · for ${spec.audience} · v${spec.version} · ${spec.time_range.from} → ${spec.time_range.to}`)),
  el("p", { class: "description" }, spec.description), tools, grid);
  await Promise.all(spec.panels.map(async (panel) => {
    const body = el("div", { class: "body" });
    const box = el("section", { class: "panel", dataset: { panelType: panel.type, panelId: panel.id } },
      el("h3", {}, panel.title), body);
    box.style.gridColumn = `${panel.grid.x + 1} / span ${panel.grid.w}`;
    box.style.gridRow = `${panel.grid.y + 1} / span ${panel.grid.h}`;
    grid.append(box);
    try {
      const ok = await renderPanel(body, panel, spec, range, catalogue);
      box.dataset.rendered = ok ? "data" : "empty";
    } catch (err) {
      body.append(el("p", { class: "error" }, err.message));
      box.dataset.rendered = "error";
    }
  }));
}
