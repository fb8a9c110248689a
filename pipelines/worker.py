"""`otel-insights run`: open storage, prepare topics, run the faust worker until a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable

import faust

from pipelines.api import api_auth
from pipelines.app import create_app
from pipelines.store_io import StoreIO
from pipelines.topics import ensure_topics
from processor.config import Config
from processor.config.components import PrometheusExporter
from processor.errors import OtelInsightsError
from processor.ingest.gateway import Gateway
from processor.ingest.health import HealthServer
from processor.storage.open import open_store
from processor.telemetry import Metrics, service_graph_series

log = logging.getLogger("otel_insights.worker")


def build(cfg: Config, create_input_topic: bool = False) -> tuple[faust.App, StoreIO]:
    if cfg.kafka is None or cfg.clickhouse is None:
        raise OtelInsightsError("service.pipelines.traces needs a kafka receiver and a clickhouse exporter")
    auth = api_auth(cfg.prometheus)
    counts = asyncio.run(ensure_topics(cfg, create_input=create_input_topic))
    metrics = Metrics(service_graph=service_graph_series(cfg.servicegraph))
    io = StoreIO(open_store(cfg.clickhouse, windows=cfg.windows), metrics, cfg.windows.size.ms,
                 retry=cfg.clickhouse.retry_on_failure)
    app = create_app(cfg, io, metrics, counts, auth)
    _attach_gateway(app, cfg, metrics)
    _attach_ui(app, cfg, io, metrics)
    return app, io


def _attach_ui(app: faust.App, cfg: Config, io: StoreIO, metrics: Metrics) -> None:
    """Serve the web UI from the worker when service.extensions lists it (it shares the
    worker's store, which an embedded chdb allows one process to hold)."""
    if cfg.ui is None:
        return
    from pipelines.ui import UiServer

    ui = UiServer(cfg, cfg.ui, io, metrics)  # checks its token variable now: one error line

    @app.task
    async def start_ui() -> None:
        await ui.start()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_ui(sender: object, **kw: object) -> None:
        await ui.stop()

    app.ui = ui  # type: ignore[attr-defined]


def _attach_gateway(app: faust.App, cfg: Config, metrics: Metrics) -> None:
    """Run the OTLP receiver inside the worker when the traces pipeline lists it."""
    receivers = list(cfg.service.pipelines.traces.receivers)
    if cfg.otlp is None or not any(r.split("/")[0] == "otlp" for r in receivers):
        return
    gw = make_gateway(cfg, metrics)

    @app.task
    async def start_gateway() -> None:
        await gw.start()
        log.info("OTLP receiver: grpc=%s http=%s", gw.grpc_port, gw.http_port)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_gateway(sender: object, **kw: object) -> None:
        await gw.stop()

    app.gateway = gw  # type: ignore[attr-defined]


def make_gateway(cfg: Config, metrics: Metrics | None = None) -> Gateway:
    """The gateway of `receivers.otlp`, writing to the kafka receiver's brokers."""
    if cfg.otlp is None:
        raise OtelInsightsError("receivers.otlp is not configured")
    if cfg.kafka is None:
        raise OtelInsightsError("the gateway writes to the traces pipeline's kafka receiver: list one")
    return Gateway(cfg.otlp, cfg.kafka.brokers, registry=metrics.registry if metrics is not None else None,
                   security=cfg.kafka.client_options())


async def serve_gateway(cfg: Config, say: Callable[[str], None]) -> None:
    """`otel-insights gateway`: the gateway and its health port until SIGINT or SIGTERM."""
    prometheus = cfg.prometheus or PrometheusExporter()
    gw = make_gateway(cfg)  # its metrics on a registry of their own (gw.stats.registry)
    health = HealthServer(gw, gw.stats.registry, prometheus.namespace)  # type: ignore[arg-type]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await health.start(*prometheus.host_port)
    try:
        await gw.start()
        say(f"gateway: grpc={gw.grpc_port} http={gw.http_port} -> {gw.topic} (health and metrics port {health.port})")
        await stop.wait()
        await gw.stop()
    finally:
        await health.stop()


def run(cfg: Config, loglevel: str = "warning", create_input_topic: bool = False) -> None:
    app, io = build(cfg, create_input_topic=create_input_topic)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=True)
    code: object = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code
    finally:
        io.close()
    # A worker that stopped itself (the reason is logged, one line) exits non-zero, so a
    # supervisor sees the failure.
    sys.exit(1 if app.agent_state.failed else code)  # type: ignore[attr-defined]
