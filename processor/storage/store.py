"""Store: the typed facade the pipeline uses to write and read windows and watermarks.

Rows go in and come out as dicts keyed by column name, with window times as
integer epoch milliseconds (named queries return UTC datetimes instead, see
`queries`). All reads of partial and final tables use FINAL, so a replayed
partial or a re-emitted final window never shows twice.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from processor.storage import queries
from processor.storage.backends import Backend, epoch_ms_to_datetime
from processor.storage.catalogue import Context
from processor.storage.schema import (
    ANOMALY_COLUMNS,
    COLUMN_DEFAULTS,
    DASHBOARD_COLUMNS,
    EDGE_FINAL_COLUMNS,
    EDGE_PARTIAL_COLUMNS,
    FEEDBACK_COLUMNS,
    HEALTH_FINAL_COLUMNS,
    HEALTH_PARTIAL_COLUMNS,
    INSIGHT_COLUMNS,
    MODEL_COLUMNS,
    TIME_COLUMNS,
    check_database_name,
    migrate,
    render,
)
from processor.storage.window_store import EdgeWindow
from processor.windows.arith import END_OF_TIME_MS

# Keys per read statement: bounds the parameter size (a few hundred KB at most).
READ_CHUNK = 5_000

_HEALTH_PARTIAL_READ = """SELECT toUnixTimestamp64Milli(window_start) AS window_start_ms,
       toUnixTimestamp64Milli(window_end) AS window_end_ms,
       service, input_topic, input_partition, calls, errors,
       latency_keys, latency_counts, version
FROM {db}.service_health_partial FINAL
WHERE window_start >= fromUnixTimestamp64Milli({lo_ms:Int64}, 'UTC')
  AND window_start <= fromUnixTimestamp64Milli({hi_ms:Int64}, 'UTC')
  AND service IN {entities:Array(String)}
  AND (service, toUnixTimestamp64Milli(window_start)) IN {keys:Array(Tuple(String, Int64))}
ORDER BY service, window_start, input_topic, input_partition"""

# An edge key's dimensions travel as (names, values) arrays: its map's keys are sorted.
_EDGE_PARTIAL_READ = """SELECT toUnixTimestamp64Milli(window_start) AS window_start_ms,
       toUnixTimestamp64Milli(window_end) AS window_end_ms,
       client, server, connection_type, dimensions, input_topic, input_partition, requests, failed,
       server_keys, server_counts, client_keys, client_counts, version
FROM {db}.service_edges_partial FINAL
WHERE window_start >= fromUnixTimestamp64Milli({lo_ms:Int64}, 'UTC')
  AND window_start <= fromUnixTimestamp64Milli({hi_ms:Int64}, 'UTC')
  AND client IN {entities:Array(String)}
  AND (client, server, connection_type, mapKeys(dimensions), mapValues(dimensions),
       toUnixTimestamp64Milli(window_start))
      IN {keys:Array(Tuple(String, String, String, Array(String), Array(String), Int64))}
ORDER BY client, server, connection_type, dimensions, window_start, input_topic, input_partition"""

# Per closed window of one input partition: the offset below which its contributions are
# stored (see schema migration 6). FINAL: a re-emitted base row replaces an earlier one.
_APPLIED_READ = """SELECT toUnixTimestamp64Milli(window_start) AS window_start_ms,
       max(applied_through) AS applied_through
FROM {db}.{table} FINAL
WHERE input_topic = {topic:String} AND input_partition = {partition:UInt16}
  AND window_start >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')
  AND window_start < fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')
GROUP BY window_start"""

_WATERMARKS_READ = """SELECT partition, watermark_ms
FROM {db}.pipeline_watermarks FINAL
WHERE group_id = {group_id:String} AND topic = {topic:String}
ORDER BY partition"""

_ORIGINS_READ = """SELECT offset, origins, applied
FROM {db}.rekey_origins FINAL
WHERE group_id = {group_id:String} AND topic = {topic:String}
  AND partition = {partition:UInt16} AND offset <= {offset:Int64}
ORDER BY offset DESC
LIMIT 1"""

_RECENT_P95 = """SELECT service, toUnixTimestamp64Milli(window_start) AS window_start_ms, p95_ms
FROM {db}.service_health FINAL
WHERE window_start < fromUnixTimestamp64Milli({before_ms:Int64}, 'UTC')
  AND ({all_services:Bool} OR service IN {services:Array(String)})
  AND (NOT {skip_insufficient:Bool} OR health != 'insufficient_data')
ORDER BY service, window_start DESC
LIMIT {windows:UInt32} BY service"""


_FINAL_HEALTH = """SELECT toUnixTimestamp64Milli(window_start) AS window_start_ms,
       toUnixTimestamp64Milli(window_end) AS window_end_ms, service, calls, errors, error_rate,
       p50_ms, p95_ms, p99_ms, health
FROM {db}.service_health FINAL
WHERE window_start >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')
  AND window_start < fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')
ORDER BY window_start, service"""

_FINAL_EDGES = """SELECT toUnixTimestamp64Milli(window_start) AS window_start_ms,
       toUnixTimestamp64Milli(window_end) AS window_end_ms, client, server, connection_type,
       dimensions, requests, failed, error_rate, server_p50_ms, server_p95_ms, server_p99_ms,
       client_p50_ms, client_p95_ms, client_p99_ms
FROM {db}.service_edges FINAL
WHERE window_start >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')
  AND window_start < fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')
ORDER BY window_start, client, server, connection_type, dimensions"""

# Window starts only: no FINAL needed, a replaced row has the same start.
_FINAL_WINDOW_STARTS = """SELECT DISTINCT ws FROM (
    SELECT toUnixTimestamp64Milli(window_start) AS ws FROM {db}.service_health
    WHERE window_start > fromUnixTimestamp64Milli({after_ms:Int64}, 'UTC')
      AND window_start < fromUnixTimestamp64Milli({before_ms:Int64}, 'UTC')
    UNION ALL
    SELECT toUnixTimestamp64Milli(window_start) AS ws FROM {db}.service_edges
    WHERE window_start > fromUnixTimestamp64Milli({after_ms:Int64}, 'UTC')
      AND window_start < fromUnixTimestamp64Milli({before_ms:Int64}, 'UTC')
)
ORDER BY ws"""

_LATEST_MODELS = """SELECT kind, entity_type, entity, format_version,
       toUnixTimestamp64Milli(trained_at) AS trained_at_ms, windows, model
FROM {db}.anomaly_models
WHERE kind = {kind:String}
ORDER BY kind, entity_type, entity, trained_at DESC
LIMIT 1 BY kind, entity_type, entity"""

_ANOMALOUS_WINDOWS = """SELECT DISTINCT toUnixTimestamp64Milli(window_start) AS ws, entity_type, entity
FROM {db}.anomalies
WHERE window_start >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')
  AND window_start < fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')"""

_INCIDENT_ANOMALIES = """SELECT toUnixTimestamp64Milli(window_start) AS window_start_ms,
       toUnixTimestamp64Milli(window_end) AS window_end_ms, entity_type, entity, incident_id,
       metric, observed, expected, score, severity, detectors, factors
FROM {db}.anomalies FINAL
WHERE window_start >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')
  AND ({all:Bool} OR incident_id IN {incidents:Array(String)})
ORDER BY incident_id, window_start, entity_type, entity"""

_INSIGHTS_READ = """SELECT insight_id, incident_id, version, status, published, facts_key,
       toUnixTimestamp64Milli(window_start) AS window_start_ms,
       toUnixTimestamp64Milli(last_window) AS last_window_ms,
       toUnixTimestamp64Milli(updated_at) AS updated_at_ms, message
FROM {db}.insights FINAL
WHERE window_start >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')
ORDER BY insight_id"""

_FIRST_FINAL_WINDOW = """SELECT min(ws) AS first_ms, count() AS n FROM (
    SELECT toUnixTimestamp64Milli(min(window_start)) AS ws FROM {db}.service_health
    WHERE window_start >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')
    HAVING count() > 0
    UNION ALL
    SELECT toUnixTimestamp64Milli(min(window_start)) AS ws FROM {db}.service_edges
    WHERE window_start >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')
    HAVING count() > 0
)"""



def _row_values(columns: list[str], row: dict[str, Any]) -> list[Any]:
    if any(c not in row for c in COLUMN_DEFAULTS):
        row = {**COLUMN_DEFAULTS, **row}
    try:
        values = [row[c] for c in columns]
    except KeyError as exc:
        raise ValueError(f"row is missing column {exc.args[0]!r}; columns: {columns}") from None
    out = []
    for column, value in zip(columns, values, strict=True):
        if column in TIME_COLUMNS:
            value = epoch_ms_to_datetime(value)
        elif hasattr(value, "tolist"):  # numpy arrays and scalars from the window code
            value = value.tolist()
        out.append(value)
    return out


def _ms_keys(row: dict[str, Any]) -> dict[str, Any]:
    """Rename the *_ms read aliases back to the column names callers inserted."""
    row["window_start"] = row.pop("window_start_ms")
    row["window_end"] = row.pop("window_end_ms")
    return row


_FALSE_ALARMS = """SELECT toUnixTimestamp64Milli(window_start) AS first_ms, toUnixTimestamp64Milli(last_window) AS last_ms,
       entities
FROM {db}.feedback FINAL
WHERE verdict = 'false_alarm'
  AND last_window >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')
  AND window_start < fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')"""

_UNPUBLISHED_DASHBOARDS = """SELECT spec FROM {db}.dashboards FINAL
WHERE updated_at >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC') AND published = 0
ORDER BY updated_at"""


class Store:
    """Window partials, final windows and watermarks in one ClickHouse database."""

    def __init__(self, backend: Backend, database: str, context: Context | None = None) -> None:
        """``context``: what catalogue queries need of the configuration (window size, health)."""
        self.backend = backend
        self.database = check_database_name(database)
        self.context = replace(context or Context(), database=self.database)
        self._version_lock = threading.Lock()
        self._last_version_ms = 0

    def _sql(self, template: str) -> str:
        return render(template, db=self.database)

    def _table(self, name: str) -> str:
        return f"{self.database}.{name}"

    def migrate(self, ttl_seconds: int, cluster_name: str = "") -> list[int]:
        """Apply pending schema migrations (see `schema.migrate`)."""
        return migrate(self.backend, self.database, ttl_seconds, cluster_name)

    # ------------------------------------------------------------------ writes

    def _insert(self, table: str, columns: list[str], rows: Iterable[dict[str, Any]]) -> None:
        values = [_row_values(columns, r) for r in rows]
        if values:
            self.backend.insert(self._table(table), columns, values)

    def insert_health_partials(self, rows: Sequence[dict[str, Any]]) -> None:
        """Partials keyed by (service, window, input partition); a replay replaces."""
        self._insert("service_health_partial", HEALTH_PARTIAL_COLUMNS, rows)

    def insert_edge_partials(self, rows: Sequence[dict[str, Any]]) -> None:
        """Partials keyed by (edge, window, input partition); a replay replaces."""
        self._insert("service_edges_partial", EDGE_PARTIAL_COLUMNS, rows)

    def insert_health_final(self, rows: Sequence[dict[str, Any]]) -> None:
        """Final per-service windows; the highest version per (service, window) wins."""
        self._insert("service_health", HEALTH_FINAL_COLUMNS, rows)

    def insert_edges_final(self, rows: Sequence[dict[str, Any]]) -> None:
        """Final per-edge windows; the highest version per (edge, window) wins."""
        self._insert("service_edges", EDGE_FINAL_COLUMNS, rows)

    def insert_anomalies(self, rows: Sequence[dict[str, Any]]) -> None:
        """One row per anomalous entity window (factors as a JSON string)."""
        self._insert("anomalies", ANOMALY_COLUMNS, rows)

    def insert_insights(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insight versions (`INSIGHT_COLUMNS`); the newest version of an insight wins, and a
        version marked published replaces the same version unmarked."""
        self._insert("insights", INSIGHT_COLUMNS, rows)

    def insert_dashboards(self, rows: Sequence[dict[str, Any]]) -> None:
        """Dashboard spec versions (`DASHBOARD_COLUMNS`); the newest version of a dashboard
        wins, and a version marked published replaces the same version unmarked."""
        self._insert("dashboards", DASHBOARD_COLUMNS, rows)

    def insert_feedback(self, rows: Sequence[dict[str, Any]]) -> None:
        """Feedback on insights (`FEEDBACK_COLUMNS`); a user's newest verdict on an insight wins."""
        self._insert("feedback", FEEDBACK_COLUMNS, rows)

    def false_alarm_windows(self, since_ms: int, until_ms: int, window_ms: int) -> dict[int, set[tuple[str, str]]]:
        """window start (ms) -> the (entity_type, entity) pairs of incidents someone called a
        false alarm, over each incident's windows (their newest verdict per user counts)."""
        out: dict[int, set[tuple[str, str]]] = {}
        for r in self.backend.query(self._sql(_FALSE_ALARMS), {"since_ms": int(since_ms), "until_ms": int(until_ms)}):
            pairs = {tuple(e.split(":", 1)) for e in r["entities"] if ":" in e}
            first = max(int(r["first_ms"]), since_ms - since_ms % window_ms)
            for ws in range(first, min(int(r["last_ms"]), until_ms - 1) + 1, window_ms):
                out.setdefault(ws, set()).update(pairs)  # type: ignore[arg-type]
        return out

    def unpublished_dashboards(self, since_ms: int) -> list[dict[str, Any]]:
        """Dashboard versions stored but not marked published, updated at or after since_ms
        (a stop between storing and marking): their specs, for the publisher to settle."""
        rows = self.backend.query(self._sql(_UNPUBLISHED_DASHBOARDS), {"since_ms": int(since_ms)})
        return [json.loads(r["spec"]) for r in rows]

    def latest_insights(self, since_ms: int) -> list[dict[str, Any]]:
        """The newest stored version of every insight whose incident began at or after since_ms
        (times as *_ms epoch milliseconds, ``message`` the published JSON)."""
        return self.backend.query(self._sql(_INSIGHTS_READ), {"since_ms": int(since_ms)})

    def incident_anomalies(self, incident_ids: Sequence[str] | None, since_ms: int) -> list[dict[str, Any]]:
        """Anomaly rows of the given incidents (all incidents when None) from windows starting
        at or after since_ms, with window times in epoch ms and ``attribution`` parsed."""
        params = {"since_ms": int(since_ms), "all": incident_ids is None, "incidents": list(incident_ids or [])}
        out = []
        for r in self.backend.query(self._sql(_INCIDENT_ANOMALIES), params):
            row = _ms_keys(r)
            try:
                extra = json.loads(row.pop("factors") or "{}")
            except ValueError:
                extra = {}
            row["factors"] = list(extra.get("factors") or [])
            row["attribution"] = list(extra.get("attribution") or [])
            out.append(row)
        return out

    def insert_models(self, rows: Sequence[dict[str, Any]]) -> None:
        """Trained detector models (`MODEL_COLUMNS`; ``model`` is text, e.g. base64 of the bytes)."""
        self._insert("anomaly_models", MODEL_COLUMNS, rows)

    def latest_models(self, kind: str) -> list[dict[str, Any]]:
        """The newest stored model of ``kind`` per entity (``trained_at_ms`` in epoch ms)."""
        return self.backend.query(self._sql(_LATEST_MODELS), {"kind": kind})

    def window_final_rows(self, window_start_ms: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """All final health and edge rows of one window."""
        return self.final_rows_between(window_start_ms, window_start_ms + 1)

    def final_rows_between(self, since_ms: int, until_ms: int = END_OF_TIME_MS
                           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Final health and edge rows with since_ms <= window_start < until_ms, oldest first."""
        params = {"since_ms": int(since_ms), "until_ms": int(until_ms)}
        health = self.backend.query(self._sql(_FINAL_HEALTH), params)
        edges = self.backend.query(self._sql(_FINAL_EDGES), params)
        return [_ms_keys(r) for r in health], [_ms_keys(r) for r in edges]

    def anomalous_windows(self, since_ms: int, until_ms: int) -> dict[int, set[tuple[str, str]]]:
        """window start (ms) -> the (entity_type, entity) pairs flagged in it."""
        out: dict[int, set[tuple[str, str]]] = {}
        for r in self.backend.query(self._sql(_ANOMALOUS_WINDOWS), {"since_ms": int(since_ms),
                                                                    "until_ms": int(until_ms)}):
            out.setdefault(int(r["ws"]), set()).add((str(r["entity_type"]), str(r["entity"])))
        return out

    def first_final_window(self, since_ms: int) -> int | None:
        """Start (epoch ms) of the oldest stored final window at or after since_ms; None if none."""
        rows = self.backend.query(self._sql(_FIRST_FINAL_WINDOW), {"since_ms": int(since_ms)})
        return int(rows[0]["first_ms"]) if rows and int(rows[0]["n"]) else None

    def final_window_starts(self, after_ms: int, before_ms: int) -> list[int]:
        """Starts (epoch ms) of the windows with final rows, after_ms < start < before_ms, ascending."""
        rows = self.backend.query(self._sql(_FINAL_WINDOW_STARTS),
                                  {"after_ms": int(after_ms), "before_ms": int(before_ms)})
        return [int(r["ws"]) for r in rows]

    # ------------------------------------------------------------------ partial reads

    def _read_keys(
        self, template: str, keys: list[tuple[Any, ...]], entity_of: int = 0
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        unique = sorted(set(keys))
        for i in range(0, len(unique), READ_CHUNK):
            chunk = unique[i : i + READ_CHUNK]
            # The window_start range and the leading entity list let ClickHouse
            # prune partitions and primary-key ranges before the exact tuple match.
            starts = [int(k[-1]) for k in chunk]
            params = {
                "lo_ms": min(starts),
                "hi_ms": max(starts),
                "entities": sorted({str(k[entity_of]) for k in chunk}),
                # Nested tuples (an edge's dimension names and values) are arrays in SQL.
                "keys": [(*(list(x) if isinstance(x, tuple) else x for x in k[:-1]), int(k[-1]))
                         for k in chunk],
            }
            out.extend(_ms_keys(r) for r in self.backend.query(self._sql(template), params))
        return out

    def read_health_partials(self, windows: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
        """Latest partial rows for the given (service, window_start_ms) keys."""
        return self._read_keys(_HEALTH_PARTIAL_READ, [tuple(w) for w in windows])

    def read_edge_partials(self, windows: Sequence[EdgeWindow]) -> list[dict[str, Any]]:
        """Latest partial rows for (client, server, connection_type, window_start_ms[,
        dimensions]) keys (an EdgeKey is one)."""
        keys = []
        for w in windows:
            dims = w[4] if len(w) > 4 else ()  # type: ignore[misc]
            keys.append((w[0], w[1], w[2], tuple(n for n, _ in dims), tuple(v for _, v in dims), w[3]))
        return self._read_keys(_EDGE_PARTIAL_READ, keys)

    def load_applied(self, topic: str, partition: int, since_ms: int, until_ms: int
                     ) -> dict[int, tuple[int, int]]:
        """Per window start (epoch ms) in [since_ms, until_ms) with partials of one input
        partition: (health, edge) offsets below which its contributions are stored."""
        params = {"topic": topic, "partition": int(partition), "since_ms": int(since_ms),
                  "until_ms": int(until_ms)}
        out: dict[int, list[int]] = {}
        for side, table in enumerate(("service_health_partial", "service_edges_partial")):
            sql = self._sql(_APPLIED_READ.replace("{table}", table))
            for r in self.backend.query(sql, params):
                out.setdefault(int(r["window_start_ms"]), [0, 0])[side] = int(r["applied_through"])
        return {ws: (h, e) for ws, (h, e) in sorted(out.items())}

    # ------------------------------------------------------------------ watermarks

    def _next_version_ms(self) -> int:
        # Strictly increasing within this process, so two saves in one millisecond
        # still order correctly in ReplacingMergeTree(updated_ms).
        with self._version_lock:
            self._last_version_ms = max(time.time_ns() // 1_000_000, self._last_version_ms + 1)
            return self._last_version_ms

    def save_watermarks(self, group_id: str, topic: str, watermarks: dict[int, int]) -> None:
        """Record the per-partition watermark (epoch ms) of a consumer group on a topic."""
        if not watermarks:
            return
        version = self._next_version_ms()
        rows = [[group_id, topic, int(p), int(wm), version] for p, wm in watermarks.items()]
        self.backend.insert(
            self._table("pipeline_watermarks"),
            ["group_id", "topic", "partition", "watermark_ms", "updated_ms"],
            rows,
        )

    def load_watermarks(self, group_id: str, topic: str) -> dict[int, int]:
        """Latest saved watermark per partition; empty when none were saved."""
        rows = self.backend.query(
            self._sql(_WATERMARKS_READ), {"group_id": group_id, "topic": topic}
        )
        return {int(r["partition"]): int(r["watermark_ms"]) for r in rows}

    def save_origins(self, group_id: str, topic: str,
                     applied: dict[int, tuple[int, dict[int, int]]]) -> None:
        """Record, per re-key partition, what it applied of each origin before an offset
        about to be committed: {partition: (offset, {origin: origin offset})}."""
        if not applied:
            return
        at = epoch_ms_to_datetime(self._next_version_ms())
        rows = [[group_id, topic, int(p), int(offset), [int(o) for o in by_origin],
                 [int(v) for v in by_origin.values()], at]
                for p, (offset, by_origin) in applied.items()]
        self.backend.insert(
            self._table("rekey_origins"),
            ["group_id", "topic", "partition", "offset", "origins", "applied", "saved_at"],
            rows,
        )

    def load_origins(self, group_id: str, topic: str, partition: int, offset: int
                     ) -> tuple[int, dict[int, int]] | None:
        """For a re-key partition resuming at ``offset``: the last row stored at or before
        it, as (its offset, {origin: origin offset}); None if there is none."""
        rows = self.backend.query(
            self._sql(_ORIGINS_READ),
            {"group_id": group_id, "topic": topic, "partition": partition, "offset": offset},
        )
        if not rows:
            return None
        r = rows[0]
        return int(r["offset"]), {int(o): int(v) for o, v in zip(r["origins"], r["applied"], strict=True)}

    # ------------------------------------------------------------------ baselines

    def recent_health_p95(
        self,
        service_names: Sequence[str] | None,
        before_ms: int,
        windows: int,
        skip_insufficient: bool = True,
    ) -> dict[str, list[float]]:
        """Last `windows` final p95 values per service before `before_ms`, oldest first.

        Windows marked insufficient_data are skipped by default: their p95 rests on
        too few calls to serve as a baseline.
        """
        if windows <= 0 or (service_names is not None and not service_names):
            return {}
        params = {
            "before_ms": int(before_ms),
            "all_services": service_names is None,
            "services": list(service_names or []),
            "skip_insufficient": skip_insufficient,
            "windows": int(windows),
        }
        out: dict[str, list[float]] = {}
        for r in self.backend.query(self._sql(_RECENT_P95), params):
            out.setdefault(r["service"], []).append(float(r["p95_ms"]))
        for values in out.values():
            values.reverse()  # the query reads newest first for LIMIT BY
        return out

    # ------------------------------------------------------------------ named queries

    def named_query(self, name: str, since_ms: int, **params: Any) -> list[dict[str, Any]]:
        """Run a catalogue query by name (windows starting at or after since_ms)."""
        return self.catalogue(name, {"since_ms": since_ms, **params})

    def catalogue(self, name: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run catalogue query ``name``; a bad parameter is a ParamError."""
        return queries.run_named(self.backend, self.context, name, params)

    def catalogue_columns(self, name: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """What catalogue query ``name`` returns with ``params``, run with LIMIT 0."""
        return queries.result_columns(self.backend, self.context, name, params)

    def health(self, since_ms: int, **params: Any) -> list[dict[str, Any]]:
        """Final service health windows starting at or after since_ms."""
        return self.named_query("health", since_ms, **params)

    def edges(self, since_ms: int, **params: Any) -> list[dict[str, Any]]:
        """Final edge windows starting at or after since_ms."""
        return self.named_query("edges", since_ms, **params)

    def topology(self, since_ms: int, **params: Any) -> list[dict[str, Any]]:
        """Per-edge totals since since_ms with latency merged from the stored sketches."""
        return self.named_query("topology", since_ms, **params)

    def close(self) -> None:
        self.backend.close()
