"""Turning generated traces into Kafka records (key = trace id hex) and pacing them in real time."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Iterator

from processor.generate.shop import GeneratedTrace
from processor.otlp.registry import get_codec


def to_records(traces: Iterable[GeneratedTrace], encoding: str = "otlp_proto") -> list[tuple[bytes, bytes]]:
    """(key, value) per trace: key = 32-char lowercase hex trace id, like the collector's
    kafka exporter with partition_traces_by_id; value = the TracesData in `encoding`."""
    encode = get_codec(encoding).encode
    return [(t.trace_id.hex().encode(), encode(t.data)) for t in traces]


def paced(traces: Iterable[GeneratedTrace], speed: float = 1.0, *, origin_ns: int | None = None,
          now_ns: Callable[[], int] = time.time_ns,
          sleep: Callable[[float], None] = time.sleep) -> Iterator[GeneratedTrace]:
    """Yield traces in end-time order, each once wall time reaches its end (as an SDK would
    export it), with event time `origin_ns` (default: the first trace's start) mapped to the
    wall time of the first iteration and `speed` event seconds per wall second.

    Input must be in start order (as ShopGenerator.traces yields): a trace is held until
    no later-starting trace can end before it.
    """
    if speed <= 0:
        raise ValueError(f"speed {speed}: must be > 0")
    heap: list[tuple[int, int, GeneratedTrace]] = []
    wall0 = event0 = 0
    seq = 0
    for tr in traces:
        if seq == 0:
            wall0 = now_ns()
            event0 = tr.start_ns if origin_ns is None else origin_ns
        heapq.heappush(heap, (tr.end_ns, seq, tr))
        seq += 1
        # Every later trace starts at or after tr.start_ns, hence ends no earlier.
        while heap and heap[0][0] <= tr.start_ns:
            yield _wait(heapq.heappop(heap)[2], wall0, event0, speed, now_ns, sleep)
    while heap:
        yield _wait(heapq.heappop(heap)[2], wall0, event0, speed, now_ns, sleep)


def _wait(tr: GeneratedTrace, wall0: int, event0: int, speed: float,
          now_ns: Callable[[], int], sleep: Callable[[float], None]) -> GeneratedTrace:
    due = wall0 + (tr.end_ns - event0) / speed
    delay_s = (due - now_ns()) / 1e9
    if delay_s > 0:
        sleep(delay_s)
    return tr
