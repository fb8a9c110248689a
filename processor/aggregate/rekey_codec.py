"""Compact span records for the re-key topic: decoded span columns as Arrow IPC, per destination.

Stage 1 decodes an unkeyed input batch once, as it decodes keyed input, and sends each
re-key partition the columns of the spans whose trace hashes to it: one record per
destination and batch (split at input-record boundaries when large), instead of one
re-encoded OTLP record per trace. This is the DESIGN's "compact span records": the
protobuf parse, per-trace split and re-encode in Python cost more than everything else
the unkeyed path does, and one Kafka record per trace cost as much again on both sides.

Arrow IPC (pyarrow, already installed with chdb) carries the numeric columns as they are
and string columns dictionary-encoded, so a record holds each service name once and the
receiver interns only the dictionary. The `origin_offset` column names each span's input
record: a re-key partition applies only spans past the last origin offset it applied. The
`dimensions` values (one column of `dims` per configured attribute) travel as one string
column each, named by the attribute, so a receiver reads the ones it is configured with
whatever order or set the sender had.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa

from processor.errors import DecodeError
from processor.otlp.batch import SpanBatch, StringTable

FORMAT_HEADER = "otel-insights-rekey-format"
FORMAT = b"arrow-spans-v1"
ORIGIN_OFFSET = "origin_offset"
DIMENSION_PREFIX = "dim:"  # + the attribute: one `dims` column (processors.servicegraph.dimensions)
MAX_SPANS_PER_RECORD = 4096  # ~0.4 MB of columns: well under Kafka's 1 MB default message size

# Not sent: the receiver sets `offset` to the re-key record's own offset; `dims` goes one
# column per dimension.
_SENT = [n for n in SpanBatch.column_names() if n not in ("offset", "dims")]
_STRING_COLUMNS = frozenset(n for n in _SENT if SpanBatch.DTYPES[n] is np.int32)


def destinations(batch: SpanBatch, partitions: int) -> np.ndarray:
    """The re-key partition of each span: a hash of its trace id, the same for every span of
    a trace whichever input record brought it."""
    mixed = (batch.trace_hi ^ (batch.trace_lo * np.uint64(0x9E3779B97F4A7C15))) >> np.uint64(17)
    return (mixed % np.uint64(partitions)).astype(np.int64)


def split(batch: SpanBatch, partitions: int) -> Iterator[tuple[int, SpanBatch]]:
    """(destination, spans) for each destination with spans; within one, spans keep their
    input order, and a large part is cut only between input records (by `offset`)."""
    if not len(batch):
        return
    dest = destinations(batch, partitions)
    order = np.argsort(dest, kind="stable")
    sorted_dest = dest[order]
    bounds = np.flatnonzero(np.diff(sorted_dest)) + 1
    for idx in np.split(order, bounds):
        part = batch.take(idx)
        yield int(dest[idx[0]]), part


def chunks(part: SpanBatch, limit: int = MAX_SPANS_PER_RECORD) -> Iterator[SpanBatch]:
    """``part`` in pieces of at most ``limit`` spans, cut only between input records (a replay
    filter keyed by input offset must see each input record whole); one record larger than
    ``limit`` is a piece of its own."""
    n = len(part)
    if n <= limit:
        yield part
        return
    ends = (np.flatnonzero(part.offset[1:] != part.offset[:-1]) + 1).tolist() + [n]
    cut = last = 0
    for end in ends:
        if end - cut > limit and last > cut:
            yield part.take(slice(cut, last))  # type: ignore[arg-type]
            cut = last
        last = end
    yield part.take(slice(cut, n))  # type: ignore[arg-type]


def encode(part: SpanBatch, strings: StringTable, dimensions: Sequence[str] = ()) -> bytes:
    """The spans' columns as one Arrow IPC stream; `offset` travels as `origin_offset`, and
    `dims` column i as `dim:<dimensions[i]>` (``dimensions``: the attributes `dims` holds)."""
    if part.dims.shape[1] != len(dimensions):
        raise ValueError(f"the spans have {part.dims.shape[1]} dimension columns, not {len(dimensions)}")
    names = strings.strings
    arrays: list[pa.Array] = []
    fields: list[str] = []
    columns = [(name, getattr(part, name)) for name in _SENT]
    columns += [(DIMENSION_PREFIX + d, part.dims[:, i]) for i, d in enumerate(dimensions)]
    for name, col in columns:
        if name in _STRING_COLUMNS or name.startswith(DIMENSION_PREFIX):
            uniq, inverse = np.unique(col, return_inverse=True)
            dictionary = pa.array([names[c] for c in uniq.tolist()], type=pa.string())
            arrays.append(pa.DictionaryArray.from_arrays(inverse.astype(np.int32), dictionary))
        else:
            arrays.append(pa.array(col))
        fields.append(name)
    arrays.append(pa.array(part.offset))
    fields.append(ORIGIN_OFFSET)
    batch = pa.RecordBatch.from_arrays(arrays, names=fields)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def decode(data: bytes, strings: StringTable, dimensions: Sequence[str] = ()) -> tuple[SpanBatch, np.ndarray]:
    """(spans, their origin offsets); strings interned into ``strings``; `dims` holds the
    ``dimensions`` attributes' values, in that order. Columns this version (or this
    configuration) does not know are ignored and missing ones are zero (absent), so mixed
    versions and a change of `dimensions` interoperate."""
    try:
        reader = pa.ipc.open_stream(data)
        table = reader.read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise DecodeError(f"not a re-key span record: {exc}") from exc
    if ORIGIN_OFFSET not in table.column_names:
        raise DecodeError("re-key span record without origin offsets")
    cols: dict[str, np.ndarray] = {}
    wanted = {DIMENSION_PREFIX + d for d in dimensions}
    for name in table.column_names:
        if name not in SpanBatch.DTYPES and name != ORIGIN_OFFSET and name not in wanted:
            continue
        col = table.column(name).combine_chunks()
        if pa.types.is_dictionary(col.type):
            codes = np.array([strings.code(s or "") for s in col.dictionary.to_pylist()], dtype=np.int32)
            indices = col.indices.to_numpy(zero_copy_only=False)
            cols[name] = codes[indices] if codes.size else np.zeros(len(col), dtype=np.int32)
        else:
            cols[name] = col.to_numpy(zero_copy_only=False)
    origin = np.asarray(cols.pop(ORIGIN_OFFSET), dtype=np.int64)
    n = len(origin)
    cols["span_id"] = cols.get("span_id", np.zeros(n, dtype=np.uint64))
    cols.pop("dims", None)
    absent = np.zeros(n, dtype=np.int32)
    cols["dims"] = np.stack([np.asarray(cols.pop(DIMENSION_PREFIX + d, absent), np.int32) for d in dimensions],
                            axis=1) if dimensions else np.zeros((n, 0), np.int32)
    return SpanBatch.from_columns(cols), origin  # type: ignore[arg-type]
