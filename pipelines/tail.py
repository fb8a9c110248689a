"""`otel-insights tail`: follow a topic, pretty-printing OTLP, JSON or raw records."""

from __future__ import annotations

import json
from typing import Any

from processor.errors import OtelInsightsError


def describe(value: bytes) -> str:
    try:
        return json.dumps(json.loads(value), indent=None)[:2000]
    except (ValueError, UnicodeDecodeError):
        pass
    try:
        from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

        td = TracesData.FromString(value)
        spans = [(rs.resource, s) for rs in td.resource_spans for ss in rs.scope_spans for s in ss.spans]
        if spans:
            names = [s.name for _, s in spans[:5]]
            return f"OTLP {len(spans)} spans: {', '.join(names)}{' ...' if len(spans) > 5 else ''}"
    except Exception:
        pass
    return repr(value[:200])


async def follow(topic: str, brokers: list[str], from_beginning: bool, limit: int, console: Any) -> None:
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(topic, bootstrap_servers=brokers,
                         auto_offset_reset="earliest" if from_beginning else "latest")
    try:
        await c.start()
    except Exception as exc:
        raise OtelInsightsError(f"cannot reach Kafka at {','.join(brokers)}: {exc}") from exc
    n = 0
    try:
        async for m in c:
            hdrs = {k: v.decode(errors="replace") for k, v in (m.headers or [])}
            console.print(f"[bold]{m.topic}[{m.partition}]@{m.offset}[/] key={m.key!r} "
                          f"{hdrs if hdrs else ''}\n  {describe(m.value)}", highlight=False)
            n += 1
            if limit and n >= limit:
                break
    finally:
        await c.stop()
