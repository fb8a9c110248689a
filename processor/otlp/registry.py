"""Encoding name -> codec, for the `encoding` key of receivers and topics: the one list of them.

A codec decodes a payload straight into SpanBatch columns (stage 1's hot path), parses it
into a TracesData message (re-keying, the gateway) and encodes one back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from processor.config.components import Encoding
from processor.errors import ConfigError, DecodeError
from processor.otlp.attributes import DecodeContext
from processor.otlp.batch import SpanBatch
from processor.otlp.decode_json import decode_json
from processor.otlp.decode_proto import decode_proto
from processor.otlp.encode import encode_json, encode_proto
from processor.otlp.parse_json import parse_otlp_json

Decoder = Callable[[bytes, DecodeContext], SpanBatch]


def parse_proto(payload: bytes) -> TracesData:
    """TracesData or ExportTraceServiceRequest bytes (wire-identical) as a message."""
    try:
        return TracesData.FromString(payload)
    except ProtobufDecodeError as exc:
        raise DecodeError(f"not a valid OTLP protobuf message: {exc}") from None


@dataclass(frozen=True)
class Codec:
    decode: Decoder  # payload -> columns
    parse: Callable[[bytes], TracesData]  # payload -> message; DecodeError when invalid
    encode: Callable[[TracesData], bytes]
    # Serialized protobuf messages concatenate into one message of all their fields, so many
    # records can be parsed in one call; JSON documents cannot.
    concatenates: bool


CODECS: dict[Encoding, Codec] = {
    "otlp_proto": Codec(decode_proto, parse_proto, encode_proto, concatenates=True),
    "otlp_json": Codec(decode_json, parse_otlp_json, encode_json, concatenates=False),
}


def encodings() -> list[str]:
    return list(CODECS)


def get_codec(encoding: str) -> Codec:
    """The codec for an encoding name; ConfigError naming the valid ones otherwise."""
    try:
        return CODECS[encoding]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ConfigError(
            f"encoding: unknown encoding {encoding!r}; expected one of {encodings()}"
        ) from None


def get_decoder(encoding: str) -> Decoder:
    return get_codec(encoding).decode


def encode(msg: TracesData, encoding: str) -> bytes:
    """Encode for an encoding name; ConfigError otherwise."""
    return get_codec(encoding).encode(msg)
