"""Scheduled autoencoder training: stored final windows -> per-entity models in a child process -> ClickHouse."""

from __future__ import annotations

import asyncio
import base64
import logging
import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.pool import Pool
from typing import Any

from pipelines.store_io import StoreIO
from processor.config.components import AutoencoderConfig
from processor.detect.autoencoder import FORMAT_VERSION, Autoencoder
from processor.detect.entity_models import TrainingSet, model_spec, train_models
from processor.telemetry import Metrics

log = logging.getLogger("otel_insights.training")
KIND = "autoencoder"
RETRY_AFTER_S = 600.0  # a failed training is retried this long after, not every tick


class ModelTrainer:
    """Trains one autoencoder per entity from ClickHouse history every ``retrain_interval``.

    Training runs in a spawned child process: it is seconds to minutes of numpy work that
    would otherwise stall the event loop (and the GIL) stage 2 runs on. The child gets plain
    arrays and returns model bytes; this process reads the history and writes the models.
    """

    def __init__(self, io: StoreIO, metrics: Metrics, cfg: AutoencoderConfig, min_requests: int,
                 window_ms: int) -> None:
        self.io = io
        self.metrics = metrics
        self.cfg = cfg
        self.min_requests = min_requests
        self.window_ms = window_ms
        self.spec = model_spec(cfg, window_ms)
        self.trained_at_ms = 0  # of the newest models in use
        self._next_try = 0.0  # monotonic time before which no new training starts
        self.task: asyncio.Task[None] | None = None
        self._pool: Pool | None = None

    async def load_stored(self) -> dict[tuple[str, str], Autoencoder]:
        """The newest stored model per entity; unreadable ones are skipped with one line each."""
        rows = await self.io.call(self.io.store.latest_models, KIND)
        models: dict[tuple[str, str], Autoencoder] = {}
        unreadable: list[str] = []
        for r in rows:
            key = (str(r["entity_type"]), str(r["entity"]))
            try:
                models[key] = Autoencoder.from_bytes(base64.b64decode(r["model"]))
            except Exception as exc:  # an old or damaged model must not stop detection
                unreadable.append(f"{key[1]} ({exc})")
                continue
            self.trained_at_ms = max(self.trained_at_ms, int(r["trained_at_ms"]))
        if unreadable:
            self.trained_at_ms = 0  # retrain now rather than run without those entities' models
            log.error("ignoring %d stored autoencoder model(s), retraining: %s", len(unreadable),
                      "; ".join(unreadable[:3]) + (" ..." if len(unreadable) > 3 else ""))
        self.metrics.set("otel_insights_anomaly_models", len(models))
        return models

    def due(self) -> bool:
        now_ms = int(time.time() * 1000)
        return (self.task is None and time.monotonic() >= self._next_try
                and now_ms - self.trained_at_ms >= self.cfg.retrain_interval.ms)

    def start(self, on_models: Callable[[dict[tuple[str, str], Autoencoder]], None]) -> None:
        self.task = asyncio.get_running_loop().create_task(self._train(on_models))

    async def _train(self, on_models: Callable[[dict[tuple[str, str], Autoencoder]], None]) -> None:
        t0 = time.monotonic()
        until_ms = int(time.time() * 1000)
        since_ms = until_ms - self.spec.max_windows * self.window_ms
        try:
            history = TrainingSet(self.min_requests, self.spec.max_windows)
            # Incidents stay out of what the models learn as normal, and so do the windows of
            # incidents someone called a false alarm (feedback in the UI), whole.
            flagged = await self.io.call(self.io.store.anomalous_windows, since_ms, until_ms)
            false = await self.io.call(self.io.store.false_alarm_windows, since_ms, until_ms, self.window_ms)
            excluded = {"anomaly": 0, "false_alarm": 0}
            async for ws, h, e in self.io.final_windows(since_ms, until_ms):
                out = flagged.get(ws, set()) | false.get(ws, set())
                excluded["anomaly"] += len(flagged.get(ws, ()))
                excluded["false_alarm"] += len(false.get(ws, set()) - flagged.get(ws, set()))
                history.add_window(h, e, exclude=out)
            for reason, n in excluded.items():
                self.metrics.inc("otel_insights_training_excluded_windows_total", n, reason=reason)
            blobs = await self._in_child(train_models, history.matrices(), self.spec)
            rows = [{"kind": KIND, "entity_type": k[0], "entity": k[1], "format_version": FORMAT_VERSION,
                     "trained_at": until_ms, "trained_from": since_ms, "trained_until": until_ms,
                     "windows": len(history), "model": base64.b64encode(b).decode("ascii")}
                    for k, b in blobs.items()]
            if rows:
                await self.io.call(self.io.store.insert_models, rows)
            models = {k: Autoencoder.from_bytes(b) for k, b in blobs.items()}
            on_models(models)
            self.trained_at_ms = until_ms
            self.metrics.inc("otel_insights_anomaly_model_trainings_total", outcome="ok")
            log.info("trained %d autoencoder model(s) on %d stored window(s) in %.1f s",
                     len(models), len(history), time.monotonic() - t0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._next_try = time.monotonic() + RETRY_AFTER_S
            self.metrics.inc("otel_insights_anomaly_model_trainings_total", outcome="failed")
            log.error("autoencoder training failed (current models stay; retrying in %.0f s): %r",
                      RETRY_AFTER_S, exc)
        finally:
            self.task = None

    async def _in_child(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any = None, exc: BaseException | None = None) -> None:  # on the loop
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        def done(result: Any) -> None:  # pool thread
            loop.call_soon_threadsafe(settle, result)

        def failed(exc: BaseException) -> None:  # pool thread
            loop.call_soon_threadsafe(settle, None, exc)

        if self._pool is None:
            # spawn, not fork: this process holds threads (I/O pool, Kafka client, chdb). A Pool,
            # not a ProcessPoolExecutor: shutdown must kill a training mid-way (terminate()),
            # where the executor's exit handler would wait for it.
            self._pool = multiprocessing.get_context("spawn").Pool(1)
        self._pool.apply_async(fn, args, callback=done, error_callback=failed)
        return await fut

    def close(self) -> None:
        """Stop a running training at once (shutdown must not wait for it)."""
        if self.task is not None:
            self.task.cancel()
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
