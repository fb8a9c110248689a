"""Dashboard specs: generated, checked on ClickHouse, stored and published on the specs topic.

Stage 3 asks for an incident's dashboard with each version of its insight (same version
number): the rule-based generator, or the models of the `dashboard` route with the rules as
fallback. Every spec passes `processor.dashboards.spec.check` on the ClickHouse thread
(queries run with LIMIT 0, entities looked up) before it is stored. Like insights, a version
is stored unmarked, sent, then marked; a restart sends what the topic does not hold yet.
Service and overview dashboards are generated on demand (API and CLI) the same way.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from pipelines.store_io import StoreIO
from pipelines.topic_tail import sent_versions
from processor.config import Config
from processor.dashboards import record, rules
from processor.dashboards import spec as spec_mod
from processor.dashboards.entities import StoredEntities
from processor.dashboards.llm import ModelDashboards
from processor.insights.models import ModelRouter
from processor.insights.text import safe_name
from processor.telemetry import Metrics

log = logging.getLogger("otel_insights.dashboards")
ENTITY_LOOKBACK_MS = 24 * 3600 * 1000  # entities a spec names must have data this close to its range


class SpecSink(Protocol):
    async def send(self, key: bytes, value: bytes) -> None:
        """Produce one record and wait for the broker's acknowledgement."""


class FaustSink:
    """The worker's faust topic as a SpecSink."""

    def __init__(self, topic: Any) -> None:
        self.topic = topic

    async def send(self, key: bytes, value: bytes) -> None:
        fut = await self.topic.send(key=key, value=value)
        await fut


class DashboardPublisher:
    def __init__(self, config: Config, io: StoreIO, metrics: Metrics, sink: SpecSink,
                 models: ModelRouter | None = None) -> None:
        assert config.dashboards is not None and config.kafka is not None
        self.cfg = config.dashboards
        self.health = config.windows.health
        self.brokers = list(config.kafka.brokers)
        self.security = config.kafka.client_options()  # tls and auth.sasl of receivers.kafka
        self.io = io
        self.metrics = metrics
        self.sink = sink
        self.model = (ModelDashboards(models, self.health)
                      if models is not None and self.cfg.generator == "model" else None)

    def describe(self) -> str:
        return self.model.describe() if self.model is not None else "rules"

    async def _store(self, interactive: bool, fn: Any, *args: Any) -> Any:
        """A store call: as the pipeline makes them (retried, a permanent failure stops the
        worker), or for a client asking (one attempt, the failure is the client's)."""
        return await (self.io.query(functools.partial(fn, *args)) if interactive else self.io.call(fn, *args))

    async def check(self, spec: dict[str, Any], interactive: bool = False) -> list[str]:
        """The spec's problems, found on the ClickHouse thread (its queries run with LIMIT 0)."""
        since, _ = spec_mod.range_ms(spec)
        store = self.io.store
        exists = StoredEntities(store.catalogue, max(0, since - ENTITY_LOOKBACK_MS))
        return list(await self._store(interactive, spec_mod.check, spec, store.catalogue_columns, exists))

    async def for_insight(self, insight: Mapping[str, Any]) -> dict[str, Any] | None:
        """The incident's dashboard for this insight version, checked and stored unmarked;
        None (one error line, counted) when it cannot be made: the insight goes out anyway.
        Its reads are one attempt each (a dashboard is never worth stopping the worker)."""
        try:
            base = rules.incident(insight, self.cfg.audience, self.health, version=int(insight["version"]))
            spec = base
            if self.model is not None:
                spec = await self.model.incident(insight, self.cfg.audience, base,
                                                 lambda s: self.check(s, interactive=True))
            return await self._store_checked(spec, interactive=True)
        except Exception as exc:  # a bug, a model's odd answer, ClickHouse failing a read
            self.metrics.inc("otel_insights_dashboard_errors_total")
            log.error("dashboard of incident %s v%s not made (%s: %s); its insight is published without one",
                      safe_name(str(insight.get("incident_id")), 80), insight.get("version"),
                      type(exc).__name__, safe_name(str(exc), 200))
            return None

    async def generate(self, kind: str, audience: str, service: str = "") -> dict[str, Any]:
        """A service's or the overview's dashboard, checked, stored and published (on demand).
        Raises ValueError with the problems when it fails its checks."""
        if kind == "service":
            if not service:
                raise ValueError("a service dashboard needs a service name")
            draft = rules.service(service, audience, self.health)
        else:
            draft = rules.overview(audience, self.health)
        rows = await self._store(True, self.io.store.catalogue, "dashboard", {"dashboard_id": draft["id"]})
        draft["version"] = int(rows[0]["version"]) + 1 if rows else 1
        spec = await self._store_checked(draft, interactive=True)
        if spec is None:
            raise ValueError(f"{draft['id']}: the generated spec failed its checks (see the log)")
        await self.send(spec)
        await self._store(True, self.io.store.insert_dashboards, [record.row(spec, published=1)])
        return spec

    async def _store_checked(self, spec: dict[str, Any], interactive: bool = False) -> dict[str, Any] | None:
        problems = await self.check(spec, interactive)
        if problems:
            self.metrics.inc("otel_insights_dashboard_errors_total")
            log.error("dashboard %s v%d not published: %s", spec.get("id"), spec.get("version", 0),
                      "; ".join(safe_name(p, 200) for p in problems[:3]))
            return None
        await self._store(interactive, self.io.store.insert_dashboards, [record.row(spec, published=0)])
        return spec

    async def send(self, spec: Mapping[str, Any]) -> None:
        await self.sink.send(record.key(spec), spec_mod.encode(spec))
        gen = spec["generator"]
        self.metrics.inc("otel_insights_dashboards_total", kind=spec["kind"],
                         generator="model" if gen["kind"] == "model" else "rules")

    async def mark(self, spec: Mapping[str, Any]) -> None:
        await self.io.call(self.io.store.insert_dashboards, [record.row(spec, published=1)])

    async def settle_unsent(self, history_ms: int) -> None:
        """At start: versions stored but not marked are sent unless the topic holds them."""
        since = int(time.time() * 1000) - history_ms
        unsent = await self.io.call(self.io.store.unpublished_dashboards, since)
        if not unsent:
            return
        wanted = {(str(s["id"]), int(s["version"])) for s in unsent}
        seen = await sent_versions(self.brokers, self.cfg.topic, wanted, "id", self.security)
        for s in unsent:
            if (str(s["id"]), int(s["version"])) not in seen:
                await self.send(s)
                log.info("dashboard %s version %d was stored but not sent before a stop: sent now",
                         s["id"], s["version"])
            await self.mark(s)
