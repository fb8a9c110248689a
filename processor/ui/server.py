"""The web UI's HTTP server: the pages, the catalogue's queries, live updates, feedback and saved dashboards.

Static files (the page, its ES modules, vendored ECharts) are open; everything under /api
is behind the optional bearer token. The API answers only catalogue queries, with typed and
bounded parameters (a bad one is a 400 before ClickHouse sees it); live changes of insights
and dashboard specs reach browsers as server-sent events. Every response carries a strict
Content-Security-Policy (scripts, styles and data only from this origin, no framing) and
the usual security headers; cross-origin requests are refused unless origins are listed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from processor.auth import BearerAuth
from processor.dashboards import custom
from processor.errors import ParamError, StorageError
from processor.insights.message import iso_ms
from processor.storage.catalogue_sql import CATALOGUE
from processor.storage.queries import request_params, rows_to_jsonable
from processor.ui.state import LiveState, summary, with_links

log = logging.getLogger("otel_insights.ui")
MAX_BODY_BYTES = 256 * 1024
KEEPALIVE_S = 15.0
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
VERDICTS = ("helpful", "false_alarm")


class UiStore(Protocol):
    """What the UI needs of ClickHouse; every call is one attempt whose failure is the client's."""

    endpoint: str

    async def catalogue(self, name: str, params: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    async def check(self, spec: dict[str, Any]) -> list[str]: ...

    async def insert_dashboards(self, rows: list[dict[str, Any]]) -> None: ...

    async def insert_feedback(self, rows: list[dict[str, Any]]) -> None: ...


Readiness = Callable[[], Awaitable[dict[str, str]]]  # problems by component; empty: ready


def make_app(store: UiStore, state: LiveState, auth: BearerAuth, status: Mapping[str, Any],
             ready: Readiness, on_feedback: Callable[[str], None] = lambda verdict: None,
             publish_spec: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
             tls: bool = False, cors_origins: tuple[str, ...] = ()) -> web.Application:
    """``status``: what the page shows in empty and error states (topic names, endpoints)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES,
                          middlewares=[_headers(tls, cors_origins), _auth(auth)])
    static = resources.files("processor.ui").joinpath("static")
    index = static.joinpath("index.html").read_bytes()

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=index, content_type="text/html", headers={"Cache-Control": "no-cache"})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "time": time.time()})

    async def readyz(request: web.Request) -> web.Response:
        problems = await ready()
        return web.json_response({"status": "ready" if not problems else "not ready", "problems": problems},
                                 status=200 if not problems else 503)

    async def api_status(request: web.Request) -> web.Response:
        return web.json_response({**status, "insights": len(state.insights.items),
                                  "dashboards": len(state.dashboards.items)})

    async def catalogue(request: web.Request) -> web.Response:
        return web.json_response([{"name": q.name, "description": q.description, "shape": q.shape,
                                   "params": [p.name for p in q.params] + (["step_s"] if "@step_s" in q.sql else []),
                                   "columns": [c.name for c in q.columns]} for q in CATALOGUE.values()])

    maps = MapCache(store)

    async def query(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            params = request_params(name, request.query.items())
        except ParamError as exc:
            return _error(str(exc), 404 if "unknown query" in str(exc) else 400)
        if name in MAP_QUERIES and "since" in request.query and "since_ms" not in request.query:
            return await _rows(maps.get(name, request.query_string, params))
        return await _rows(store.catalogue(name, params))

    async def insights(request: web.Request) -> web.Response:
        return web.json_response([with_links(i) for i in state.insights.newest_first()[:200]])

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        q = state.subscribe()
        try:
            await resp.write(b"event: hello\ndata: {}\n\n")
            while True:
                try:
                    item = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if item is None:
                    break
                kind, payload = item
                await resp.write(f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=True)}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            state.unsubscribe(q)
        return resp

    async def dashboards(request: web.Request) -> web.Response:
        try:  # saved dashboards whenever they were saved; generated ones of the last 30 days
            rows = await store.catalogue("dashboards", request_params("dashboards", {"since_ms": "0", "kind": "custom"}))
            rows += await store.catalogue("dashboards", request_params("dashboards", [("since", "720h")]))
        except StorageError as exc:
            return _error(str(exc), 503 if exc.transient else 500)
        listed = {r["dashboard_id"]: r for r in rows_to_jsonable(rows)}
        for spec in state.dashboards.items.values():  # newer than stored, or not stored yet
            held = listed.get(spec["id"])
            if held is None or int(held["version"]) < int(spec["version"]):
                listed[spec["id"]] = summary(spec)
        return web.json_response(sorted(listed.values(), key=lambda r: str(r["updated_at"]), reverse=True))

    async def one(did: str) -> dict[str, Any] | None:
        held = state.dashboards.items.get(did)
        rows = await store.catalogue("dashboard", request_params("dashboard", {"dashboard_id": did, "since_ms": "0"}))
        stored = json.loads(rows[0]["spec"]) if rows else None
        if held is None or (stored is not None and int(stored["version"]) > int(held["version"])):
            return stored
        return held

    async def dashboard(request: web.Request) -> web.Response:
        try:
            found = await one(request.match_info["id"])
        except ParamError as exc:
            return _error(str(exc), 400)
        except StorageError as exc:
            return _error(str(exc), 503 if exc.transient else 500)
        return web.json_response(found) if found is not None else _error("no such dashboard", 404)

    async def save(request: web.Request) -> web.Response:
        """POST: a new custom dashboard from any dashboard; PUT: a new version of a custom one."""
        try:
            body = await request.json()
            base = await one(request.match_info["id"])
            if base is None:
                return _error("no such dashboard", 404)
            if request.method == "PUT" and base["kind"] != "custom":
                return _error("only a saved (custom) dashboard can be changed; save this one first", 409)
            made = custom.customize(base, body, new=request.method == "POST")
            problems = await store.check(made)
            if problems:
                return _error("; ".join(problems[:5]), 422)
            await store.insert_dashboards([custom.row(made)])
            state.dashboards.offer(made)
            if publish_spec is not None:
                await publish_spec(made)
        except (ValueError, TypeError, KeyError) as exc:
            return _error(f"bad request: {str(exc)[:300]}", 400)
        except StorageError as exc:
            return _error(str(exc), 503 if exc.transient else 500)
        return web.json_response(made, status=201 if request.method == "POST" else 200)

    async def feedback(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            row = _feedback_row(body, state)
        except (ValueError, TypeError, KeyError) as exc:
            return _error(f"bad request: {str(exc)[:300]}", 400)
        try:
            await store.insert_feedback([row])
        except StorageError as exc:
            return _error(str(exc), 503 if exc.transient else 500)
        on_feedback(row["verdict"])
        return web.json_response(row, status=201)

    async def feedback_list(request: web.Request) -> web.Response:
        args = list(request.query.items())
        if not any(k in ("since", "since_ms") for k, _ in args):
            args.append(("since", "720h"))
        try:
            params = request_params("feedback", args)
        except ParamError as exc:
            return _error(str(exc), 400)
        return await _rows(store.catalogue("feedback", params))

    app.router.add_get("/", page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/api/catalogue", catalogue)
    app.router.add_get("/api/query/{name}", query)
    app.router.add_get("/api/insights", insights)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/dashboards", dashboards)
    app.router.add_get("/api/dashboards/{id}", dashboard)
    app.router.add_post("/api/dashboards/{id}", save)
    app.router.add_put("/api/dashboards/{id}", save)
    app.router.add_post("/api/feedback", feedback)
    app.router.add_get("/api/feedback", feedback_list)
    app.router.add_static("/static/", path=str(static), append_version=False, show_index=False)
    return app


MAP_QUERIES = frozenset({"topology_nodes", "topology", "map_nodes", "map_edges"})
MAP_FRESH_S = 15.0


class MapCache:
    """The map's queries over a look-back ("last 24h"), answered from what was computed at most
    MAP_FRESH_S ago: the page refreshes every 10 s and every open page asks the same, while
    a 24-hour map merges thousands of sketches. Past that, the stale answer is served at once
    and a refresh runs behind it (one at a time per query), so no reader waits on ClickHouse
    once a map has been drawn."""

    def __init__(self, store: UiStore) -> None:
        self.store = store
        self.entries: dict[tuple[str, str], tuple[float, list[dict[str, Any]]]] = {}
        self.refreshing: dict[tuple[str, str], asyncio.Task[Any]] = {}

    async def get(self, name: str, query: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        key = (name, query)
        held = self.entries.get(key)
        if held is None:
            return await self._compute(key, name, params)
        if time.monotonic() - held[0] > MAP_FRESH_S and key not in self.refreshing:
            task = asyncio.create_task(self._compute(key, name, params))
            self.refreshing[key] = task
            task.add_done_callback(lambda t: (self.refreshing.pop(key, None), t.exception() if not t.cancelled() else None))
        return held[1]

    async def _compute(self, key: tuple[str, str], name: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        rows = await self.store.catalogue(name, params)
        self.entries[key] = (time.monotonic(), rows)
        while len(self.entries) > 64:  # a few ranges of four queries; never unbounded
            self.entries.pop(next(iter(self.entries)))
        return rows


def _feedback_row(body: Any, state: LiveState) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValueError("a JSON object with insight_id, verdict and user")
    insight_id, verdict = str(body["insight_id"]), str(body["verdict"])
    if verdict not in VERDICTS:
        raise ValueError(f"verdict: one of {list(VERDICTS)}")
    insight = state.insights.items.get(insight_id)
    if insight is None:
        raise KeyError(f"no insight {insight_id[:80]!r} in the feed")
    user = str(body.get("user") or "anonymous").strip()[:100] or "anonymous"
    return {"insight_id": insight_id, "incident_id": str(insight["incident_id"]), "verdict": verdict, "user": user,
            "comment": str(body.get("comment") or "")[:2000], "at": int(time.time() * 1000),
            "window_start": iso_ms(insight["first_window"]),
            "last_window": iso_ms(insight["last_window"]),
            "entities": [f"{e['entity_type']}:{e['entity']}" for e in insight.get("entities", ())]}


async def _rows(rows: Awaitable[list[dict[str, Any]]]) -> web.Response:
    try:
        got = await rows
    except ParamError as exc:
        return _error(str(exc), 400)
    except StorageError as exc:
        return _error(str(exc), 503 if exc.transient else 500)
    return web.json_response(rows_to_jsonable(got))


def _error(message: str, status: int) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _auth(auth: BearerAuth) -> Any:
    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/api/") and request.method != "OPTIONS" and \
                not auth.allows(request.headers.get("Authorization")):
            return web.json_response({"error": "missing or wrong bearer token"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="otel-insights"'})
        return await handler(request)
    return check


def _headers(tls: bool, cors_origins: tuple[str, ...]) -> Any:
    @web.middleware
    async def add(request: web.Request, handler: Any) -> web.StreamResponse:
        origin = request.headers.get("Origin", "")
        allowed = origin in cors_origins
        if request.method == "OPTIONS":  # a preflight: answered only for listed origins
            resp: web.StreamResponse = web.Response(status=204 if allowed else 403)
        else:
            try:
                resp = await handler(request)
            except web.HTTPException as exc:
                resp = exc
        resp.headers.update(SECURITY_HEADERS)
        if tls:
            resp.headers["Strict-Transport-Security"] = "max-age=31536000"
        if allowed:
            resp.headers.update({"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                                 "Access-Control-Allow-Headers": "Authorization, Content-Type",
                                 "Access-Control-Allow-Methods": "GET, POST, PUT"})
        if isinstance(resp, web.HTTPException):
            raise resp
        return resp
    return add
