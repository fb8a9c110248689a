"""Root error types: every error an operator sees derives from OtelInsightsError."""


class OtelInsightsError(Exception):
    """Base class; the message says what to do."""


class ConfigError(OtelInsightsError):
    """Invalid configuration; message lines name the YAML key path."""


class DecodeError(OtelInsightsError):
    """A record or request payload that is not valid OTLP in the declared encoding."""


class StorageError(OtelInsightsError):
    """ClickHouse unreachable or rejected a statement."""
