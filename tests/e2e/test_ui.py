"""The web UI in a real headless Chromium (Playwright, Debian's chromium) against a stack the test
starts: the local broker, a worker with chdb, stage 3 and the UI, generated traffic with a
latency fault and a hostile service name. Screenshots of each page go to the artifacts folder
(OTEL_INSIGHTS_ARTIFACTS, else the test's tmp folder)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from playwright.sync_api import expect

from processor.dashboards import spec as spec_mod
from processor.generate import FaultSpec, ShopGenerator
from processor.generate.sinks import send_kafka
from processor.localstack import free_port
from tests.integration.harness import Pipeline, make_pipeline, read_topic, wait_until

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "ui-t0ken"
HOSTILE = "<img src=x onerror=alert(1)>"
W_NS = 2_000_000_000
ALL_TYPES = {"timeseries", "stat", "table", "topology", "bar", "heatmap", "text", "insight"}


def _traffic(start: int) -> list:
    fault = FaultSpec("latency_shift", "product-catalog", start + 44 * 10**9, start + 54 * 10**9, 5.0)
    gen = ShopGenerator(seed=41, rate=120, start_ns=start, faults=[fault])
    traces = [t for t in gen.traces(70) if t.end_ns < start + 70 * 10**9]
    for tr in traces[::40]:  # some of the ad service's spans come from a hostile name
        for rs in tr.data.resource_spans:
            for kv in rs.resource.attributes:
                if kv.key == "service.name" and kv.value.string_value == "ad":
                    kv.value.string_value = HOSTILE
    return traces


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory) -> Iterator[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: scripts/test.sh installs Debian's chromium (as root)")
    tmp = tmp_path_factory.mktemp("ui")
    artifacts = Path(os.environ.get("OTEL_INSIGHTS_ARTIFACTS") or tmp / "artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    topic = f"ui-{os.getpid()}"
    broker.create_topic(topic, 3)
    ui_port = free_port()
    p = make_pipeline(tmp, broker.bootstrap, topic, f"ui-{os.getpid()}", narrator=True,
                      ui=f"endpoint: 127.0.0.1:{ui_port}, auth: {{bearer_token_env: OI_UI_TOKEN}}")
    p.env["OI_UI_TOKEN"] = TOKEN
    p.start()
    base = f"http://127.0.0.1:{ui_port}"
    wait_until(lambda: _status(base + "/healthz") == 200, 60, "the UI to answer", p)
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
    world = {"p": p, "base": base, "page": page, "topic": topic, "broker": broker, "dialogs": dialogs,
             "errors": errors, "artifacts": artifacts, "tmp": tmp}
    try:
        yield world
    finally:
        browser.close()
        pw.stop()
        world["p"].stop()


def _in_thread(coro: Any) -> Any:
    """Run a coroutine to its end on a thread of its own (Playwright's sync API holds an event
    loop on this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _status(url: str, token: str | None = None) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _api(world: dict, path: str) -> Any:
    resp = world["page"].request.get(world["base"] + path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.ok, (path, resp.status, resp.text())
    return resp.json()


def _login(page: Any) -> None:
    """The API asks for the token: the page shows its dialog, the user types it."""
    page.wait_for_selector("#token-dialog[open]", timeout=20_000)
    page.fill("#token-input", TOKEN)
    page.click("#token-form button")


def _shot(world: dict, name: str) -> None:
    world["page"].screenshot(path=str(world["artifacts"] / f"ui-{name}.png"), full_page=True)


def test_ui(stack) -> None:
    """One walk through the UI as an on-call engineer would take it (in order: live feed, map,
    detail, dashboards, feedback, a saved dashboard across a server restart)."""
    world, page = stack, stack["page"]
    # Without the token the API answers 401; the page asks for it.
    assert _status(world["base"] + "/api/insights") == 401
    assert _status(world["base"] + "/api/insights", TOKEN) == 200
    page.goto(world["base"] + "/#/insights")
    _login(page)
    page.wait_for_selector("#feed .empty")
    page.goto(world["base"] + "/#/map")
    page.wait_for_selector("#map-empty")
    assert world["topic"] in page.inner_text("#map-empty") and "partition_traces_by_id" in page.inner_text("#map-empty")
    _shot(world, "empty-map")

    # Traffic with a fault arrives while the feed is open: the card appears without a reload.
    page.goto(world["base"] + "/#/insights")
    page.wait_for_selector("#feed .empty")
    start = (time.time_ns() // W_NS - 120) * W_NS
    _in_thread(send_kafka(_traffic(start), [world["broker"].bootstrap], world["topic"]))
    card = page.wait_for_selector("article.insight", timeout=120_000)
    assert "product-catalog" in card.inner_text()
    assert page.locator("article.insight .observed li").count() > 0
    assert page.locator("article.insight .causes li").count() > 0
    assert page.locator("article.insight .badge.grounded").count() == 1
    _shot(world, "insights")

    # The map: every node with the health the catalogue gives it; the hostile name is text.
    # Its 24 hours read the hourly rollups, which the worker keeps (within a tick or two).
    hour = start // 10**6 // 3_600_000 * 3_600_000

    def requests(name: str) -> int:
        return sum(r["requests"] for r in _api(world, f"/api/query/{name}?since_ms={hour}"))

    wait_until(lambda: requests("map_nodes") == requests("topology_nodes") > 0, 60, "the rollups", world["p"])
    page.goto(world["base"] + "/#/map?range=24h")
    nodes = _api(world, "/api/query/map_nodes?since=24h")
    expect(page.locator("#node-list li")).to_have_count(len(nodes), timeout=30_000)
    shown = {li.get_attribute("data-node"): li.get_attribute("data-health")
             for li in page.query_selector_all("#node-list li")}
    assert shown == {n["node"]: n["health"] for n in nodes}
    assert HOSTILE in shown and "frontend" in shown and "postgres" in shown
    assert page.locator("#node-list li", has_text=HOSTILE).count() == 1
    _shot(world, "map")

    # A service's detail on click: RED, its edges, its incident's narrative.
    page.click("#node-list li[data-node='product-catalog']")
    page.wait_for_selector("#detail-edges tbody tr")
    page.wait_for_selector("#detail .narrative .observed li")
    _shot(world, "detail")

    # A spec published on the topic with every panel type renders every panel.
    specs = _in_thread(read_topic(world["broker"].bootstrap, f"{world['topic']}-dashboards"))
    assert specs, "no incident dashboard was published"
    every = _every_panel_type(specs[-1])
    assert spec_mod.check(every) == []
    _in_thread(_publish(world, every))
    wait_until(lambda: _status(f"{world['base']}/api/dashboards/{every['id']}", TOKEN) == 200, 30,
               "the UI to read the published spec", world["p"])
    page.goto(world["base"] + f"/#/dashboards/{every['id']}")
    expect(page.locator("#dashboard-grid .panel[data-rendered]")).to_have_count(len(every["panels"]), timeout=30_000)
    rendered = {el.get_attribute("data-panel-type"): el.get_attribute("data-rendered")
                for el in page.query_selector_all("#dashboard-grid .panel")}
    assert set(rendered) == ALL_TYPES and "error" not in rendered.values(), rendered
    _shot(world, "dashboard")

    # Feedback from the page is stored with who and when.
    page.goto(world["base"] + "/#/insights")
    page.fill("#feedback-user", "oncall-ana")
    page.click("article.insight .fb-false")
    expect(page.locator("article.insight .feedback-status").first).to_contain_text("false alarm")
    stored = _api(world, "/api/feedback")
    assert [(f["verdict"], f["user"]) for f in stored] == [("false_alarm", "oncall-ana")]

    # Save the incident's dashboard as a custom one: renamed, a panel removed, one moved up.
    incident = specs[-1]
    page.goto(world["base"] + f"/#/dashboards/{incident['id']}")
    page.wait_for_selector("#dashboard-grid .panel[data-rendered]")
    page.click("#customize")
    page.fill("#custom-title", "Checkout latency, my view")
    page.click("#custom-editor li:nth-child(2) .remove")
    page.click("#custom-editor li:nth-child(2) .up")
    page.click("#custom-save")
    page.wait_for_url(re.compile(r"#/dashboards/custom-"), timeout=20_000)
    custom_id = unquote(page.url.split("#/dashboards/", 1)[1])
    saved = _api(world, f"/api/dashboards/{custom_id}")
    want_order = [p["title"] for p in incident["panels"]]
    want_order.pop(1)
    want_order[0], want_order[1] = want_order[1], want_order[0]
    assert saved["title"] == "Checkout latency, my view" and [p["title"] for p in saved["panels"]] == want_order

    # ... and survives a restart of the server.
    world["p"].stop()
    world["p"] = Pipeline(world["p"].config_path, world["p"].port, world["tmp"] / "restart.log",
                          env=dict(world["p"].env))
    world["p"].start()
    wait_until(lambda: _status(world["base"] + "/healthz") == 200, 60, "the UI to answer again", world["p"])
    page.goto(world["base"] + "/#/dashboards")
    page.reload()
    row = page.wait_for_selector(f"#saved-list tr[data-dashboard-id='{custom_id}']", timeout=30_000)
    assert "Checkout latency, my view" in row.inner_text()

    # Query parameters: an injection attempt in a typed one is refused; in a name it is data.
    bad = page.request.get(world["base"] + "/api/query/health?limit=1;DROP%20TABLE%20x",
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert bad.status == 400
    assert _api(world, "/api/query/health?since=24h&service=%27%20OR%201%3D1%20--") == []
    assert len(_api(world, "/api/query/health?since=24h")) > 0

    assert world["dialogs"] == [], world["dialogs"]  # nothing in a name ran as script
    assert world["errors"] == [], world["errors"]


def _every_panel_type(incident: dict) -> dict:
    """The incident's dashboard plus the panel types it lacks, as a new dashboard."""
    panels = [dict(p) for p in incident["panels"]]
    have = {p["type"] for p in panels}
    y = max(p["grid"]["y"] + p["grid"]["h"] for p in panels)
    nid = max(p["id"] for p in panels)
    if "text" not in have:
        panels.append({"id": nid + 1, "type": "text", "title": "Note", "text": f"Written by a test. {HOSTILE}",
                       "grid": {"x": 0, "y": y, "w": 24, "h": 2}})
    return {**incident, "id": "test-every-panel-type", "version": 1, "title": "Every panel type", "panels": panels}


async def _publish(world: dict, spec: dict) -> None:
    from aiokafka import AIOKafkaProducer

    prod = AIOKafkaProducer(bootstrap_servers=world["broker"].bootstrap)
    await prod.start()
    try:
        await prod.send_and_wait(f"{world['topic']}-dashboards", json.dumps(spec).encode(), key=spec["id"].encode())
    finally:
        await prod.stop()
