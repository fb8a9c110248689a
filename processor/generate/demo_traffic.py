"""Live traffic helpers for `generate --otlp-http` and `demo`: fault parsing, HTTP pacing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from processor.errors import ConfigError
from processor.generate.faults import FaultSpec
from processor.generate.shop import GeneratedTrace
from processor.generate.sinks import send_otlp_http

log = logging.getLogger("otel_insights.generate")


def parse_fault(text: str, base_ns: int) -> FaultSpec:
    """KIND:TARGET:START_S:DURATION_S[:MAGNITUDE], times relative to base_ns."""
    parts = text.split(":")
    if len(parts) not in (4, 5):
        raise ConfigError(f"--fault {text!r}: expected KIND:TARGET:START_S:DURATION_S[:MAGNITUDE]")
    try:
        d = {"kind": parts[0], "target": parts[1], "start_s": float(parts[2]),
             "duration_s": float(parts[3])}
        if len(parts) == 5:
            d["magnitude"] = float(parts[4])
    except ValueError as exc:
        raise ConfigError(f"--fault {text!r}: {exc}") from None
    return FaultSpec.from_dict(d, base_ns=base_ns)


async def run_http(traces: Iterable[GeneratedTrace], url: str, flush_s: float = 0.2,
                   stop: asyncio.Event | None = None) -> int:
    """Send traces as they come (paced iterators block), batching ~flush_s per request.

    The iterator runs in a thread so pacing sleeps never block the event loop. A refused
    or failed request is logged and retried once after a second, like an SDK exporter.
    """
    import aiohttp

    queue: asyncio.Queue[GeneratedTrace | None] = asyncio.Queue(maxsize=10000)
    loop = asyncio.get_running_loop()

    def pump() -> None:
        for tr in traces:
            if stop is not None and stop.is_set():
                break
            asyncio.run_coroutine_threadsafe(queue.put(tr), loop).result()
        asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

    producer = loop.run_in_executor(None, pump)
    sent = 0
    done = False
    async with aiohttp.ClientSession() as session:
        while not done:
            batch: list[GeneratedTrace] = []
            deadline = time.monotonic() + flush_s
            while time.monotonic() < deadline:
                try:
                    item = await asyncio.wait_for(queue.get(), max(0.01, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                if item is None:
                    done = True
                    break
                batch.append(item)
            if not batch:
                continue
            for attempt in range(2):
                try:
                    status = await send_otlp_http(batch, url, session)
                except aiohttp.ClientError as exc:
                    status = 0
                    log.warning("OTLP/HTTP %s: %s", url, exc)
                if status == 200:
                    sent += len(batch)
                    break
                if attempt == 0:
                    await asyncio.sleep(1.0)
    await producer
    return sent
