"""`otel-insights ui`: the web UI as a process of its own, until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import signal

from rich.console import Console

from pipelines.store_io import StoreIO
from pipelines.ui import UiServer
from processor.config import Config
from processor.config.extensions import UiConfig
from processor.errors import OtelInsightsError, StorageError
from processor.storage.open import open_store
from processor.telemetry import Metrics


async def serve(cfg: Config, console: Console) -> None:
    if cfg.clickhouse is None:
        raise OtelInsightsError("the UI reads the clickhouse exporter's store: the traces pipeline lists none")
    ui_cfg = cfg.ui or next((e for e in cfg.extensions.values() if isinstance(e, UiConfig)), UiConfig())
    try:
        store = open_store(cfg.clickhouse, migrate=False, windows=cfg.windows)
    except StorageError as exc:
        if cfg.clickhouse.backend == "chdb":
            raise OtelInsightsError(f"{exc}. With an embedded store, list `ui` in service.extensions so the "
                                    "`run` process that holds it serves the UI") from None
        raise
    metrics = Metrics()
    io = StoreIO(store, metrics, cfg.windows.size.ms, retry=cfg.clickhouse.retry_on_failure)
    server = UiServer(cfg, ui_cfg, io, metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    console.print(f"web UI at {server.url}", highlight=False)
    try:
        await stop.wait()
    finally:
        await server.stop()
        io.close()
