"""The columnar span batch every stage works on, and the string table behind its codes."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

# OTLP SpanKind / Status.StatusCode numeric values.
KIND_UNSPECIFIED, KIND_INTERNAL, KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER = range(6)
STATUS_UNSET, STATUS_OK, STATUS_ERROR = range(3)


class StringTable:
    """Interns strings to dense int32 codes; code 0 is always the empty string (absent).

    Codes are stable until `compact`, which whoever holds codes must follow with the remap
    it returns, so batches decoded with the same table can be concatenated and grouped by
    code without touching the strings.
    """

    def __init__(self) -> None:
        self._codes: dict[str, int] = {"": 0}
        self.strings: list[str] = [""]

    def code(self, value: str) -> int:
        c = self._codes.get(value)
        if c is None:
            c = len(self.strings)
            self._codes[value] = c
            self.strings.append(value)
        return c

    def lookup(self, code: int) -> str:
        return self.strings[code]

    def __len__(self) -> int:
        return len(self.strings)

    def compact(self, live: np.ndarray) -> np.ndarray:
        """Forget every string whose code is not in ``live``; returns the remap array
        (``remap[old] = new``; 0 for forgotten codes) to apply to every array holding codes.

        The table interns every distinct string it is shown, so without this it grows with
        everything ever decoded. Kept codes keep their order, so sorted code arrays stay sorted.
        """
        keep = np.zeros(len(self.strings), bool)
        keep[np.asarray(live, np.int64)] = True
        keep[0] = True
        old = np.nonzero(keep)[0]
        remap = np.zeros(len(self.strings), np.int32)
        remap[old] = np.arange(old.size, dtype=np.int32)
        self.strings = [self.strings[i] for i in old.tolist()]
        self._codes = {v: i for i, v in enumerate(self.strings)}
        return remap


def saturate_int64(values: np.ndarray) -> np.ndarray:
    """uint64 nanoseconds as int64, clamped at int64's maximum (year 2262), never negative."""
    return np.minimum(values, np.uint64(np.iinfo(np.int64).max)).astype(np.int64)


@dataclass
class SpanBatch:
    """Spans as parallel numpy arrays (one row per span).

    Ids are split into big-endian uint64 halves so equality and hashing stay vectorised;
    an absent id (e.g. no parent) is 0. String columns hold StringTable codes (0 = absent).
    `offset` is the Kafka offset of the record the span came from (-1 when not from Kafka).
    `dims` has one column per configured servicegraph `dimensions` attribute (maybe none).
    """

    trace_hi: np.ndarray  # uint64
    trace_lo: np.ndarray  # uint64
    span_id: np.ndarray  # uint64
    parent_span_id: np.ndarray  # uint64, 0 = root
    service: np.ndarray  # int32 code of resource attribute service.name
    kind: np.ndarray  # int8 SpanKind
    start_ns: np.ndarray  # int64
    end_ns: np.ndarray  # int64
    status: np.ndarray  # int8 StatusCode
    db_name: np.ndarray  # int32 code of the first present database_name_attributes value
    virtual_peer: np.ndarray  # int32 code of the first present virtual_node_peer_attributes value
    dims: np.ndarray  # int32 codes, (n, len(dimensions)): each dimension's value
    link_trace_hi: np.ndarray  # uint64, first span link's trace id (0 = no link)
    link_trace_lo: np.ndarray  # uint64
    link_span_id: np.ndarray  # uint64
    offset: np.ndarray  # int64

    DTYPES = {
        "trace_hi": np.uint64, "trace_lo": np.uint64, "span_id": np.uint64,
        "parent_span_id": np.uint64, "service": np.int32, "kind": np.int8,
        "start_ns": np.int64, "end_ns": np.int64, "status": np.int8,
        "db_name": np.int32, "virtual_peer": np.int32, "dims": np.int32,
        "link_trace_hi": np.uint64, "link_trace_lo": np.uint64, "link_span_id": np.uint64,
        "offset": np.int64,
    }

    # The columns holding StringTable codes (`dims` is two-dimensional).
    CODE_COLUMNS = ("service", "db_name", "virtual_peer", "dims")

    def __len__(self) -> int:
        return int(self.span_id.shape[0])

    def codes(self) -> np.ndarray:
        """Every string code the batch holds (for StringTable.compact)."""
        return np.concatenate([getattr(self, n).ravel() for n in self.CODE_COLUMNS])

    def remap_codes(self, remap: np.ndarray) -> None:
        """Follow a StringTable.compact."""
        for n in self.CODE_COLUMNS:
            setattr(self, n, remap[getattr(self, n)])

    @classmethod
    def column_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def empty(cls, dims: int = 0) -> SpanBatch:
        out = {n: np.empty(0, dtype=cls.DTYPES[n]) for n in cls.column_names()}
        out["dims"] = np.empty((0, dims), np.int32)
        return cls(**out)

    @classmethod
    def from_columns(cls, cols: dict[str, object]) -> SpanBatch:
        """Build from sequences/arrays; missing optional columns default to zeros (offset -1)."""
        n = len(cols["span_id"])  # type: ignore[arg-type]
        out = {}
        for name in cls.column_names():
            dt = cls.DTYPES[name]
            if name in cols:
                out[name] = np.asarray(cols[name], dtype=dt)
            elif name == "offset":
                out[name] = np.full(n, -1, dtype=dt)
            elif name == "dims":
                out[name] = np.zeros((n, 0), dtype=dt)
            else:
                out[name] = np.zeros(n, dtype=dt)
        if out["dims"].ndim != 2:
            out["dims"] = out["dims"].reshape(n, -1)
        return cls(**out)

    def take(self, index: np.ndarray) -> SpanBatch:
        """Rows selected by an integer index or boolean mask."""
        return SpanBatch(**{n: getattr(self, n)[index] for n in self.column_names()})

    def with_offset(self, offset: int) -> SpanBatch:
        self.offset = np.full(len(self), offset, dtype=np.int64)
        return self

    @staticmethod
    def concat(batches: list[SpanBatch]) -> SpanBatch:
        # Empty batches are left out: one made before the first span (SpanBatch.empty())
        # has no dims columns yet.
        full = [b for b in batches if len(b)]
        if not full:
            return batches[0] if batches else SpanBatch.empty()
        batches = full
        if len(batches) == 1:
            return batches[0]
        return SpanBatch(
            **{n: np.concatenate([getattr(b, n) for b in batches]) for n in SpanBatch.column_names()}
        )


def u64_pair_to_hex(hi: int, lo: int) -> str:
    return f"{int(hi):016x}{int(lo):016x}"
