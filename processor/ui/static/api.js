// The UI's one way to the server: fetch with the bearer token (asked for once, kept for this
// tab), JSON in and out, and the live event stream read with fetch (EventSource cannot send
// an Authorization header).
const TOKEN_KEY = "otel-insights-token";

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function headers(extra = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function askToken() {
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  const form = document.getElementById("token-form");
  return new Promise((resolve) => {
    form.onsubmit = (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      dialog.close();
      resolve();
    };
    if (!dialog.open) dialog.showModal();
  });
}

export async function request(method, path, body) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
    if (body !== undefined) init.body = JSON.stringify(body);
    const resp = await fetch(path, init);
    if (resp.status === 401) { await askToken(); continue; }
    let data = null;
    try { data = await resp.json(); } catch { data = null; }
    if (!resp.ok) throw new ApiError(resp.status, (data && data.error) || `${resp.status} ${resp.statusText}`);
    return data;
  }
  throw new ApiError(401, "the API refused the token");
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);
export const put = (path, body) => request("PUT", path, body);

export function query(name, params = {}) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) qs.set(k, String(v));
  return get(`/api/query/${encodeURIComponent(name)}?${qs}`);
}

// Server-sent events over fetch; reconnects with a growing pause; calls onEvent(kind, data).
export function listen(onEvent, onState) {
  let stopped = false;
  let pause = 500;
  (async function loop() {
    while (!stopped) {
      try {
        const resp = await fetch("/api/events", { headers: headers() });
        if (resp.status === 401) { onState("offline"); await askToken(); continue; }
        if (!resp.ok || !resp.body) throw new Error(String(resp.status));
        onState("live");
        pause = 500;
        const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            let kind = "message";
            let data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event: ")) kind = line.slice(7);
              else if (line.startsWith("data: ")) data += line.slice(6);
            }
            if (data) onEvent(kind, JSON.parse(data));
          }
        }
      } catch (err) {
        // the server went away or restarted: try again
      }
      onState("offline");
      await new Promise((r) => setTimeout(r, pause));
      pause = Math.min(pause * 2, 10000);
    }
  })();
  return () => { stopped = true; };
}
