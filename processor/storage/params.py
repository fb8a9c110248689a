"""Typed, bounded parameters of the named queries: the one parser for the API, the CLI and the catalogue.

A named query declares its parameters (`NamedQuery.params`); whatever asks for it by
name (the query API, `otel-insights query`, later the UI and dashboards) passes the raw
text through `parse_params`, which refuses unknown, repeated, malformed and out-of-range
values with one line each (an HTTP 400) before anything reaches ClickHouse. Values then
travel as typed `{name:Type}` parameters, never as SQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from processor.config.duration import Duration
from processor.errors import OtelInsightsError

MAX_LIMIT = 10_000  # rows per answer; also the default
MAX_TEXT_CHARS = 1024  # a service name is untrusted text: long enough for any real one
_MAX_LOOKBACK_CHARS = 32


class QueryParamError(OtelInsightsError, ValueError):
    """A query parameter is unknown, repeated, malformed or out of range (HTTP 400)."""


@dataclass(frozen=True)
class Param:
    """One parameter: ``kind`` says how its text is read.

    - ``lookback``: a duration back from now ("15m", "2h"), becoming ``<name>_ms``, an epoch
      millisecond bound no earlier than 1970 (so it always fits ClickHouse's Int64 and
      DateTime64); absent with no default: None.
    - ``text``: at most ``max_chars`` characters, no control characters.
    - ``int``: a whole number in [minimum, maximum].
    """

    name: str
    kind: Literal["lookback", "text", "int"]
    help: str
    default: str | int | None = None
    minimum: int = 0
    maximum: int = MAX_LIMIT
    max_chars: int = MAX_TEXT_CHARS

    @property
    def key(self) -> str:
        """The argument name the query takes (``since`` -> ``since_ms``)."""
        return f"{self.name}_ms" if self.kind == "lookback" else self.name

    def parse(self, raw: str | int | None, now_ms: int) -> Any:
        if raw is None:
            raw = self.default
            if raw is None:
                return None
        if self.kind == "lookback":
            return self._lookback(str(raw), now_ms)
        if self.kind == "int":
            return self._int(raw)
        text = str(raw)
        if len(text) > self.max_chars:
            raise QueryParamError(f"{self.name}: longer than {self.max_chars} characters")
        if any(ord(c) < 32 or ord(c) == 127 for c in text):
            raise QueryParamError(f"{self.name}: control characters are not allowed")
        return text

    def _lookback(self, text: str, now_ms: int) -> int:
        hint = "use a duration like 15m, 2h, 90s"
        if len(text) > _MAX_LOOKBACK_CHARS:
            raise QueryParamError(f"{self.name}: {text[:_MAX_LOOKBACK_CHARS]!r}... is too long ({hint})")
        try:
            back_ms = Duration.parse(text).ms
        except ValueError:
            raise QueryParamError(f"{self.name}: invalid {text!r} ({hint})") from None
        if back_ms > now_ms:
            raise QueryParamError(f"{self.name}: {text!r} reaches back before 1970 "
                                  f"(at most {now_ms // 3_600_000}h)")
        return now_ms - back_ms

    def _int(self, raw: str | int) -> int:
        text = str(raw).strip()
        if not text.isdigit() or len(text) > 12:
            raise QueryParamError(f"{self.name}: {text[:20]!r} is not a whole number")
        value = int(text)
        if not self.minimum <= value <= self.maximum:
            raise QueryParamError(f"{self.name}: {value} is out of range [{self.minimum}, {self.maximum}]")
        return value


SINCE = Param("since", "lookback", "windows starting at most this long ago, e.g. 15m, 2h", default="15m")
UNTIL = Param("until", "lookback", "windows starting before this long ago (default: no bound)")
SERVICE = Param("service", "text", "only this service and the edges and entities that touch it", default="")
LIMIT = Param("limit", "int", f"at most this many rows (1 to {MAX_LIMIT})", default=MAX_LIMIT, minimum=1)
# The parameters every window query takes (see processor.storage.queries.run_named).
WINDOW_PARAMS: tuple[Param, ...] = (SINCE, UNTIL, SERVICE, LIMIT)


def parse_params(specs: Sequence[Param], raw: Mapping[str, str] | Iterable[tuple[str, str]],
                 now_ms: int | None = None) -> dict[str, Any]:
    """Typed arguments from raw text pairs (a URL's query string); QueryParamError on the first
    problem: a parameter the query does not take, one given twice, or a bad value."""
    pairs = list(raw.items() if isinstance(raw, Mapping) else raw)
    by_name = {p.name: p for p in specs}
    seen: dict[str, str] = {}
    for name, value in pairs:
        if name not in by_name:
            known = ", ".join(by_name) or "none"
            raise QueryParamError(f"unknown parameter {name[:40]!r} (this query takes: {known})")
        if name in seen:
            raise QueryParamError(f"{name}: given more than once")
        seen[name] = value
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return {p.key: p.parse(seen.get(p.name), now) for p in specs}
