"""When an incident's insight is published: opened, updated after a cooldown, escalated at
once, resolved once; and when an incident has ended.

Pure decisions over what was last published; stage 3 (`pipelines/insights.py`) keeps the
state, reads the facts and publishes.
"""

from __future__ import annotations

from dataclasses import dataclass

from processor.insights.facts import SEVERITY_ORDER


@dataclass
class Published:
    """What was last published for one incident."""

    insight_id: str
    version: int
    status: str  # open | resolved
    severity: str
    facts_key: str
    last_window_ms: int
    published_at_s: float  # wall clock


def ended(last_window_ms: int, judged_through_ms: int | None, window_ms: int, gap_windows: int) -> bool:
    """True once the incident can no longer grow: the anomaly judge has judged the window
    ``gap_windows`` after its last one (a new anomaly up to there would have joined it)."""
    return judged_through_ms is not None and judged_through_ms >= last_window_ms + gap_windows * window_ms


def decide(last: Published | None, facts_key: str, severity: str, is_over: bool, now_s: float,
           cooldown_s: float) -> str | None:
    """The change to publish now (opened, updated, escalated, resolved), or None.

    A new incident is published at once, even if it already ended (then as resolved). A rise
    in severity is published at once; other changes wait out the cooldown since the last
    version, so a long incident is not re-narrated every window. Unchanged facts publish
    nothing (a replay or a restart spends nothing), except the one final ``resolved``.
    """
    if last is None:
        return "resolved" if is_over else "opened"
    if last.status == "resolved":
        return None
    if is_over:
        return "resolved"
    if facts_key == last.facts_key:
        return None
    if SEVERITY_ORDER.get(severity, 0) > SEVERITY_ORDER.get(last.severity, 0):
        return "escalated"
    if now_s - last.published_at_s >= cooldown_s:
        return "updated"
    return None
