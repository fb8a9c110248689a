"""Grounding: every number, name and time in a narrative must come from its facts bundle.

A narrative's text is checked piece by piece: names in backticks must be names of the
bundle; ISO times must be window boundaries of it; every other number must equal a value
of the bundle (or a ratio or count it holds) to the precision it is written with. A
narrative with a violation is repaired once or replaced by the template.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from processor.insights.facts import Facts
from processor.insights.text import quote, utc

_QUOTED = re.compile(r"`([^`]*)`")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?Z")
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*(?:\.\d+)?")


@dataclass(frozen=True)
class Violation:
    kind: str  # name | time | number
    text: str  # what was written

    def __str__(self) -> str:
        return f"{self.kind} not in the facts: {self.text}"


def texts(narrative: dict[str, Any]) -> list[str]:
    """Every piece of text a reader sees in a narrative."""
    out = [str(narrative.get("summary", ""))]
    for field in ("observed", "possible_causes"):
        out += [str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in narrative.get(field) or []]
    out += [str(c) for c in narrative.get("suggested_checks") or []]
    return out


def check(narrative: dict[str, Any], facts: Facts) -> list[Violation]:
    """The violations in ``narrative`` against ``facts``; empty when it is grounded."""
    names = {quote(n)[1:-1] for n in facts.names()}
    times = _times(facts)
    values = numbers(facts)
    ids = {m.id for m in facts.metrics} | {e.id for e in facts.edges}
    out: list[Violation] = []
    for field in ("observed", "possible_causes"):
        for p in narrative.get(field) or []:
            for ref in (p.get("facts") or []) if isinstance(p, dict) else []:
                if ref not in ids:
                    out.append(Violation("fact id", str(ref)))
    for text in texts(narrative):
        for name in _QUOTED.findall(text):
            if name not in names:
                out.append(Violation("name", name))
        rest = _QUOTED.sub(" ", text)
        for t in _TIME.findall(rest):
            if t not in times:
                out.append(Violation("time", t))
        rest = _TIME.sub(" ", rest)
        for token in _NUMBER.findall(rest):
            if not _matches(token, values):
                out.append(Violation("number", token))
    return out


def numbers(facts: Facts) -> list[float]:
    """Every number a narrative may write: measured values in their display units, ratios
    of observed to expected, counts of the bundle and of the origin's evidence."""
    vals: list[float] = [facts.windows, len(facts.entities), len(facts.metrics), len(facts.edges)]
    for m in facts.metrics:
        scale = 100.0 if m.metric == "error_ratio" else 1.0
        vals += [m.observed * scale, m.expected * scale, m.score]
        if m.expected and m.expected > 0:
            vals.append(m.observed / m.expected)
    for e in facts.edges:
        vals += [e.requests, e.failed, 100.0 * e.error_ratio, e.peak_p95_ms]
    for c in facts.origin:
        vals += [c.rank, c.depth, len(c.callers), len(c.anomalous_callers), len(c.callees),
                 len(c.anomalous_callees), c.score]
    for a in facts.attributed:
        for key in ("observed", "expected", "deviation"):
            if isinstance(a.get(key), (int, float)):
                vals.append(float(a[key]))
    return [float(v) for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]


def _times(facts: Facts) -> set[str]:
    starts = {m.window_start_ms for m in facts.metrics} | {facts.first_window_ms, facts.last_window_ms}
    return {utc(ms) for s in starts for ms in (s, s + facts.window_ms)}


def _matches(token: str, values: Iterable[float]) -> bool:
    text = token.replace(",", "")
    try:
        n = float(text)
    except ValueError:
        return False
    decimals = len(text.split(".")[1]) if "." in text else 0
    tolerance = 0.5 * 10 ** -decimals
    return any(abs(n - v) <= tolerance + 1e-9 for v in values)
