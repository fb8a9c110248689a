"""The UI's HTTP server on chdb with a worker's data (no browser): headers, token, CORS, live
events, catalogue queries, saved dashboards and feedback, and what it refuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import ClientSession, web

from pipelines.store_io import StoreIO
from pipelines.ui import StoreForUi
from processor.auth import BearerAuth
from processor.dashboards import rules
from processor.telemetry import Metrics
from processor.ui.server import CSP, make_app
from processor.ui.state import LiveState
from tests.shop_store import ShopStore, module_fixture

pytestmark = pytest.mark.integration
shop = module_fixture(minutes=12, fault=True)
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def io(shop: ShopStore) -> Iterator[StoreIO]:
    yield StoreIO(shop.store, Metrics(), shop.context.window_ms)  # the module closes the store


async def _serve(io: StoreIO, state: LiveState, fn: Any, **kw: Any) -> Any:
    published: list[dict] = []

    async def publish(spec: dict) -> None:
        published.append(spec)

    async def ready() -> dict[str, str]:
        return {}

    app = make_app(StoreForUi(io), state, BearerAuth(TOKEN), {"input_topic": "spans", "clickhouse": "chdb://x"},
                   ready, publish_spec=publish, **kw)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with ClientSession(f"http://127.0.0.1:{port}") as http:
            return await fn(http, published)
    finally:
        await runner.cleanup()


def _insight(shop: ShopStore) -> dict:
    (row,) = shop.store.catalogue("insight", {"since_ms": 0, "incident_id": shop.incidents[0]})
    return json.loads(row["message"])


def test_pages_are_open_the_api_wants_the_token_and_every_answer_has_the_headers(io, shop) -> None:
    async def go(http: ClientSession, _: list) -> None:
        page = await http.get("/")
        assert page.status == 200 and "text/html" in page.headers["Content-Type"]
        assert page.headers["Content-Security-Policy"] == CSP and "'unsafe-inline'" not in CSP
        assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
        js = await http.get("/static/vendor/echarts/echarts.esm.min.js")
        assert js.status == 200 and js.headers["Content-Security-Policy"] == CSP
        assert (await http.get("/static/../../server.py")).status in (403, 404)
        no = await http.get("/api/query/health")
        assert no.status == 401 and no.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await http.get("/api/query/health", headers={"Authorization": "Bearer nope"})).status == 401
        ok = await http.get("/api/query/health?since_ms=0", headers=AUTH)
        assert ok.status == 200 and len(await ok.json()) > 0
        # No CORS unless an origin is listed: a preflight from elsewhere is refused.
        pre = await http.options("/api/query/health", headers={"Origin": "https://evil.example",
                                                                "Access-Control-Request-Method": "GET"})
        assert pre.status == 403 and "Access-Control-Allow-Origin" not in pre.headers
        bad = await http.get("/api/query/health?limit=1;DROP", headers=AUTH)
        assert bad.status == 400 and "whole number" in (await bad.json())["error"]
        assert (await http.get("/api/query/nope", headers=AUTH)).status == 404
        big = await http.post("/api/feedback", data=b"x" * 300_000, headers=AUTH)
        assert big.status == 413

    asyncio.run(_serve(io, LiveState(), go))


def test_live_events_reach_a_listener_once_per_new_version(io, shop) -> None:
    insight = _insight(shop)
    state = LiveState()

    async def go(http: ClientSession, _: list) -> None:
        resp = await http.get("/api/events", headers=AUTH)
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert await resp.content.readuntil(b"\n\n") == b"event: hello\ndata: {}\n\n"
        value = json.dumps(insight).encode()
        state.take("insight", value)
        state.take("insight", value)  # the same version again (at-least-once): not shown twice
        state.take("insight", json.dumps({**insight, "version": insight["version"] + 1}).encode())
        state.take("insight", b"not json")
        got = [json.loads((await resp.content.readuntil(b"\n\n")).split(b"data: ", 1)[1]) for _ in range(2)]
        assert [g["version"] for g in got] == [insight["version"], insight["version"] + 1]
        assert got[0]["dashboard_id"].startswith("incident-") and state.rejected == 1
        listed = await (await http.get("/api/insights", headers=AUTH)).json()
        assert [i["version"] for i in listed] == [insight["version"] + 1]
        resp.close()

    asyncio.run(_serve(io, state, go))


def test_saving_a_dashboard_as_custom_and_changing_it(io, shop) -> None:
    base = rules.incident(_insight(shop), "sre", shop.config.windows.health)
    state = LiveState()
    state.dashboards.offer(base)

    async def go(http: ClientSession, published: list) -> None:
        ids = [p["id"] for p in base["panels"]]
        made = await http.post(f"/api/dashboards/{base['id']}", json={"title": "Mine", "panels": ids[::-1][:3]},
                               headers=AUTH)
        assert made.status == 201, await made.text()
        spec = await made.json()
        assert spec["kind"] == "custom" and spec["generator"] == {"kind": "user", "model": None, "based_on": base["id"]}
        assert [p["title"] for p in spec["panels"]] == [p["title"] for p in base["panels"]][::-1][:3]
        changed = await http.put(f"/api/dashboards/{spec['id']}", json={"title": "Mine, renamed", "panels": [2, 1]},
                                 headers=AUTH)
        assert changed.status == 200 and (await changed.json())["version"] == 2
        stored = await (await http.get(f"/api/dashboards/{spec['id']}", headers=AUTH)).json()
        assert stored["title"] == "Mine, renamed" and len(stored["panels"]) == 2
        listed = await (await http.get("/api/dashboards", headers=AUTH)).json()
        assert [r["title"] for r in listed if r["kind"] == "custom"] == ["Mine, renamed"]
        assert [p["version"] for p in published] == [1, 2]
        for body, status in (({"title": "x", "panels": [999]}, 400), ({"title": "", "panels": [1]}, 400),
                             ({"title": "x", "panels": []}, 400), ("nope", 400)):
            r = await http.post(f"/api/dashboards/{base['id']}", json=body, headers=AUTH)
            assert r.status == status, (body, await r.text())
        assert (await http.put(f"/api/dashboards/{base['id']}", json={"title": "x", "panels": [1]},
                               headers=AUTH)).status == 409

    asyncio.run(_serve(io, state, go))


def test_feedback_is_stored_with_who_and_when(io, shop) -> None:
    insight = _insight(shop)
    state = LiveState()
    state.take("insight", json.dumps(insight).encode())

    async def go(http: ClientSession, _: list) -> None:
        ok = await http.post("/api/feedback", json={"insight_id": insight["insight_id"], "verdict": "false_alarm",
                                                     "user": "  ana  "}, headers=AUTH)
        assert ok.status == 201, await ok.text()
        rows = await (await http.get(f"/api/feedback?insight_id={insight['insight_id']}", headers=AUTH)).json()
        mine = [(r["verdict"], r["user"], r["incident_id"]) for r in rows if r["user"] != "tester"]
        assert mine == [("false_alarm", "ana", insight["incident_id"])]  # (tester's is the fixture's)
        # A false alarm keeps the incident's windows of its entities out of autoencoder training.
        first, last = insight["first_window"], insight["last_window"]
        from processor.insights.message import iso_ms

        window = shop.context.window_ms
        kept_out = io.store.false_alarm_windows(iso_ms(first) - 10 * window, iso_ms(last) + 10 * window, window)
        assert sorted(kept_out) == list(range(iso_ms(first), iso_ms(last) + 1, window))
        assert all(kept_out[ws] == {(e["entity_type"], e["entity"]) for e in insight["entities"]} for ws in kept_out)
        for body in ({"insight_id": "nope", "verdict": "helpful"},
                     {"insight_id": insight["insight_id"], "verdict": "meh"}, [1]):
            assert (await http.post("/api/feedback", json=body, headers=AUTH)).status == 400

    asyncio.run(_serve(io, state, go))
