"""The web UI's moving parts: topic feeds into the live state, the store as the server sees it, and
the server's start and stop (inside `run`, or alone as `otel-insights ui`).

The UI reads the insights and dashboard-specs topics with its own consumer (group
`<group_id>.ui`, every partition, from `history` ago at start), so a restart shows recent
insights at once. Its store calls are one attempt each (`StoreIO.query`): a failing
ClickHouse is a 503 for the browser, never a reason to stop the worker it may run in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipelines.store_io import StoreIO
from processor.auth import BearerAuth
from processor.config import Config
from processor.config.extensions import UiConfig
from processor.dashboards import spec as spec_mod
from processor.dashboards.entities import StoredEntities
from processor.errors import OtelInsightsError
from processor.telemetry import Metrics
from processor.ui.server import make_app
from processor.ui.state import LiveState

log = logging.getLogger("otel_insights.ui")


class StoreForUi:
    """The UI's view of the store: every call on the ClickHouse thread, one attempt."""

    def __init__(self, io: StoreIO) -> None:
        self.io = io
        self.endpoint = io.store.backend.endpoint

    async def _q(self, fn: Any, *args: Any) -> Any:
        return await self.io.query(functools.partial(fn, *args))

    async def catalogue(self, name: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        return list(await self._q(self.io.store.catalogue, name, params))

    async def check(self, spec: dict[str, Any]) -> list[str]:
        since, _ = spec_mod.range_ms(spec)
        store = self.io.store
        exists = StoredEntities(store.catalogue, max(0, since - 24 * 3600 * 1000))
        return list(await self._q(spec_mod.check, spec, store.catalogue_columns, exists))

    async def insert_dashboards(self, rows: list[dict[str, Any]]) -> None:
        await self._q(self.io.store.insert_dashboards, rows)

    async def insert_feedback(self, rows: list[dict[str, Any]]) -> None:
        await self._q(self.io.store.insert_feedback, rows)

    async def migrated(self) -> bool:
        return bool(await self.io.schema_current())


class TopicFeed:
    """Every partition of the insights and specs topics into the live state, from `history` ago."""

    def __init__(self, brokers: list[str], group_id: str, topics: Mapping[str, str], state: LiveState,
                 history_ms: int, security: Mapping[str, Any] | None = None) -> None:
        self.brokers, self.group_id, self.topics, self.state = brokers, group_id, dict(topics), state
        self.history_ms = history_ms
        self.security = dict(security or {})
        self.consumer: AIOKafkaConsumer | None = None
        self.assigned = 0
        self.error = ""

    async def run(self) -> None:
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker that went away: say so, retry
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("ui: reading the topics failed (%s); retrying", self.error)
                await self._close()
                await asyncio.sleep(2.0)

    async def _consume(self) -> None:
        c = AIOKafkaConsumer(bootstrap_servers=self.brokers, group_id=self.group_id, enable_auto_commit=False,
                             auto_offset_reset="earliest", **self.security)
        await c.start()
        self.consumer = c
        missing = [t for t in self.topics if not c.partitions_for_topic(t)]
        if missing:
            raise OtelInsightsError(f"topics {missing} do not exist yet")
        tps = [TopicPartition(t, p) for t in self.topics for p in sorted(c.partitions_for_topic(t) or ())]
        c.assign(tps)
        since = int(time.time() * 1000) - self.history_ms
        found = await c.offsets_for_times({tp: since for tp in tps})
        ends = await c.end_offsets(tps)
        for tp in tps:
            c.seek(tp, found[tp].offset if found.get(tp) is not None else ends[tp])
        self.assigned, self.error = len(tps), ""
        while True:
            for tp, records in (await c.getmany(timeout_ms=1000, max_records=500)).items():
                for r in records:
                    self.state.take(self.topics[tp.topic], r.value)

    async def _close(self) -> None:
        c, self.consumer, self.assigned = self.consumer, None, 0
        if c is not None:
            with contextlib.suppress(Exception):
                await c.stop()


class UiServer:
    """The UI inside a process that already has the store (`run`) or its own (`ui`)."""

    def __init__(self, cfg: Config, ui: UiConfig, io: StoreIO, metrics: Metrics) -> None:
        if cfg.kafka is None or cfg.narrator is None or cfg.dashboards is None:
            raise OtelInsightsError("the UI shows stage 3's insights and dashboards: the traces pipeline needs "
                                    "a kafka receiver and the narrator and dashboards processors")
        self.cfg, self.ui, self.io, self.metrics = cfg, ui, io, metrics
        self.auth = BearerAuth.from_config(ui.auth, "extensions.ui.auth")
        self.state = LiveState(ui.max_insights, ui.max_dashboards)
        self.store = StoreForUi(io)
        self.feed = TopicFeed(list(cfg.kafka.brokers), f"{cfg.kafka.group_id}.ui",
                              {cfg.narrator.topic: "insight", cfg.dashboards.topic: "dashboard"}, self.state,
                              ui.history.ms, cfg.kafka.client_options())
        self.security = cfg.kafka.client_options()  # the receiver's tls and auth
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._producer: AIOKafkaProducer | None = None
        self._migrated = False

    @property
    def url(self) -> str:
        host, port = self.ui.host_port
        shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        return f"{'https' if self.ui.tls.enabled else 'http'}://{shown}:{port}/"

    async def start(self) -> None:
        assert self.cfg.kafka is not None and self.cfg.dashboards is not None
        kafka = self.cfg.kafka
        status = {"input_topic": ", ".join(kafka.traces.topics),
                  "brokers": ", ".join(kafka.brokers), "clickhouse": self.store.endpoint,
                  "insights_topic": self.cfg.narrator.topic if self.cfg.narrator else "",
                  "dashboards_topic": self.cfg.dashboards.topic, "auth": self.auth.enabled}
        self._producer = AIOKafkaProducer(bootstrap_servers=list(kafka.brokers), acks="all", **self.security)
        await self._producer.start()
        app = make_app(self.store, self.state, self.auth, status, self.readiness,
                       on_feedback=lambda verdict: self.metrics.inc("otel_insights_feedback_total", verdict=verdict),
                       publish_spec=self._publish, tls=self.ui.tls.enabled,
                       cors_origins=self.ui.cors.allowed_origins)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = self.ui.host_port
        site = web.TCPSite(self._runner, host, port, ssl_context=self._ssl())
        await site.start()
        self._tasks = [asyncio.create_task(self.feed.run(), name="ui-feed"),
                       asyncio.create_task(self._gauges(), name="ui-gauges")]
        log.warning("web UI at %s", self.url)

    async def _publish(self, spec: dict[str, Any]) -> None:
        assert self._producer is not None and self.cfg.dashboards is not None
        await self._producer.send_and_wait(self.cfg.dashboards.topic, spec_mod.encode(spec), key=str(spec["id"]).encode())

    async def _gauges(self) -> None:
        while True:
            self.metrics.set("otel_insights_ui_subscribers", self.state.subscribers)
            await asyncio.sleep(2.0)

    def _ssl(self) -> ssl.SSLContext | None:
        if not self.ui.tls.enabled:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.ui.tls.cert_file, self.ui.tls.key_file)
        return ctx

    async def readiness(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        if not self.feed.assigned:  # no error text: /readyz is open to probes, not a diagnosis
            problems["kafka"] = "not reading the insights and dashboards topics yet"
        if not self._migrated:  # once migrated, stays so: probes cost nothing after that
            try:
                self._migrated = await self.store.migrated()
                if not self._migrated:
                    problems["clickhouse"] = "the schema is not migrated (run `otel-insights migrate`)"
            except Exception:
                problems["clickhouse"] = "unreachable"
        return problems

    async def stop(self) -> None:
        self.state.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.feed._close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._producer is not None:
            await self._producer.stop()
