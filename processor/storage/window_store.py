"""WindowStore: what stages 1 and 2 read and write, and MemoryStore, its in-process implementation.

`Store` (ClickHouse through chdb or HTTP) is the production implementation; `MemoryStore`
keeps the same rows in dicts with the same replacing semantics (the highest version of a
key wins, as ReplacingMergeTree with FINAL reads) and the same columns in and out, so the
Kafka-free runner and its tests run the stages without a database, and the golden tests
hold both to the same output.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from processor.aggregate.messages import Dimensions, dimensions_key
from processor.storage.schema import (
    COLUMN_DEFAULTS,
    EDGE_FINAL_COLUMNS,
    EDGE_FINAL_READ_COLUMNS,
    EDGE_PARTIAL_COLUMNS,
    HEALTH_FINAL_COLUMNS,
    HEALTH_FINAL_READ_COLUMNS,
    HEALTH_PARTIAL_COLUMNS,
)
from processor.windows.arith import END_OF_TIME_MS

Row = dict[str, Any]
# Runs a store call: on the worker's ClickHouse thread with retries, or in place (the runner).
IoCall = Callable[..., Awaitable[Any]]
HealthWindow = tuple[str, int]  # (service, window_start_ms)
# (client, server, connection_type, window_start_ms[, dimensions]): an EdgeKey is one.
EdgeWindow = tuple[Any, ...]
EdgeFinalKey = tuple[str, str, str, Dimensions, int]  # window start last, as the other keys


class WindowStore(Protocol):
    """Partial and final window rows and the per-partition watermarks (times as epoch ms)."""

    def insert_health_partials(self, rows: Sequence[Row]) -> None: ...
    def insert_edge_partials(self, rows: Sequence[Row]) -> None: ...
    def read_health_partials(self, windows: Sequence[HealthWindow]) -> list[Row]: ...
    def read_edge_partials(self, windows: Sequence[EdgeWindow]) -> list[Row]: ...
    def load_applied(self, topic: str, partition: int, since_ms: int, until_ms: int
                     ) -> dict[int, tuple[int, int]]: ...
    def insert_health_final(self, rows: Sequence[Row]) -> None: ...
    def insert_edges_final(self, rows: Sequence[Row]) -> None: ...
    def save_watermarks(self, group_id: str, topic: str, watermarks: dict[int, int]) -> None: ...
    def load_watermarks(self, group_id: str, topic: str) -> dict[int, int]: ...
    def save_origins(self, group_id: str, topic: str,
                     applied: dict[int, tuple[int, dict[int, int]]]) -> None: ...
    def load_origins(self, group_id: str, topic: str, partition: int, offset: int
                     ) -> tuple[int, dict[int, int]] | None: ...

    def recent_health_p95(self, service_names: Sequence[str] | None, before_ms: int, windows: int,
                          skip_insufficient: bool = True) -> dict[str, list[float]]: ...

    def final_rows_between(self, since_ms: int, until_ms: int = END_OF_TIME_MS) -> tuple[list[Row], list[Row]]:
        """Final health and edge rows with since_ms <= window_start < until_ms, oldest first."""
        ...


def _replace(table: dict[tuple[Any, ...], Row], key: tuple[Any, ...], row: Row,
             columns: list[str]) -> None:
    """Keep the row with the highest version; a tie goes to the later insert (as ClickHouse).
    Only the table's columns are kept, as an insert does."""
    old = table.get(key)
    if old is None or row["version"] >= old["version"]:
        table[key] = {c: row[c] if c in row else COLUMN_DEFAULTS[c] for c in columns}


class MemoryStore:
    """A WindowStore in dicts: for the Kafka-free runner and tests, not for production."""

    def __init__(self) -> None:
        self.health_partials: dict[tuple[Any, ...], Row] = {}
        self.edge_partials: dict[tuple[Any, ...], Row] = {}
        self.health_final: dict[HealthWindow, Row] = {}
        self.edges_final: dict[EdgeFinalKey, Row] = {}
        self.watermarks: dict[tuple[str, str, int], int] = {}
        self.origins: dict[tuple[str, str, int, int], dict[int, int]] = {}

    def insert_health_partials(self, rows: Sequence[Row]) -> None:
        for r in rows:
            key = (r["service"], r["window_start"], r["input_topic"], r["input_partition"],
                   r["correction"])
            _replace(self.health_partials, key, r, HEALTH_PARTIAL_COLUMNS)

    def insert_edge_partials(self, rows: Sequence[Row]) -> None:
        for r in rows:
            key = (r["client"], r["server"], r["connection_type"], r["window_start"],
                   dimensions_key(r.get("dimensions")), r["input_topic"], r["input_partition"],
                   r["correction"])
            _replace(self.edge_partials, key, r, EDGE_PARTIAL_COLUMNS)

    def read_health_partials(self, windows: Sequence[HealthWindow]) -> list[Row]:
        wanted = {tuple(w) for w in windows}
        return [dict(r) for k, r in sorted(self.health_partials.items()) if k[:2] in wanted]

    def read_edge_partials(self, windows: Sequence[EdgeWindow]) -> list[Row]:
        wanted = {(*w[:4], w[4] if len(w) > 4 else ()) for w in windows}
        return [dict(r) for k, r in sorted(self.edge_partials.items()) if k[:5] in wanted]

    def load_applied(self, topic: str, partition: int, since_ms: int, until_ms: int
                     ) -> dict[int, tuple[int, int]]:
        out: dict[int, list[int]] = {}
        for side, table in enumerate((self.health_partials, self.edge_partials)):
            for r in table.values():
                ws = int(r["window_start"])
                if (r["input_topic"], r["input_partition"]) == (topic, partition) and since_ms <= ws < until_ms:
                    got = out.setdefault(ws, [0, 0])
                    got[side] = max(got[side], int(r["applied_through"]))
        return {ws: (h, e) for ws, (h, e) in sorted(out.items())}

    def insert_health_final(self, rows: Sequence[Row]) -> None:
        for r in rows:
            _replace(self.health_final, (r["service"], r["window_start"]), r,  # type: ignore[arg-type]
                     HEALTH_FINAL_COLUMNS)

    def insert_edges_final(self, rows: Sequence[Row]) -> None:
        for r in rows:
            key = (r["client"], r["server"], r["connection_type"],
                   dimensions_key(r.get("dimensions")), r["window_start"])
            _replace(self.edges_final, key, r, EDGE_FINAL_COLUMNS)  # type: ignore[arg-type]

    def save_watermarks(self, group_id: str, topic: str, watermarks: dict[int, int]) -> None:
        for partition, wm in watermarks.items():
            self.watermarks[(group_id, topic, int(partition))] = int(wm)

    def load_watermarks(self, group_id: str, topic: str) -> dict[int, int]:
        return {p: wm for (g, t, p), wm in sorted(self.watermarks.items()) if (g, t) == (group_id, topic)}

    def save_origins(self, group_id: str, topic: str,
                     applied: dict[int, tuple[int, dict[int, int]]]) -> None:
        for partition, (offset, by_origin) in applied.items():
            self.origins[(group_id, topic, int(partition), int(offset))] = dict(by_origin)

    def load_origins(self, group_id: str, topic: str, partition: int, offset: int
                     ) -> tuple[int, dict[int, int]] | None:
        at = [o for (g, t, p, o) in self.origins if (g, t, p) == (group_id, topic, partition) and o <= offset]
        return None if not at else (max(at), dict(self.origins[(group_id, topic, partition, max(at))]))

    def final_rows_between(self, since_ms: int, until_ms: int = END_OF_TIME_MS) -> tuple[list[Row], list[Row]]:
        def rows(table: dict[Any, Row], columns: list[str]) -> list[Row]:
            keys = sorted((k for k in table if since_ms <= k[-1] < until_ms), key=lambda k: (k[-1], *k[:-1]))
            return [{c: table[k][c] for c in columns} for k in keys]

        return (rows(self.health_final, HEALTH_FINAL_READ_COLUMNS),
                rows(self.edges_final, EDGE_FINAL_READ_COLUMNS))

    def recent_health_p95(self, service_names: Sequence[str] | None, before_ms: int, windows: int,
                          skip_insufficient: bool = True) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for (service, ws), r in sorted(self.health_final.items()):
            if ws >= before_ms or (service_names is not None and service not in service_names):
                continue
            if skip_insufficient and r["health"] == "insufficient_data":
                continue
            out.setdefault(service, []).append(float(r["p95_ms"]))
        return {s: v[-windows:] for s, v in out.items() if windows > 0}
