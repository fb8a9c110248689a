"""Duration: the one type for time settings, parsed once at load into integer nanoseconds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from fractions import Fraction
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

# Go's time.ParseDuration units (what collector configs use); no days, like Go.
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)"
_FULL_RE = re.compile(f"(?:{_PART})+")
_PART_RE = re.compile(_PART)
_HINT = "(use e.g. 60s, 500ms, 2m)"


@dataclass(frozen=True, order=True, slots=True)
class Duration:
    """A non-negative span of time held as integer nanoseconds.

    Accepted input: Go-style strings ("500ms", "2s", "1m30s", "720h"), or an int / digit
    string meaning seconds (env expansion yields strings, so "60" must work like 60).
    Use `.ns` for event-time arithmetic, `.seconds` for asyncio/client timeouts, `.ms`
    for Kafka client settings. `str()` gives the canonical string form.
    """

    ns: int

    @classmethod
    def parse(cls, value: object) -> Duration:
        """Parse a config value; raises ValueError with a hint on anything else."""
        if isinstance(value, Duration):
            return value
        # bool is an int subclass; `true` is never a duration.
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return cls(value * _UNIT_NS["s"])
        if isinstance(value, str):
            text = value.strip()
            if text.isdigit():
                return cls(int(text) * _UNIT_NS["s"])
            if _FULL_RE.fullmatch(text):
                total = sum(
                    (Fraction(num) * _UNIT_NS[unit] for num, unit in _PART_RE.findall(text)),
                    Fraction(0),
                )
                return cls(round(total))
        raise ValueError(f"invalid duration {value!r} {_HINT}")

    @property
    def seconds(self) -> float:
        return self.ns / 1e9

    @property
    def ms(self) -> int:
        """Whole milliseconds (truncated)."""
        return self.ns // 1_000_000

    @property
    def timedelta(self) -> timedelta:
        return timedelta(microseconds=self.ns // 1_000)

    def __repr__(self) -> str:
        return f"Duration({str(self)!r})"

    def __str__(self) -> str:
        if self.ns == 0:
            return "0s"
        # Largest units first, like Go's Duration.String but without fractions.
        out, rest = [], self.ns
        for unit in ("h", "m", "s", "ms", "us", "ns"):
            count, rest = divmod(rest, _UNIT_NS[unit])
            if count:
                out.append(f"{count}{unit}")
        return "".join(out)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse, serialization=core_schema.to_string_ser_schema(when_used="always")
        )
