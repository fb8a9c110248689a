"""`otel-insights tail`: follow a topic, pretty-printing OTLP, JSON or raw records."""

from __future__ import annotations

import json
from typing import Any

from rich.markup import escape

from processor.errors import OtelInsightsError


def describe(value: bytes) -> str:
    """One record in words (plain text: the caller escapes it for the console)."""
    try:
        body = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and "insight_id" in body and isinstance(body.get("narrative"), dict):
        return _insight(body)
    if body is not None:
        return json.dumps(body, indent=None)[:2000]
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


def _insight(body: dict[str, Any]) -> str:
    """An enriched insight as an on-call engineer reads it: the headline, then the narrative."""
    from processor.insights.text import safe_name

    n = body["narrative"]
    origin = (body.get("suspected_origin") or {}).get("entity")
    head = (f"insight {safe_name(body.get('insight_id'))} v{body.get('version')} {body.get('change')} "
            f"[{body.get('severity')}] by {safe_name(body.get('narrator'))}"
            f"{'' if body.get('grounded') else ' (NOT grounded)'}"
            + (f", suspected origin {safe_name(origin)}" if origin else ""))
    lines = [head, f"  {safe_name(n.get('summary'), 2000)}"]
    for title, key in (("observed", "observed"), ("possible causes", "possible_causes")):
        for p in n.get(key) or []:
            lines.append(f"  {title}: {safe_name(p.get('text') if isinstance(p, dict) else p, 2000)}")
    for c in n.get("suggested_checks") or []:
        lines.append(f"  check: {safe_name(c, 2000)}")
    return "\n".join(lines)


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
            # Records are untrusted text: escaped, so a name cannot style the console.
            console.print(f"[bold]{escape(m.topic)}[{m.partition}]@{m.offset}[/] key={escape(repr(m.key))} "
                          f"{escape(str(hdrs)) if hdrs else ''}\n  {escape(describe(m.value))}", highlight=False)
            n += 1
            if limit and n >= limit:
                break
    finally:
        await c.stop()
