"""Producer-side / HTTP payload compression: detection, round trips and failures."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Callable

import cramjam
import pytest

from processor.errors import ConfigError, DecodeError, RecordTooLarge
from processor.otlp.compression import CODECS, compress, decompress_record, detect_codec

PAYLOAD = b"\x0a\x85\x01" + bytes(range(256)) * 300  # > one 32 KiB xerial block
JSON_PAYLOAD = b'{"resourceSpans": []}'

DETECTED = ["gzip", "zstd", "lz4", "snappy", "xerial_snappy"]


@pytest.mark.parametrize("codec", DETECTED)
def test_auto_detects_and_round_trips(codec: str) -> None:
    packed = compress(PAYLOAD, codec)
    assert packed != PAYLOAD
    assert detect_codec(packed) == codec
    assert decompress_record(packed) == PAYLOAD
    assert decompress_record(packed, codec) == PAYLOAD


@pytest.mark.parametrize("codec", [c for c in CODECS if c != "none"])
def test_explicit_codec_round_trips(codec: str) -> None:
    for payload in (PAYLOAD, JSON_PAYLOAD, b""):
        assert decompress_record(compress(payload, codec), codec) == payload


def test_uncompressed_payloads_pass_through() -> None:
    for payload in (PAYLOAD, JSON_PAYLOAD, b"", b"  {}", b"\x0a"):
        assert decompress_record(payload) is payload
        assert detect_codec(payload) == "none"
    assert decompress_record(PAYLOAD, "identity") is PAYLOAD


def test_raw_snappy_only_when_asked() -> None:
    raw = compress(PAYLOAD, "snappy_raw")
    assert decompress_record(raw) == raw  # no magic: left alone
    assert decompress_record(raw, "snappy_raw") == PAYLOAD


def test_interoperates_with_other_implementations() -> None:
    assert decompress_record(gzip.compress(PAYLOAD)) == PAYLOAD
    assert decompress_record(zlib.compress(PAYLOAD), "deflate") == PAYLOAD
    raw_deflate = bytes(cramjam.deflate.compress(PAYLOAD))  # what some HTTP clients send
    assert decompress_record(raw_deflate, "deflate") == PAYLOAD
    # Two concatenated gzip members (e.g. a body gzipped in chunks) form one stream.
    assert decompress_record(gzip.compress(b"ab") + gzip.compress(b"cd")) == b"abcd"


def test_xerial_multi_block_layout() -> None:
    packed = compress(PAYLOAD, "xerial_snappy")
    assert packed.startswith(b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01")
    assert len(PAYLOAD) > 32 * 1024  # so more than one block was written
    assert decompress_record(packed, "snappy") == PAYLOAD


@pytest.mark.parametrize("codec", DETECTED)
def test_corrupt_payload_raises_decode_error(codec: str) -> None:
    packed = compress(PAYLOAD, codec)
    broken = packed[: len(packed) // 2]
    with pytest.raises(DecodeError, match=codec):
        decompress_record(broken)


def test_gzip_header_with_garbage_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        decompress_record(b"\x1f\x8bnot really gzip")


def test_unknown_codec_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="gzip"):
        decompress_record(PAYLOAD, "brotli2")
    with pytest.raises(ConfigError):
        compress(PAYLOAD, "lzma")


@pytest.mark.parametrize("codec", ["gzip", "zstd", "lz4", "snappy", "xerial_snappy", "snappy_raw",
                                   "deflate", "zlib"])
def test_a_compression_bomb_stops_at_the_limit(codec: str) -> None:
    """256 MiB of zeros in a few KB: refused having written at most the limit (+1 byte)."""
    bomb = compress(b"\0" * (256 * 1024 * 1024), codec)
    peak = _peak_bytes(lambda: decompress_record(bomb, codec, max_bytes=1024 * 1024))
    assert peak < 8 * 1024 * 1024, peak


def _peak_bytes(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(RecordTooLarge, match="more than max_record_bytes"):
            fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("codec", ["gzip", "zstd", "lz4", "snappy", "xerial_snappy", "snappy_raw", "deflate"])
def test_the_limit_is_inclusive(codec: str) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    packed = compress(payload, codec)
    assert decompress_record(packed, codec, max_bytes=len(payload)) == payload
    with pytest.raises(RecordTooLarge):
        decompress_record(packed, codec, max_bytes=len(payload) - 1)


def test_an_uncompressed_record_over_the_limit_is_too_large() -> None:
    assert decompress_record(PAYLOAD, max_bytes=len(PAYLOAD)) is PAYLOAD
    with pytest.raises(RecordTooLarge, match="exceeds max_record_bytes"):
        decompress_record(PAYLOAD, max_bytes=len(PAYLOAD) - 1)


def test_too_large_is_a_decode_error_the_pipeline_can_tell_apart() -> None:
    assert issubclass(RecordTooLarge, DecodeError)
