"""`otel-insights run`: open storage, prepare topics, run the faust worker until a signal."""

from __future__ import annotations

import asyncio
import logging

import faust

from pipelines.app import create_app
from pipelines.runtime import Runtime
from pipelines.topics import ensure_topics
from processor.config import Config
from processor.errors import OtelInsightsError
from processor.storage.open import open_store
from processor.telemetry import Telemetry

log = logging.getLogger("otel_insights.worker")


def build(cfg: Config, create_input_topic: bool = False) -> tuple[faust.App, Runtime]:
    if cfg.kafka is None or cfg.clickhouse is None:
        raise OtelInsightsError("service.pipelines.traces needs a kafka receiver and a clickhouse exporter")
    counts = asyncio.run(ensure_topics(cfg, create_input=create_input_topic))
    kafka = cfg.kafka
    sources = {f"{kafka.traces.topic}/{p}" for p in range(counts[kafka.traces.topic])}
    if kafka.rekey != "never":
        sources |= {f"{kafka.rekey_topic}/{p}" for p in range(counts[kafka.rekey_topic])}
    store = open_store(cfg.clickhouse)
    rt = Runtime(config=cfg, store=store, telemetry=Telemetry(), expected_sources=sources)
    app = create_app(rt, counts[kafka.partials_topic])
    _attach_gateway(app, cfg, rt)
    return app, rt


def _attach_gateway(app: faust.App, cfg: Config, rt: Runtime) -> None:
    """Run the OTLP receiver inside the worker when the traces pipeline lists it."""
    receivers = list(cfg.service.pipelines.traces.receivers)
    if cfg.otlp is None or not any(r.split("/")[0] == "otlp" for r in receivers):
        return
    gw = make_gateway(cfg, registry=rt.telemetry.registry)

    @app.task
    async def start_gateway() -> None:
        await gw.start()
        log.info("OTLP receiver: grpc=%s http=%s", gw.grpc_port, gw.http_port)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_gateway(sender: object, **kw: object) -> None:
        await gw.stop()

    app.gateway = gw  # type: ignore[attr-defined]


def make_gateway(cfg: Config, registry: object = None):  # type: ignore[no-untyped-def]
    from processor.ingest.gateway import Gateway

    otlp = cfg.otlp
    assert otlp is not None and cfg.kafka is not None
    protos = otlp.protocols
    return Gateway(
        brokers=list(cfg.kafka.brokers), topic=otlp.topic or cfg.kafka.traces.topic,
        encoding=otlp.encoding or cfg.kafka.traces.encoding,
        grpc_endpoint=protos.grpc.endpoint if protos.grpc else None,
        http_endpoint=protos.http.endpoint if protos.http else None,
        max_request_size=otlp.max_request_size, max_buffered_requests=otlp.max_buffered_requests,
        registry=registry,  # type: ignore[arg-type]
    )


def run(cfg: Config, loglevel: str = "warning", create_input_topic: bool = False) -> None:
    app, rt = build(cfg, create_input_topic=create_input_topic)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=True)
    try:
        worker.execute_from_commandline()
    finally:
        rt.io.shutdown(wait=True)
        rt.store.close()
