"""The enriched insight message: what stage 3 publishes and stores, and its JSON Schema.

The schema lives beside this module (`schemas/enriched-insight.schema.json`, linked from
`config/schemas/`); every message is validated against it before it leaves the stage.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema

from processor.insights.facts import Facts
from processor.insights.grounding import check
from processor.insights.template import Narrative, narrate

SCHEMA_VERSION = 1
SCHEMA_FILE = "enriched-insight.schema.json"


@dataclass
class Narration:
    """A narrative and how it was written."""

    narrative: Narrative
    narrator: str  # "template" or the model that wrote it
    model: str | None = None
    grounded: bool = True
    violations: list[str] = field(default_factory=list)  # refused in a model's text before the fallback
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


def template_narration(facts: Facts, violations: list[str] | None = None) -> Narration:
    """The template's narrative, checked like any other (it must always pass)."""
    t0 = time.perf_counter()
    narrative = narrate(facts)
    problems = check(dict(narrative), facts)
    return Narration(narrative, "template", None, not problems, list(violations or []) + [str(p) for p in problems],
                     latency_ms=(time.perf_counter() - t0) * 1000)


def build(facts: Facts, narration: Narration, *, insight_id: str, version: int, status: str, change: str,
          now_ms: int | None = None) -> dict[str, Any]:
    """One version of an incident's insight, as published (valid against the schema)."""
    origin = [_candidate(c) for c in facts.origin]
    return {
        "schema_version": SCHEMA_VERSION,
        "insight_id": insight_id,
        "version": version,
        "status": status,
        "change": change,
        "incident_id": facts.incident_id,
        "updated_at": iso(int(time.time() * 1000) if now_ms is None else now_ms),
        "first_window": iso(facts.first_window_ms),
        "last_window": iso(facts.last_window_ms),
        "window_seconds": facts.window_ms / 1000,
        "windows": facts.windows,
        "severity": facts.severity,
        "entities": [{"entity_type": t, "entity": e} for t, e in facts.entities],
        "suspected_origin": origin[0] if origin else None,
        "candidates": origin,
        "metrics": [{"id": m.id, "entity_type": m.entity_type, "entity": m.entity, "metric": m.metric,
                     "window_start": iso(m.window_start_ms), "observed": _num(m.observed),
                     "expected": _num(m.expected), "score": min(1.0, max(0.0, m.score)), "severity": m.severity}
                    for m in facts.metrics],
        "edges": [{"id": e.id, "client": e.client, "server": e.server, "connection_type": e.connection_type,
                   "requests": e.requests, "failed": e.failed, "error_ratio": e.error_ratio,
                   "peak_p95_ms": _num(e.peak_p95_ms), "anomalous": e.anomalous} for e in facts.edges],
        "narrative": narration.narrative,
        "narrator": narration.narrator,
        "model": narration.model,
        "grounded": narration.grounded,
        "violations": narration.violations,
        "latency_ms": round(narration.latency_ms, 3),
        "tokens": {"prompt": narration.prompt_tokens, "completion": narration.completion_tokens},
        "cost_usd": narration.cost_usd,
        "facts_key": facts.key(),
    }


def _candidate(c: Any) -> dict[str, Any]:
    return {"entity": c.entity, "rank": c.rank, "score": c.score, "depth": c.depth, "callers": list(c.callers),
            "anomalous_callers": list(c.anomalous_callers), "callees": list(c.callees),
            "anomalous_callees": list(c.anomalous_callees), "traffic_only": c.traffic_only,
            "facts": list(c.facts), "reasons": c.reasons()}


def _num(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def iso_ms(text: str) -> int:
    """An ISO 8601 time as otel-insights messages write them (``...Z``) as epoch ms."""
    from datetime import datetime

    return int(datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp() * 1000)


def iso(ms: int) -> str:
    """Epoch ms as ISO 8601 UTC with milliseconds (``...Z``), as every otel-insights message writes times."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    text = resources.files("processor.insights").joinpath("schemas", SCHEMA_FILE).read_text()
    return json.loads(text)


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema())
    cls.check_schema(schema())
    return cls(schema())


def validate(message: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` (the first error) unless ``message`` is valid."""
    error = jsonschema.exceptions.best_match(_validator().iter_errors(message))
    if error is not None:
        raise error


def encode(message: dict[str, Any]) -> bytes:
    """The message as published: compact JSON, UTF-8, no NaN."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
