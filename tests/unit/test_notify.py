"""Notifications of insights against local HTTP receivers: Alertmanager-style webhook, Slack,
PagerDuty Events v2; retries with backoff, no retry on a refusal, never blocking."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web

from processor.config.components import NarratorConfig
from processor.insights import facts as facts_mod
from processor.insights import message
from processor.insights.notify import Notifications
from processor.telemetry import Metrics
from tests.unit.test_insights import SHOP, T0, W, _anomaly

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"


def _insight(status: str = "open", change: str = "opened", name: str = "payment") -> dict[str, Any]:
    f = facts_mod.build("inc-9", [_anomaly(name, "p95_ms", 800, 40, 0.95)], SHOP, W)
    return message.build(f, message.template_narration(f), insight_id="inc-9", version=1, status=status,
                         change=change, now_ms=T0 + 5 * W)


class Receiver:
    """Records every POST by path; answers with the statuses queued for that path, then 200."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict]] = []
        self.statuses: dict[str, list[int]] = {}
        self.delay_s = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((request.path, await request.json()))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        queued = self.statuses.get(request.path) or []
        return web.Response(status=queued.pop(0) if queued else 200)


async def _serve(receiver: Receiver) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def _notifications(base: str, **retry: Any) -> tuple[Notifications, Metrics]:
    cfg = NarratorConfig.model_validate({"notifications": [
        {"type": "webhook", "url": f"{base}/alertmanager"},
        {"type": "slack", "url": f"{base}/slack/T000/B000/XXXX"},
        {"type": "pagerduty", "url": f"{base}/v2/enqueue", "routing_key": ROUTING_KEY},
        {"type": "slack", "name": "off", "url": ""},
    ]})
    retry = {"initial_interval": "10ms", "max_interval": "40ms", "max_attempts": 3, **retry}
    configs = tuple(c.model_copy(update={"retry": c.retry.model_validate(retry)}) for c in cfg.notifications)
    metrics = Metrics()
    return Notifications(configs, metrics), metrics


def _count(metrics: Metrics, notifier: str, outcome: str) -> float:
    return metrics.registry.get_sample_value("otel_insights_notifications_total",
                                             {"notifier": notifier, "outcome": outcome}) or 0.0


def test_each_receiver_gets_its_payload_on_open_and_on_resolve() -> None:
    async def go() -> tuple[Receiver, Metrics]:
        rx = Receiver()
        runner, base = await _serve(rx)
        n, metrics = _notifications(base)
        assert len(n.notifiers) == 3  # the one without a url is off
        n.submit(_insight())
        n.submit(_insight("open", "updated"))  # not in `events` by default
        n.submit(_insight("resolved", "resolved"))
        await n.drain(5)
        await n.stop()
        await runner.cleanup()
        return rx, metrics

    rx, metrics = asyncio.run(go())
    by = {}
    for path, body in rx.got:
        by.setdefault(path.split("/")[1], []).append(body)
    am, sl, pd = by["alertmanager"], by["slack"], by["v2"]
    assert [a["status"] for a in am] == ["firing", "resolved"]
    assert am[0]["version"] == "4" and am[0]["alerts"][0]["labels"]["incident_id"] == "inc-9"
    assert am[0]["alerts"][0]["labels"]["suspected_origin"] == "payment"
    assert am[1]["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    assert [p["event_action"] for p in pd] == ["trigger", "resolve"]
    assert all(p["dedup_key"] == "inc-9" and p["routing_key"] == ROUTING_KEY for p in pd)
    assert pd[0]["payload"]["severity"] == "critical" and len(pd[0]["payload"]["summary"]) <= 1024
    assert len(sl) == 2 and ":white_check_mark:" in sl[1]["blocks"][0]["text"]["text"]
    assert _count(metrics, "webhook", "sent") == 2 and _count(metrics, "pagerduty", "sent") == 2


def test_transient_failures_are_retried_and_refusals_are_not(caplog) -> None:
    caplog.set_level(logging.INFO)

    async def go() -> tuple[Receiver, Metrics]:
        rx = Receiver()
        rx.statuses = {"/alertmanager": [503, 429], "/v2/enqueue": [400],
                       "/slack/T000/B000/XXXX": [500, 500, 500]}
        runner, base = await _serve(rx)
        n, metrics = _notifications(base)
        n.submit(_insight())
        await n.drain(5)
        await n.stop()
        await runner.cleanup()
        return rx, metrics

    rx, metrics = asyncio.run(go())
    paths = [p for p, _ in rx.got]
    assert paths.count("/alertmanager") == 3 and _count(metrics, "webhook", "sent") == 1
    assert paths.count("/v2/enqueue") == 1 and _count(metrics, "pagerduty", "failed") == 1
    assert paths.count("/slack/T000/B000/XXXX") == 3 and _count(metrics, "slack", "failed") == 1
    logs = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("otel_insights"))
    assert "refused" in logs
    assert ROUTING_KEY not in logs and "XXXX" not in logs  # secrets: routing key, webhook URLs


def test_a_slow_or_dead_receiver_never_blocks_submit() -> None:
    async def go() -> float:
        rx = Receiver()
        rx.delay_s = 2.0
        runner, base = await _serve(rx)
        n, _ = _notifications(base)
        t0 = time.perf_counter()
        for _ in range(50):
            n.submit(_insight())
        took = time.perf_counter() - t0
        await n.stop()
        await runner.cleanup()
        return took

    assert asyncio.run(go()) < 0.5


def test_hostile_names_cannot_make_slack_links_or_mentions() -> None:
    from processor.insights.notify import slack

    body = _insight(name="<!channel> <https://evil.example|click>")
    text = json.dumps(slack(body))
    assert "<!channel>" not in text and "<https://evil" not in text

