"""Root error types: every error an operator sees derives from OtelInsightsError."""

from __future__ import annotations

from typing import Literal


class OtelInsightsError(Exception):
    """Base class; the message says what to do."""


class ConfigError(OtelInsightsError):
    """Invalid configuration; message lines name the YAML key path."""


class DecodeError(OtelInsightsError):
    """A record or request payload that is not valid OTLP in the declared encoding."""


class RecordTooLarge(DecodeError):
    """A record (after undoing its payload compression) exceeds `max_record_bytes`."""


class StorageError(OtelInsightsError):
    """ClickHouse unreachable or rejected a statement.

    ``transient``: worth retrying (unreachable, timed out, overloaded, too many parts); a
    rejected statement or row is not. ``operation``: whether it failed reading or writing.
    The backend that raised it decides both.
    """

    def __init__(self, message: str, *, transient: bool = False,
                 operation: Literal["read", "write"] = "read") -> None:
        super().__init__(message)
        self.transient = transient
        self.operation: Literal["read", "write"] = operation


class ParamError(OtelInsightsError, ValueError):
    """A query parameter is unknown, repeated, malformed or out of range (HTTP 400)."""
