"""On-call notifications of insights: a generic webhook (Alertmanager's payload), a Slack
incoming webhook and PagerDuty Events API v2, delivered in the background with retries.

`Notifications.submit` never waits on a receiver: a message is queued (bounded; the oldest
is dropped and counted when a receiver is down for long) and a task per receiver delivers
it, retrying connection errors, 429 and 5xx with capped exponential backoff. Webhook URLs
and routing keys are secrets: they appear in no log line.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from processor.config.components import NotifierConfig
from processor.insights.text import safe_name
from processor.telemetry import Metrics

log = logging.getLogger("otel_insights.notify")
QUEUE_SIZE = 1000
SEVERITY_PD = {"critical": "critical", "warning": "warning", "info": "info"}


def _origin(body: dict[str, Any]) -> str:
    return str((body.get("suspected_origin") or {}).get("entity") or "")


def _summary(body: dict[str, Any], limit: int = 1000) -> str:
    return safe_name(body["narrative"]["summary"], limit)


def alertmanager(body: dict[str, Any]) -> dict[str, Any]:
    """Alertmanager's webhook payload (version 4), one alert per incident."""
    firing = body["status"] != "resolved"
    labels = {"alertname": "OtelInsightsIncident", "incident_id": body["incident_id"],
              "severity": body["severity"], "suspected_origin": safe_name(_origin(body))}
    annotations = {"summary": _summary(body),
                   "description": " ".join(safe_name(p["text"], 500) for p in body["narrative"]["observed"][:5]),
                   "narrator": body["narrator"], "grounded": str(body["grounded"]).lower(),
                   "version": str(body["version"]), "change": body["change"]}
    alert = {"status": "firing" if firing else "resolved", "labels": labels, "annotations": annotations,
             "startsAt": body["first_window"], "endsAt": "0001-01-01T00:00:00Z" if firing else body["updated_at"],
             "generatorURL": "", "fingerprint": body["insight_id"]}
    return {"version": "4", "groupKey": f"{{}}:{{incident_id=\"{body['incident_id']}\"}}", "truncatedAlerts": 0,
            "status": alert["status"], "receiver": "otel-insights", "groupLabels": {"incident_id": body["incident_id"]},
            "commonLabels": labels, "commonAnnotations": annotations, "externalURL": "", "alerts": [alert]}


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn control characters; a name cannot make a link or a mention.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(body: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message: the headline, then observed facts and causes apart."""
    icon = {"resolved": "white_check_mark", "escalated": "rotating_light"}.get(body["change"], "warning")
    head = (f":{icon}: *{body['change']}* [{body['severity']}] incident `{safe_name(body['incident_id'])}`"
            + (f" — suspected origin `{_slack_escape(safe_name(_origin(body)).replace('`', ''))}`"
               if _origin(body) else ""))
    n = body["narrative"]
    observed = "\n".join(f"• {_slack_escape(safe_name(p['text'], 500))}" for p in n["observed"][:5])
    causes = "\n".join(f"• {_slack_escape(safe_name(p['text'], 500))}" for p in n["possible_causes"][:3])
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": head}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(_summary(body, 2900))}}]
    if observed:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Observed*\n{observed}"[:2990]}})
    if causes:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Possible causes*\n{causes}"[:2990]}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text":
                   f"narrated by {_slack_escape(safe_name(body['narrator']))}"
                   f"{'' if body['grounded'] else ' (not grounded)'} · v{body['version']}"}]})
    return {"text": _slack_escape(f"{body['change']}: {_summary(body, 300)}"), "blocks": blocks}


def pagerduty(body: dict[str, Any], routing_key: str) -> dict[str, Any]:
    """A PagerDuty Events API v2 event: trigger, or resolve, with the incident id as dedup key."""
    resolve = body["status"] == "resolved"
    out: dict[str, Any] = {"routing_key": routing_key, "event_action": "resolve" if resolve else "trigger",
                           "dedup_key": body["incident_id"]}
    if not resolve:
        out["payload"] = {"summary": _summary(body, 1024), "source": "otel-insights",
                          "severity": SEVERITY_PD.get(body["severity"], "warning"),
                          "component": safe_name(_origin(body)) or None, "class": "service-graph-incident",
                          "custom_details": {"insight_id": body["insight_id"], "version": body["version"],
                                             "first_window": body["first_window"], "narrator": body["narrator"],
                                             "grounded": body["grounded"],
                                             "observed": [safe_name(p["text"], 500) for p in body["narrative"]["observed"][:5]]}}
    return out


class Notifier:
    """One receiver: its queue and the task that delivers it."""

    def __init__(self, cfg: NotifierConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.name = cfg.name or cfg.type
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self.task: asyncio.Task[None] | None = None

    def url(self) -> str:
        return self.cfg.url.get_secret_value() or (
            "https://events.pagerduty.com/v2/enqueue" if self.cfg.type == "pagerduty" else "")

    def payload(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.cfg.type == "slack":
            return slack(body)
        if self.cfg.type == "pagerduty":
            return pagerduty(body, self.cfg.routing_key.get_secret_value())
        return alertmanager(body)

    def submit(self, body: dict[str, Any]) -> None:
        if body["change"] not in self.cfg.events:
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.queue.task_done()
            self.metrics.inc("otel_insights_notifications_total", notifier=self.name, outcome="dropped")
            log.error("notifications to %s: queue full (receiver down?); dropped the oldest", self.name)
        self.queue.put_nowait(self.payload(body))
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._deliver())

    async def _deliver(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout.seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                payload = await self.queue.get()
                try:
                    outcome = await self._send(session, payload)
                    self.metrics.inc("otel_insights_notifications_total", notifier=self.name, outcome=outcome)
                finally:
                    self.queue.task_done()

    async def _send(self, session: Any, payload: dict[str, Any]) -> str:
        delay = self.cfg.retry.initial_interval.seconds
        for attempt in range(1, self.cfg.retry.max_attempts + 1):
            try:
                async with session.post(self.url(), json=payload) as resp:
                    if resp.status < 300:
                        return "sent"
                    why = f"HTTP {resp.status}"
                    if resp.status != 429 and resp.status < 500:
                        log.error("notification to %s refused (%s); not retried", self.name, why)
                        return "failed"
            except Exception as exc:  # connection refused, timeout, DNS: transient
                why = type(exc).__name__
            if attempt < self.cfg.retry.max_attempts:
                log.warning("notification to %s failed (%s); retrying in %.1fs", self.name, why, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.retry.max_interval.seconds)
        log.error("notification to %s failed after %d attempts (%s)", self.name, self.cfg.retry.max_attempts, why)
        return "failed"

    async def drain(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until everything queued has been tried."""
        try:
            await asyncio.wait_for(self.queue.join(), timeout_s)
        except asyncio.TimeoutError:
            pass

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass


class Notifications:
    """Every configured receiver with somewhere to send to."""

    def __init__(self, configs: tuple[NotifierConfig, ...], metrics: Metrics) -> None:
        self.notifiers = [Notifier(c, metrics) for c in configs if _configured(c)]
        for c in configs:
            if not _configured(c):
                log.info("notifier %s has no %s: off", c.name or c.type,
                         "routing_key" if c.type == "pagerduty" else "url")

    def submit(self, body: dict[str, Any]) -> None:
        for n in self.notifiers:
            n.submit(body)

    async def drain(self, timeout_s: float = 10.0) -> None:
        for n in self.notifiers:
            await n.drain(timeout_s)

    async def stop(self) -> None:
        for n in self.notifiers:
            await n.stop()


def _configured(c: NotifierConfig) -> bool:
    if c.type == "pagerduty":
        return bool(c.routing_key.get_secret_value())
    return bool(c.url.get_secret_value())
