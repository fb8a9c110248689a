"""Why an export request was refused; receivers map each type to a gRPC code / HTTP status."""

from __future__ import annotations

from processor.errors import DecodeError, OtelInsightsError

__all__ = ["BufferFull", "DecodeError", "ExportRefused", "KafkaUnavailable", "RecordTooLarge",
           "RequestTooLarge", "UnsupportedMediaType", "outcome_of"]


class ExportRefused(OtelInsightsError):
    """Base of every refusal; `outcome` is the label used in the request counter."""

    outcome = "refused"


class RequestTooLarge(ExportRefused):
    """The request body exceeds max_request_size (permanent: the client must split it)."""

    outcome = "too_large"


class UnsupportedMediaType(ExportRefused):
    """Content-Type or Content-Encoding the gateway does not speak."""

    outcome = "unsupported"


class RecordTooLarge(ExportRefused):
    """One trace encodes to a record Kafka will not accept (permanent: retrying cannot help)."""

    outcome = "record_too_large"


class KafkaUnavailable(ExportRefused):
    """Kafka is unreachable or did not acknowledge in time (transient: retry later)."""

    outcome = "unavailable"


class BufferFull(ExportRefused):
    """Too many requests already wait for Kafka acknowledgements (transient: back off)."""

    outcome = "buffer_full"


def outcome_of(err: BaseException | None) -> str:
    """The `outcome` label for a request that ended with `err` (None = success)."""
    if err is None:
        return "ok"
    if isinstance(err, DecodeError):
        return "invalid"
    if isinstance(err, ExportRefused):
        return err.outcome
    return "error"
