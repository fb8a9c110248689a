"""Payload compression applied by producers or HTTP clients (not Kafka batch compression).

Kafka-level batch compression is undone by the Kafka client. This module handles payloads an
application compressed itself before producing, and HTTP bodies (`Content-Encoding`). Codecs
are recognised by their magic bytes; an OTLP protobuf payload starts with 0x0a and OTLP/JSON
with `{` or whitespace, so detection can never mistake an uncompressed payload for a codec.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import cramjam

from processor.config.components import KafkaReceiver
from processor.errors import ConfigError, DecodeError, RecordTooLarge

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"
SNAPPY_FRAMED_MAGIC = b"\xff\x06\x00\x00sNaPpY"
XERIAL_SNAPPY_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = 16  # magic, int32 version, int32 compatible version
# receivers.kafka.max_record_bytes's default (the config model holds it)
DEFAULT_MAX_RECORD_BYTES: int = KafkaReceiver.model_fields["max_record_bytes"].default


_OVERFLOW = "failed to write whole buffer"  # cramjam's *_into message when the output is full


def _too_large(limit: int) -> RecordTooLarge:
    return RecordTooLarge(f"payload decompresses to more than max_record_bytes ({limit} bytes)")


def _bounded(into: Callable[[bytes, bytearray], int]) -> Callable[[bytes, int], bytes]:
    """A decompressor that never writes more than ``limit`` + 1 bytes: it decompresses into a
    buffer (first about 16x the input, growing 4x at a time up to the limit) and stops when
    the buffer is full, so a bomb costs the limit, not what it would inflate to."""

    def run(payload: bytes, limit: int) -> bytes:
        size = min(limit + 1, max(64 * 1024, 16 * len(payload)))
        while True:
            out = bytearray(size)
            try:
                n = into(payload, out)
            except cramjam.DecompressionError as exc:
                if _OVERFLOW not in str(exc):
                    raise
                n = size
            if n < size:
                return bytes(memoryview(out)[:n])
            if size > limit:
                raise _too_large(limit)
            size = min(limit + 1, size * 4)

    return run


def _raw_snappy(block: bytes, limit: int) -> bytes:
    # A raw snappy block states its length up front: refuse before allocating.
    if cramjam.snappy.decompress_raw_len(block) > limit:
        raise _too_large(limit)
    return bytes(cramjam.snappy.decompress_raw(block))


def _xerial_decompress(payload: bytes, limit: int) -> bytes:
    """Java/xerial snappy stream: header, then (int32 big-endian length, raw snappy block)*."""
    out = []
    pos = _XERIAL_HEADER
    total = 0
    while pos < len(payload):
        if pos + 4 > len(payload):
            raise ValueError("truncated block length")
        (size,) = struct.unpack_from(">i", payload, pos)
        pos += 4
        if size < 0 or pos + size > len(payload):
            raise ValueError("truncated block")
        block = _raw_snappy(payload[pos : pos + size], limit - total)
        total += len(block)
        out.append(block)
        pos += size
    return b"".join(out)


def _xerial_compress(payload: bytes, block_size: int = 32 * 1024) -> bytes:
    out = [XERIAL_SNAPPY_MAGIC, struct.pack(">ii", 1, 1)]
    for start in range(0, max(len(payload), 1), block_size):
        block = bytes(cramjam.snappy.compress_raw(payload[start : start + block_size]))
        out += [struct.pack(">i", len(block)), block]
    return b"".join(out)


_zlib = _bounded(cramjam.zlib.decompress_into)
_raw_deflate = _bounded(cramjam.deflate.decompress_into)
_snappy_framed = _bounded(cramjam.snappy.decompress_into)


def _inflate(payload: bytes, limit: int) -> bytes:
    # HTTP "deflate" means zlib-wrapped data, but some clients send a raw deflate stream.
    try:
        return _zlib(payload, limit)
    except RecordTooLarge:
        raise
    except Exception:
        return _raw_deflate(payload, limit)


def _snappy_any(payload: bytes, limit: int) -> bytes:
    if payload.startswith(XERIAL_SNAPPY_MAGIC):
        return _xerial_decompress(payload, limit)
    return _snappy_framed(payload, limit)


_DECOMPRESS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": _bounded(cramjam.gzip.decompress_into),
    "zstd": _bounded(cramjam.zstd.decompress_into),
    "lz4": _bounded(cramjam.lz4.decompress_into),
    "snappy": _snappy_any,  # framed, or xerial when it carries that header
    "xerial_snappy": _xerial_decompress,
    "snappy_raw": _raw_snappy,
    "deflate": _inflate,
    "zlib": _zlib,
}

_COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "none": bytes,
    "gzip": lambda p: bytes(cramjam.gzip.compress(p)),
    "zstd": lambda p: bytes(cramjam.zstd.compress(p)),
    "lz4": lambda p: bytes(cramjam.lz4.compress(p)),
    "snappy": lambda p: bytes(cramjam.snappy.compress(p)),
    "xerial_snappy": _xerial_compress,
    "snappy_raw": lambda p: bytes(cramjam.snappy.compress_raw(p)),
    "deflate": lambda p: bytes(cramjam.zlib.compress(p)),
    "zlib": lambda p: bytes(cramjam.zlib.compress(p)),
}

CODECS: tuple[str, ...] = tuple(_COMPRESS)


def detect_codec(payload: bytes) -> str:
    """Codec named by the payload's magic bytes, or "none". Raw snappy has no magic."""
    if payload.startswith(GZIP_MAGIC):
        return "gzip"
    if payload.startswith(ZSTD_MAGIC):
        return "zstd"
    if payload.startswith(LZ4_FRAME_MAGIC):
        return "lz4"
    if payload.startswith(SNAPPY_FRAMED_MAGIC):
        return "snappy"
    if payload.startswith(XERIAL_SNAPPY_MAGIC):
        return "xerial_snappy"
    return "none"


def decompress_record(payload: bytes, codec: str = "auto", max_bytes: int = DEFAULT_MAX_RECORD_BYTES
                      ) -> bytes:
    """Undo producer-side compression; the result is at most ``max_bytes`` long.

    `codec="auto"` detects gzip, zstd, lz4 frame, framed snappy and xerial snappy by their
    magic bytes and returns anything else unchanged. Raw snappy blocks carry no magic, so they
    are only decoded when asked for with `codec="snappy_raw"`. An explicit codec (also
    `deflate`/`zlib`, e.g. from an HTTP Content-Encoding) is applied as given; "none" or
    "identity" returns the payload unchanged. A payload that fails to decompress raises
    DecodeError; one that is, or would decompress to, more than ``max_bytes`` raises
    RecordTooLarge (a DecodeError) having decompressed at most that much; an unknown codec
    name raises ConfigError.
    """
    if codec == "auto":
        codec = detect_codec(payload)
    if codec in ("none", "identity", ""):
        if len(payload) > max_bytes:
            raise RecordTooLarge(f"payload of {len(payload)} bytes exceeds max_record_bytes ({max_bytes})")
        return payload
    decompress = _DECOMPRESS.get(codec)
    if decompress is None:
        raise ConfigError(
            f"compression: unknown codec {codec!r}; expected one of {sorted(_DECOMPRESS)}"
        )
    try:
        return decompress(payload, max_bytes)
    except RecordTooLarge:
        raise
    except Exception as exc:  # cramjam raises its own DecompressionError and ValueErrors
        raise DecodeError(f"payload is not valid {codec}: {exc}") from None


def compress(payload: bytes, codec: str) -> bytes:
    """Compress with one of CODECS (for the gateway and tests)."""
    fn = _COMPRESS.get(codec)
    if fn is None:
        raise ConfigError(f"compression: unknown codec {codec!r}; expected one of {list(CODECS)}")
    return fn(payload)
