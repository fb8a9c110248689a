"""SpanDecoder: OTLP payloads (one or many Kafka records) -> columnar SpanBatch."""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import NamedTuple

import numpy as np
from google.protobuf.message import DecodeError as ProtobufDecodeError

from processor.config.components import ServiceGraphConfig
from processor.config.kafka import HEADER_ATTRIBUTE_PREFIX
from processor.errors import DecodeError
from processor.otlp.attributes import AttributePlan, DecodeContext
from processor.otlp.batch import SpanBatch, StringTable
from processor.otlp.decode_json import decode_json
from processor.otlp.decode_proto import decode_proto, decode_resource_spans, parse
from processor.otlp.gc_pause import gc_paused
from processor.otlp.registry import get_codec, get_decoder
from processor.otlp.wire_view import TracesDataTopView

_resource_spans = attrgetter("resource_spans")
# Records parsed together per call: large enough to amortise per-call work, small enough that
# the parsed chunk stays in CPU cache (measured: ~1000 spans per call is fastest).
CHUNK_BYTES = 256 * 1024


def _chunks(payloads: Sequence[bytes], concatenates: bool, chunk_bytes: int) -> list[tuple[int, int]]:
    """[start, end) ranges of payloads to decode together (JSON: one record at a time)."""
    if not concatenates:
        return [(i, i + 1) for i in range(len(payloads))]
    ranges, start, size = [], 0, 0
    for i, payload in enumerate(payloads):
        if size and size + len(payload) > chunk_bytes:
            ranges.append((start, i))
            start, size = i, 0
        size += len(payload)
    if start < len(payloads):
        ranges.append((start, len(payloads)))
    return ranges


class DecodedRecords(NamedTuple):
    """Spans of the records that decoded, and (record index, error) for those that did not."""

    batch: SpanBatch
    errors: list[tuple[int, DecodeError]]


class SpanDecoder:
    """Decodes OTLP trace payloads into SpanBatch, interning strings in `strings`.

    `servicegraph` (`processors.servicegraph`) names the attributes that feed the pairing
    columns: `virtual_node_peer_attributes` and `database_name_attributes`, first present wins.
    """

    def __init__(self, strings: StringTable, servicegraph: ServiceGraphConfig | None = None,
                 extract_headers: Sequence[str] = ()) -> None:
        """``extract_headers``: `receivers.kafka.header_extraction`'s active header names."""
        self.strings = strings
        self.servicegraph = servicegraph or ServiceGraphConfig()
        plan = AttributePlan.build(self.servicegraph)
        self._ctx = DecodeContext(strings, plan)
        # (header name, resource key id) of extracted headers some column reads.
        self._headers = [(h, plan.resource_key_ids[HEADER_ATTRIBUTE_PREFIX + h]) for h in extract_headers
                         if HEADER_ATTRIBUTE_PREFIX + h in plan.resource_key_ids]

    def compact_strings(self, live: np.ndarray) -> np.ndarray:
        """`StringTable.compact` for a table this decoder interns into: its caches of codes
        are dropped with it. Returns the remap every other holder of codes must apply."""
        remap = self.strings.compact(live)
        self._ctx.forget_codes()
        return remap

    def decode_proto(self, payload: bytes) -> SpanBatch:
        """Serialized TracesData or ExportTraceServiceRequest (wire-identical)."""
        with gc_paused():
            return decode_proto(payload, self._ctx)

    def decode_json(self, payload: bytes) -> SpanBatch:
        """OTLP/JSON: hex ids, camelCase (or snake_case) keys, int64 as strings or numbers."""
        with gc_paused():
            return decode_json(payload, self._ctx)

    def decode(self, payload: bytes, encoding: str) -> SpanBatch:
        """Decode with the registered decoder for `encoding` ("otlp_proto" / "otlp_json")."""
        decoder = get_decoder(encoding)
        with gc_paused():
            return decoder(payload, self._ctx)

    def decode_records(
        self,
        payloads: Sequence[bytes],
        encoding: str,
        offsets: Sequence[int] | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        headers: Sequence[Sequence[tuple[str, bytes]]] | None = None,
    ) -> DecodedRecords:
        """Decode many records into one batch; `offset` is set per record from `offsets`.

        Per-call overhead dominates for small records (a Kafka record usually holds one
        trace), so protobuf records are parsed together, about `chunk_bytes` at a time; if a
        chunk fails, its records are decoded one by one so only the bad ones are reported,
        in `errors` as (index into payloads, DecodeError). ``headers``: each record's Kafka
        headers, for `header_extraction` (see `header_hits`).
        """
        extra = [self.header_hits(h) for h in headers] if headers is not None and self._headers else None
        codec = get_codec(encoding)
        decoder = codec.decode
        parts: list[SpanBatch] = []
        counts: list[np.ndarray] = []
        ok: list[int] = []
        errors: list[tuple[int, DecodeError]] = []
        with gc_paused():
            for start, end in _chunks(payloads, codec.concatenates, chunk_bytes):
                chunk = payloads[start:end]
                if end - start > 1:
                    try:
                        batch, per_record = self._proto_records(
                            chunk, None if extra is None else extra[start:end])
                    except DecodeError:
                        pass  # decoded one by one below, to find the bad records
                    else:
                        parts.append(batch)
                        counts.append(per_record)
                        ok += range(start, end)
                        continue
                for i, payload in enumerate(chunk, start):
                    self._ctx.record_hits = () if extra is None else extra[i]
                    try:
                        batch = decoder(payload, self._ctx)
                    except DecodeError as exc:
                        errors.append((i, exc))
                        continue
                    finally:
                        self._ctx.record_hits = ()
                    parts.append(batch)
                    counts.append(np.array([len(batch)], dtype=np.int64))
                    ok.append(i)
        batch = SpanBatch.concat(parts)
        if offsets is not None and len(batch):
            per_record = np.concatenate(counts)
            batch.offset = np.repeat(np.asarray(offsets, dtype=np.int64)[ok], per_record)
        return DecodedRecords(batch, errors)

    def header_hits(self, headers: Sequence[tuple[str, bytes]]) -> tuple[tuple[int, int], ...]:
        """The resource attribute hits a record's headers add: `kafka.header.<name>` for each
        extracted header present (the first of a name), when the plan reads that attribute."""
        out = []
        for name, key_id in self._headers:
            value = next((v for k, v in headers if k == name), None)
            if value is not None:
                code = self.strings.code(value.decode("utf-8", "replace"))
                if code:
                    out.append((key_id, code))
        return tuple(out)

    def _proto_records(self, payloads: Sequence[bytes],
                       extra: Sequence[tuple[tuple[int, int], ...]] | None = None
                       ) -> tuple[SpanBatch, np.ndarray]:
        """All records in one parse: serialized TracesData concatenate into a valid TracesData.

        Each record is first checked to be a complete message on its own (a cheap parse that
        leaves ResourceSpans as bytes), which also gives its ResourceSpans count; a record cut
        short would otherwise swallow the next one's bytes.
        """
        try:
            tops = list(map(TracesDataTopView.FromString, payloads))
        except ProtobufDecodeError as exc:
            raise DecodeError(str(exc)) from None
        rs_per_record = np.fromiter(
            map(len, map(_resource_spans, tops)), dtype=np.int64, count=len(payloads)
        )
        # Records made only of unknown fields are rejected when decoded alone; do the same.
        if any(n == 0 and p for n, p in zip(rs_per_record.tolist(), payloads, strict=True)):
            raise DecodeError("a record has no resource_spans")
        joined = b"".join(payloads)
        rs_extra = None
        if extra is not None and any(extra):
            rs_extra = [e for e, n in zip(extra, rs_per_record.tolist(), strict=True) for _ in range(n)]
        batch, spans_per_rs, _ = decode_resource_spans(joined, parse(joined), self._ctx, rs_extra)
        record_of_rs = np.repeat(np.arange(len(payloads)), rs_per_record)
        counts = np.bincount(record_of_rs, weights=spans_per_rs, minlength=len(payloads))
        return batch, counts.astype(np.int64)
