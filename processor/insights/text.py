"""Untrusted names made safe to show and to quote, and the one way numbers are displayed.

Service, edge and database names come from span attributes: anyone who can send a span
chooses them. Everywhere a name leaves the facts (a narrative, a prompt, a log line) it
goes through `safe_name`, and every number through `display`, so what a reader sees can
be traced back to a fact and matched against it (see `processor.insights.grounding`).
"""

from __future__ import annotations

import math
import re
import time
import unicodedata

MAX_NAME_CHARS = 120
# ANSI escape sequences (CSI, OSC and the two-byte forms) before the control characters.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def safe_name(name: object, limit: int = MAX_NAME_CHARS) -> str:
    """A name as shown: escapes and control characters removed, whitespace collapsed, at most
    ``limit`` characters (an ellipsis marks a cut)."""
    text = _ANSI.sub("", str(name))
    text = "".join(" " if unicodedata.category(ch)[0] in "CZ" else ch for ch in text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text or "(unnamed)"


def display(metric: str, value: float) -> str:
    """A metric value as a reader sees it: latency in ms with three significant digits,
    an error ratio as a percentage, a request count as an integer."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if metric == "error_ratio":
        return f"{_sig(100.0 * value)}%"
    if metric == "rate":
        return f"{round(value):d}"
    if metric.endswith("_ms"):
        return f"{_sig(value)} ms"
    return _sig(value)


def display_ratio(observed: float, expected: float) -> str | None:
    """How many times the expected value was observed (``"3.2x"``); None when not meaningful."""
    if not expected or math.isnan(observed) or math.isnan(expected) or expected <= 0:
        return None
    return f"{_sig(observed / expected, 2)}x"


def _sig(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, no exponent, no trailing zeros."""
    if value == 0 or not math.isfinite(value):
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def quote(name: object) -> str:
    """A name inside narrative text: safe, in backticks (none inside, so it cannot close them)."""
    return "`" + safe_name(name).replace("`", "'") + "`"


def utc(ms: int) -> str:
    """A window boundary as narratives write it (ISO 8601, UTC, to the second)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
