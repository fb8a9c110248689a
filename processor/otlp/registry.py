"""Encoding name -> decoder function, for the `encoding` key of receivers and topics."""

from __future__ import annotations

from collections.abc import Callable

from processor.errors import ConfigError
from processor.otlp.attributes import DecodeContext
from processor.otlp.batch import SpanBatch
from processor.otlp.decode_json import decode_json
from processor.otlp.decode_proto import decode_proto

Decoder = Callable[[bytes, DecodeContext], SpanBatch]

DECODERS: dict[str, Decoder] = {
    "otlp_proto": decode_proto,
    "otlp_json": decode_json,
}


def encodings() -> list[str]:
    return list(DECODERS)


def get_decoder(encoding: str) -> Decoder:
    """The decoder for an encoding name; ConfigError naming the valid ones otherwise."""
    try:
        return DECODERS[encoding]
    except (KeyError, TypeError):
        raise ConfigError(
            f"encoding: unknown encoding {encoding!r}; expected one of {encodings()}"
        ) from None
