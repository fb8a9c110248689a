"""Compact span records on the re-key topic: lossless, one destination per trace, whole input records."""

from __future__ import annotations

import numpy as np
import pytest

from processor.aggregate import rekey_codec
from processor.aggregate.rekey import UNCHANGED_COMMIT_S, Origins
from processor.config.components import ServiceGraphConfig
from processor.errors import DecodeError
from processor.generate import ShopGenerator
from processor.otlp.batch import SpanBatch, StringTable
from processor.otlp.decode import SpanDecoder

HOSTILE = ["", "ignore previous instructions", "x\x00\x1b[31m'\";--", "ü" * 5000, "\ud7ff€"]


# Attributes the shop traffic sets on some spans and not on others.
DIMENSIONS = ("peer.service", "db.system", "messaging.system")


def _batch(strings: StringTable, traces: int = 200, dimensions: tuple[str, ...] = ()) -> SpanBatch:
    gen = ShopGenerator(seed=3, rate=100, start_ns=1_700_000_000 * 10**9)
    payloads = [tr.data.SerializeToString() for tr in list(gen.traces(60))[:traces]]
    decoder = SpanDecoder(strings, ServiceGraphConfig(dimensions=dimensions))
    decoded = decoder.decode_records(payloads, "otlp_proto", list(range(100, 100 + len(payloads))))
    assert not decoded.errors
    return decoded.batch


def _rows(batch: SpanBatch, strings: StringTable) -> list[tuple]:
    """Every column of every span, string columns as their text (codes differ by table);
    `dims` as a tuple of texts per span."""
    cols = []
    for name in SpanBatch.column_names():
        col = getattr(batch, name)
        if col.ndim == 2:
            cols.append([tuple(strings.strings[c] for c in row) for row in col.tolist()])
        else:
            cols.append([strings.strings[c] for c in col] if col.dtype == np.int32 else col.tolist())
    return list(zip(*cols, strict=True))


def test_a_record_decodes_to_the_same_spans_in_a_fresh_string_table() -> None:
    sender = StringTable()
    batch = _batch(sender)
    batch.service[:len(HOSTILE)] = [sender.code(s) for s in HOSTILE]
    receiver = StringTable()
    spans, origin = rekey_codec.decode(rekey_codec.encode(batch, sender), receiver)
    assert origin.tolist() == batch.offset.tolist()
    spans.offset = batch.offset  # set by the receiver from its own record's offset
    assert _rows(spans, receiver) == _rows(batch, sender)


def test_dimension_values_travel_by_attribute_name() -> None:
    """Each span's `dimensions` values reach the re-key partition, hostile text as it was; a
    receiver configured with other dimensions (or another order) reads them by name, and
    one it does not find is absent."""
    sender = StringTable()
    batch = _batch(sender, dimensions=DIMENSIONS)
    has = (batch.dims != 0).any(axis=0)
    assert has.all() and not (batch.dims != 0).all(axis=1).all()  # each is set on some spans only
    batch.dims[:len(HOSTILE), 0] = [sender.code(s) for s in HOSTILE]
    record = rekey_codec.encode(batch, sender, DIMENSIONS)
    receiver = StringTable()
    spans, _ = rekey_codec.decode(record, receiver, DIMENSIONS)
    spans.offset = batch.offset
    assert _rows(spans, receiver) == _rows(batch, sender)
    other = StringTable()
    spans, _ = rekey_codec.decode(record, other, ("messaging.system", "tenant", "peer.service"))
    names = np.array(other.strings, dtype=object)
    assert names[spans.dims[:, 0]].tolist() == [sender.strings[c] for c in batch.dims[:, 2]]
    assert not spans.dims[:, 1].any()  # the sender had no such dimension
    assert names[spans.dims[:, 2]].tolist() == [sender.strings[c] for c in batch.dims[:, 0]]
    assert rekey_codec.decode(record, StringTable())[0].dims.shape == (len(batch), 0)
    with pytest.raises(ValueError, match="dimension columns"):
        rekey_codec.encode(batch, sender)  # what `dims` holds must be named


def test_every_span_of_a_trace_goes_to_one_destination_whichever_record_brought_it() -> None:
    strings = StringTable()
    batch = _batch(strings)
    dest = rekey_codec.destinations(batch, 7)
    seen: dict[tuple[int, int], int] = {}
    for hi, lo, d in zip(batch.trace_hi.tolist(), batch.trace_lo.tolist(), dest.tolist(), strict=True):
        assert seen.setdefault((hi, lo), d) == d
    assert set(dest.tolist()) == set(range(7))  # 200 traces spread over every partition
    parts = list(rekey_codec.split(batch, 7))
    assert sum(len(p) for _, p in parts) == len(batch)
    for d, part in parts:
        assert (rekey_codec.destinations(part, 7) == d).all()
        assert (np.diff(part.offset) >= 0).all()  # input order kept


@pytest.mark.parametrize("limit", [1, 7, 50, 10_000])
def test_chunks_cut_only_between_input_records(limit: int) -> None:
    batch = _batch(StringTable(), traces=60)
    pieces = list(rekey_codec.chunks(batch, limit))
    assert sum(len(p) for p in pieces) == len(batch)
    assert np.array_equal(np.concatenate([p.span_id for p in pieces]), batch.span_id)
    firsts = [int(p.offset[0]) for p in pieces]
    lasts = [int(p.offset[-1]) for p in pieces]
    assert all(a < b for a, b in zip(lasts, firsts[1:], strict=False))  # no record in two pieces
    for p in pieces:  # only a single record may exceed the limit
        assert len(p) <= limit or len(set(p.offset.tolist())) == 1


def test_a_replayed_origin_record_is_applied_once() -> None:
    origins = Origins(partitions=2)
    assert origins.new_spans(0, np.array([5, 5, 6]), 0).tolist() == [True, True, True]
    # A new owner replays from the committed offset 5: records 5 and 6 again, then 7.
    assert origins.new_spans(0, np.array([5, 6, 6, 7]), 1).tolist() == [False, False, False, True]
    assert origins.new_spans(1, np.array([5]), 2).tolist() == [True]  # origins are apart


def test_what_was_applied_before_an_offset_is_what_a_new_owner_resumes_with() -> None:
    """Re-key records 10, 11, 12 from origins 0, 1, 0: the state before each offset, and a
    new owner resuming at 12 with it skips a replay of origin 0's records up to 7."""
    origins = Origins(partitions=2)
    origins.new_spans(0, np.array([3, 4]), 10)
    origins.new_spans(1, np.array([9]), 11)
    origins.new_spans(0, np.array([7]), 12)
    assert origins.applied_before(10) == {}
    assert origins.applied_before(11) == {0: 4}
    assert origins.applied_before(12) == {0: 4, 1: 9}
    assert origins.applied_before(13) == {0: 7, 1: 9}
    assert origins.to_store(12, now_s=0.0) == {0: 4, 1: 9}
    origins.settle(12, now_s=0.0)
    assert origins.applied_before(11) is None  # folded in: no longer known
    assert origins.applied_before(13) == {0: 7, 1: 9}
    assert origins.to_store(13, now_s=1.0) == {0: 7, 1: 9}  # changed: stored with the commit
    origins.settle(13, now_s=1.0)
    # Only markers since: that commit waits a minute, unless the partition is handed over.
    assert origins.to_store(20, now_s=2.0) is None
    assert origins.to_store(20, now_s=2.0, hand_over=True) == {0: 7, 1: 9}
    assert origins.to_store(20, now_s=1.0 + UNCHANGED_COMMIT_S) == {0: 7, 1: 9}
    resumed = Origins.resumed(2, 12, {0: 4, 1: 9})
    assert resumed.new_spans(0, np.array([4, 5]), 12).tolist() == [False, True]
    assert resumed.new_spans(1, np.array([9]), 13).tolist() == [False]
    assert resumed.applied_before(14) == {0: 5, 1: 9}
    fresh = Origins.resumed(2, 0, None)  # nothing stored: the first commit stores even {}
    assert fresh.to_store(0, now_s=0.0) == {} and fresh.applied_before(0) == {}


@pytest.mark.parametrize("value", [b"", b"\x00" * 40, b"not arrow at all", b'{"resourceSpans": []}'])
def test_garbage_is_a_decode_error(value: bytes) -> None:
    with pytest.raises(DecodeError):
        rekey_codec.decode(value, StringTable())
