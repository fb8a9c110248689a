"""OTLP/JSON (hex trace/span ids) parsed into a TracesData message: requests and re-keyed records."""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from processor.errors import DecodeError
from processor.otlp.decode_json import load_document

# OTLP/JSON spells ids as hex, while protobuf's JSON mapping expects base64 for bytes
# fields. ParseDict accepts both camelCase and snake_case names, so convert both spellings.
_ID_FIELDS = (("traceId", 16), ("trace_id", 16), ("spanId", 8), ("span_id", 8),
              ("parentSpanId", 8), ("parent_span_id", 8))
_LINK_ID_FIELDS = _ID_FIELDS[:4]


def _hex_ids_to_base64(obj: dict[str, Any], fields: tuple[tuple[str, int], ...]) -> None:
    for name, size in fields:
        value = obj.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or len(value) != 2 * size:
            raise DecodeError(f"OTLP/JSON {name} must be {2 * size} hex digits, got {value!r}")
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise DecodeError(f"OTLP/JSON {name} is not hex: {value!r}") from None
        obj[name] = base64.b64encode(raw).decode("ascii")


def _dicts(obj: dict[str, Any], *names: str) -> list[dict[str, Any]]:
    # Malformed shapes are left for ParseDict, which names the offending field.
    for name in names:
        value = obj.get(name)
        if isinstance(value, list):
            return [v for v in value if isinstance(v, dict)]
    return []


def parse_otlp_json(body: bytes) -> TracesData:
    """Parses an OTLP/JSON ExportTraceServiceRequest (same fields as TracesData).

    Unknown fields are ignored, as the OTLP spec requires of receivers.
    Raises DecodeError for anything that is not valid OTLP/JSON.
    """
    doc = load_document(body)
    for rs in _dicts(doc, "resourceSpans", "resource_spans"):
        for ss in _dicts(rs, "scopeSpans", "scope_spans"):
            for span in _dicts(ss, "spans"):
                _hex_ids_to_base64(span, _ID_FIELDS)
                for link in _dicts(span, "links"):
                    _hex_ids_to_base64(link, _LINK_ID_FIELDS)
    try:
        return json_format.ParseDict(doc, TracesData(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as e:
        raise DecodeError(f"invalid OTLP/JSON: {e}") from None
