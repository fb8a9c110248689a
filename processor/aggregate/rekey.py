"""The re-key protocol: records carry their origin, and origins announce their event-time progress.

Spans of records not keyed by trace id are sent to the re-key partition their trace hashes
to (compact span records, `processor.aggregate.rekey_codec`), where each re-key partition
interleaves what every input partition (origin) sent it. Two facts travel with them so the
re-key path is as exact as keyed input:

- each span carries the offset of its origin record, and each re-keyed record names its
  origin partition in a header: a replay of the origin after a crash or a rebalance
  re-sends the same spans, and the re-key partition skips spans of origin records it has
  already applied instead of counting them twice. What it has applied is a function of
  its own records only (per origin, the highest origin offset among the data records it
  read before a given offset), so it is stored with each offset commit of the re-key
  partition (`Origins.applied_before`) and a new owner resuming at that offset starts from
  it: a replay that lands after the re-key partition changed hands is skipped as well.
  Every commit has its row, so a row left by an earlier incarnation of the topics (same
  group, topics deleted and created again) never answers for a commit of this one;
- after each batch, and on every timer tick, each origin sends every re-key partition a
  progress marker (no value): the latest span end it has read and whether it is idle. A
  re-key partition's event time is capped at the slowest active origin's progress, so a
  backlog re-keyed one input partition after another does not look late, and pairs whose
  two spans come from different origins are not expired before both have arrived.

This is how stream processors carry watermarks through a shuffle (Flink's per-channel
watermarks, Dataflow's): an input's watermark is the minimum over its upstream channels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

ORIGIN_HEADER = "otel-insights-origin"  # "<input partition>/<last origin offset>/<re-key partition>"
PROGRESS_HEADER = "otel-insights-progress"  # "<input partition>/<span end, ns>/<idle 0|1>"
UNCHANGED_COMMIT_S = 60.0


class Origin(NamedTuple):
    partition: int
    offset: int
    part: int


class Progress(NamedTuple):
    partition: int
    end_ns: int
    idle: bool


class RekeyRecord(NamedTuple):
    """A record for the re-key topic: compact spans, or a progress marker, for one partition."""

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    partition: int


def origin_headers(origin: Origin) -> tuple[tuple[str, bytes], ...]:
    return ((ORIGIN_HEADER, f"{origin.partition}/{origin.offset}/{origin.part}".encode()),)


def progress_markers(progress: Progress, rekey_partitions: int) -> list[RekeyRecord]:
    """One marker per re-key partition: every one of them must hear every origin."""
    value = f"{progress.partition}/{progress.end_ns}/{int(progress.idle)}".encode()
    return [RekeyRecord(None, b"", ((PROGRESS_HEADER, value),), p) for p in range(rekey_partitions)]


def _three_ints(headers: Iterable[tuple[str, bytes]], name: str) -> tuple[int, int, int] | None:
    """The header's "a/b/c" value as integers; None when it is absent or malformed."""
    raw = next((v for k, v in headers if k == name), None)
    if raw is None:
        return None
    try:
        a, b, c = (int(x) for x in raw.split(b"/"))
    except ValueError:
        return None
    return a, b, c


def read_origin(headers: Sequence[tuple[str, bytes]]) -> Origin | None:
    got = _three_ints(headers, ORIGIN_HEADER)
    return None if got is None else Origin(*got)


def read_progress(headers: Sequence[tuple[str, bytes]]) -> Progress | None:
    got = _three_ints(headers, PROGRESS_HEADER)
    return None if got is None else Progress(got[0], got[1], bool(got[2]))


@dataclass
class OriginState:
    end_ns: int = 0
    idle: bool = False
    heard: bool = False
    applied: int = -1  # offset of the last origin record whose spans were applied


@dataclass
class Origins:
    """What one re-key partition knows of the input partitions feeding it."""

    partitions: int  # input partitions: each is an origin that must be heard
    states: dict[int, OriginState] = field(default_factory=dict)
    # The applied offsets as of re-key offset `settled_at`, and each change since, in the
    # order read: (re-key offset of the record, origin, applied after it).
    settled: dict[int, int] = field(default_factory=dict)
    settled_at: int = 0
    changes: list[tuple[int, int, int]] = field(default_factory=list)
    stored: bool = False  # `settled` is in the store (loaded from it, or saved)
    stored_at_s: float = float("-inf")  # when this owner last stored it (its clock)

    @classmethod
    def resumed(cls, partitions: int, offset: int, applied: dict[int, int] | None) -> Origins:
        """A new owner's state for a re-key partition it reads from ``offset``, given what
        was applied before it (`applied_before`, as stored with a commit at or before it;
        None: nothing was stored)."""
        origins = cls(partitions, settled=dict(applied or {}), settled_at=offset,
                      stored=applied is not None)
        for origin, through in origins.settled.items():
            origins._state(origin).applied = through
        return origins

    def _state(self, partition: int) -> OriginState:
        st = self.states.get(partition)
        if st is None:
            st = self.states[partition] = OriginState()
        return st

    def on_progress(self, mark: Progress) -> None:
        st = self._state(mark.partition)
        st.end_ns = max(st.end_ns, mark.end_ns)
        st.idle = mark.idle
        st.heard = True

    def new_spans(self, partition: int, origin_offsets: np.ndarray, offset: int) -> np.ndarray:
        """Which spans of a re-keyed record (at re-key ``offset``) are new (True), not a
        replay of an origin record this partition has applied already; the record's origin
        records count as applied.

        One origin's spans reach a re-key partition in origin order (one producer per input
        partition at a time, a new owner replaying from the committed offset), so "new" is
        "from an origin record after the last one applied".
        """
        st = self._state(partition)
        st.idle = False
        new = origin_offsets > st.applied
        if origin_offsets.size and int(origin_offsets.max()) > st.applied:
            st.applied = int(origin_offsets.max())
            self.changes.append((offset, partition, st.applied))
        return new

    def applied_before(self, offset: int) -> dict[int, int] | None:
        """What was applied from the records before re-key ``offset``: the state a new owner
        resuming there needs. None when it is no longer known (before the settled offset)."""
        if offset < self.settled_at:
            return None
        applied = dict(self.settled)
        for at, origin, through in self.changes:
            if at >= offset:
                break
            applied[origin] = through
        return applied

    def to_store(self, offset: int, now_s: float, hand_over: bool = False) -> dict[int, int] | None:
        """What to store with a commit of ``offset`` now: ``applied_before(offset)``; None
        when the commit should wait. Only progress markers since the last row (nothing
        applied changed) commit at most every UNCHANGED_COMMIT_S, unless the partition is
        handed over: markers cost little to replay, and a re-key partition fed only markers
        (keyed input) writes a row a minute, not one a second."""
        applied = self.applied_before(offset)
        if applied is None:
            return None
        unchanged = self.stored and applied == self.settled
        if unchanged and not hand_over and now_s - self.stored_at_s < UNCHANGED_COMMIT_S:
            return None
        return applied

    def settle(self, offset: int, now_s: float) -> None:
        """``applied_before(offset)`` is in the store: forget the changes it folds in."""
        applied = self.applied_before(offset)
        if applied is None:
            return
        self.settled, self.settled_at = applied, offset
        self.changes = [c for c in self.changes if c[0] >= offset]
        self.stored, self.stored_at_s = True, now_s

    def cap_ns(self) -> int | None:
        """The event time this re-key partition may go up to: the slowest active origin's
        progress; 0 (no progress) while an origin is unheard, at start or after a rebalance
        until every origin's next marker arrives; None (no cap) when every origin is idle."""
        if any(not self._state(p).heard for p in range(self.partitions)):
            return 0
        active = [st.end_ns for p, st in self.states.items() if p < self.partitions and not st.idle]
        return min(active) if active else None
