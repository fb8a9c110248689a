"""Versioned, idempotent ClickHouse DDL: table definitions, column lists and `migrate()`.

Conventions follow the OpenTelemetry ClickHouse exporter: LowCardinality names,
daily partitions on the window start, a TTL that drops whole parts, Delta+ZSTD on
times and ZSTD on sketch arrays. Rows that must never double count live in
ReplacingMergeTree tables keyed by their identity, with a version column; reads
use FINAL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from processor.errors import ConfigError
from processor.storage.backends import Backend

# Column order used by Store inserts; keys of the row dicts callers pass.
HEALTH_PARTIAL_COLUMNS = [
    "window_start", "window_end", "service", "input_topic", "input_partition",
    "calls", "errors", "latency_keys", "latency_counts", "applied_through", "correction",
    "version",
]  # fmt: skip
EDGE_PARTIAL_COLUMNS = [
    "window_start", "window_end", "client", "server", "connection_type", "dimensions",
    "input_topic", "input_partition", "requests", "failed",
    "server_keys", "server_counts", "client_keys", "client_counts", "applied_through",
    "correction", "version",
]  # fmt: skip
HEALTH_FINAL_COLUMNS = [
    "window_start", "window_end", "service", "calls", "errors", "error_rate",
    "p50_ms", "p95_ms", "p99_ms", "health", "latency_keys", "latency_counts",
    "partitions", "version",
]  # fmt: skip
EDGE_FINAL_COLUMNS = [
    "window_start", "window_end", "client", "server", "connection_type", "dimensions",
    "requests", "failed", "error_rate",
    "server_p50_ms", "server_p95_ms", "server_p99_ms",
    "client_p50_ms", "client_p95_ms", "client_p99_ms",
    "server_keys", "server_counts", "client_keys", "client_counts", "version",
]  # fmt: skip
# What Store.final_rows_between reads back (no sketches, versions or partition counts).
HEALTH_FINAL_READ_COLUMNS = [
    "window_start", "window_end", "service", "calls", "errors", "error_rate",
    "p50_ms", "p95_ms", "p99_ms", "health",
]  # fmt: skip
EDGE_FINAL_READ_COLUMNS = [
    "window_start", "window_end", "client", "server", "connection_type", "dimensions",
    "requests", "failed",
    "error_rate", "server_p50_ms", "server_p95_ms", "server_p99_ms",
    "client_p50_ms", "client_p95_ms", "client_p99_ms",
]  # fmt: skip
ANOMALY_COLUMNS = [
    "detected_at", "window_start", "window_end", "entity_type", "entity", "incident_id",
    "metric", "observed", "expected", "score", "severity", "detectors", "factors",
]  # fmt: skip
INSIGHT_COLUMNS = [
    "insight_id", "incident_id", "version", "status", "severity", "window_start", "last_window",
    "updated_at", "narrator", "grounded", "published", "facts_key", "message",
]  # fmt: skip
DASHBOARD_COLUMNS = [
    "dashboard_id", "version", "kind", "title", "audience", "incident_id", "service", "generator",
    "updated_at", "published", "spec",
]  # fmt: skip
FEEDBACK_COLUMNS = [
    "insight_id", "incident_id", "verdict", "user", "comment", "at", "window_start", "last_window", "entities",
]  # fmt: skip
MODEL_COLUMNS = [
    "kind", "entity_type", "entity", "format_version", "trained_at", "trained_from",
    "trained_until", "windows", "model",
]  # fmt: skip
# Columns a row may leave out: an edge row without dimension labels (rows built before
# dimensions existed, by callers that never set any) is the edge with none.
COLUMN_DEFAULTS: dict[str, Any] = {"dimensions": {}}
TIME_COLUMNS = frozenset({"window_start", "window_end", "detected_at", "trained_at", "trained_from",
                          "trained_until", "last_window", "updated_at", "at"})

_WINDOW = """
    window_start DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    window_end DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),"""
_SKETCH = "Array(Int32) CODEC(ZSTD(1))", "Array(UInt64) CODEC(ZSTD(1))"
_PARTITION = "PARTITION BY toDate(window_start)"


@dataclass(frozen=True)
class Migration:
    """One schema step; statements may use {db}, {on_cluster} and {ttl_clause}.

    `sorting_keys`, for a step that extends sorting keys: per statement, the (table,
    column) it adds to that table's key. The statement is skipped when the key already has
    the column: another worker migrating at the same time may have got further, and
    ClickHouse would take an older step's ORDER BY as shrinking the key, then refuse the
    newer one's (a column can join the key only in the ALTER that adds it).
    """

    version: int
    name: str
    statements: tuple[str, ...]
    sorting_keys: tuple[tuple[str, str], ...] = ()


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "window partials",
        (
            f"""CREATE TABLE IF NOT EXISTS {{db}}.service_health_partial {{on_cluster}} ({_WINDOW}
    service LowCardinality(String) CODEC(ZSTD(1)),
    input_topic LowCardinality(String) CODEC(ZSTD(1)),
    input_partition UInt16,
    calls UInt64 CODEC(ZSTD(1)),
    errors UInt64 CODEC(ZSTD(1)),
    latency_keys {_SKETCH[0]},
    latency_counts {_SKETCH[1]},
    version UInt64
) ENGINE = ReplacingMergeTree(version)
{_PARTITION}
ORDER BY (service, window_start, input_topic, input_partition)
{{ttl_clause}}""",
            f"""CREATE TABLE IF NOT EXISTS {{db}}.service_edges_partial {{on_cluster}} ({_WINDOW}
    client LowCardinality(String) CODEC(ZSTD(1)),
    server LowCardinality(String) CODEC(ZSTD(1)),
    connection_type LowCardinality(String) CODEC(ZSTD(1)),
    input_topic LowCardinality(String) CODEC(ZSTD(1)),
    input_partition UInt16,
    requests UInt64 CODEC(ZSTD(1)),
    failed UInt64 CODEC(ZSTD(1)),
    server_keys {_SKETCH[0]},
    server_counts {_SKETCH[1]},
    client_keys {_SKETCH[0]},
    client_counts {_SKETCH[1]},
    version UInt64
) ENGINE = ReplacingMergeTree(version)
{_PARTITION}
ORDER BY (client, server, connection_type, window_start, input_topic, input_partition)
{{ttl_clause}}""",
        ),
    ),
    Migration(
        2,
        "final windows",
        (
            f"""CREATE TABLE IF NOT EXISTS {{db}}.service_health {{on_cluster}} ({_WINDOW}
    service LowCardinality(String) CODEC(ZSTD(1)),
    calls UInt64 CODEC(ZSTD(1)),
    errors UInt64 CODEC(ZSTD(1)),
    error_rate Float64 CODEC(ZSTD(1)),
    p50_ms Float64 CODEC(ZSTD(1)),
    p95_ms Float64 CODEC(ZSTD(1)),
    p99_ms Float64 CODEC(ZSTD(1)),
    health LowCardinality(String) CODEC(ZSTD(1)),
    latency_keys {_SKETCH[0]},
    latency_counts {_SKETCH[1]},
    partitions UInt16,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
{_PARTITION}
ORDER BY (service, window_start)
{{ttl_clause}}""",
            f"""CREATE TABLE IF NOT EXISTS {{db}}.service_edges {{on_cluster}} ({_WINDOW}
    client LowCardinality(String) CODEC(ZSTD(1)),
    server LowCardinality(String) CODEC(ZSTD(1)),
    connection_type LowCardinality(String) CODEC(ZSTD(1)),
    requests UInt64 CODEC(ZSTD(1)),
    failed UInt64 CODEC(ZSTD(1)),
    error_rate Float64 CODEC(ZSTD(1)),
    server_p50_ms Float64 CODEC(ZSTD(1)),
    server_p95_ms Float64 CODEC(ZSTD(1)),
    server_p99_ms Float64 CODEC(ZSTD(1)),
    client_p50_ms Float64 CODEC(ZSTD(1)),
    client_p95_ms Float64 CODEC(ZSTD(1)),
    client_p99_ms Float64 CODEC(ZSTD(1)),
    server_keys {_SKETCH[0]},
    server_counts {_SKETCH[1]},
    client_keys {_SKETCH[0]},
    client_counts {_SKETCH[1]},
    version UInt64
) ENGINE = ReplacingMergeTree(version)
{_PARTITION}
ORDER BY (client, server, connection_type, window_start)
{{ttl_clause}}""",
        ),
    ),
    Migration(
        3,
        "pipeline watermarks",
        (
            """CREATE TABLE IF NOT EXISTS {db}.pipeline_watermarks {on_cluster} (
    group_id LowCardinality(String),
    topic LowCardinality(String),
    partition UInt16,
    watermark_ms Int64,
    updated_ms Int64
) ENGINE = ReplacingMergeTree(updated_ms)
ORDER BY (group_id, topic, partition)""",
        ),
    ),
    Migration(
        4,
        "anomalies",
        (
            f"""CREATE TABLE IF NOT EXISTS {{db}}.anomalies {{on_cluster}} ({_WINDOW}
    detected_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    entity_type LowCardinality(String),
    entity LowCardinality(String) CODEC(ZSTD(1)),
    incident_id String CODEC(ZSTD(1)),
    metric LowCardinality(String),
    observed Float64 CODEC(ZSTD(1)),
    expected Float64 CODEC(ZSTD(1)),
    score Float64 CODEC(ZSTD(1)),
    severity LowCardinality(String),
    detectors Array(LowCardinality(String)),
    factors String CODEC(ZSTD(3))
) ENGINE = ReplacingMergeTree(detected_at)
{_PARTITION}
ORDER BY (entity_type, entity, window_start)
{{ttl_clause}}""",
        ),
    ),
    Migration(
        5,
        "anomaly models",
        (
            # One row per trained model: the newest per entity is the live one, older ones
            # stay a while so an anomaly can be traced to the model that scored it.
            """CREATE TABLE IF NOT EXISTS {db}.anomaly_models {on_cluster} (
    kind LowCardinality(String),
    entity_type LowCardinality(String),
    entity String CODEC(ZSTD(1)),
    format_version UInt16,
    trained_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    trained_from DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    trained_until DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    windows UInt32,
    model String CODEC(ZSTD(1))
) ENGINE = MergeTree
ORDER BY (kind, entity_type, entity, trained_at)
TTL toDateTime(trained_at) + INTERVAL 30 DAY""",
        ),
    ),
    Migration(
        6,
        "late corrections",
        # A partial row now says which input offsets it covers (`applied_through`: every
        # contribution completed below it is in this row or an earlier one of the same
        # window) and whether it is the window's base row (`correction` 0) or a correction
        # added after the window closed (`correction` = its applied_through). The
        # correction is part of the replacing key, so corrections add to the base row
        # instead of replacing it. ClickHouse lets a column join the sorting key only in
        # the ALTER that adds it; run again, both clauses are no-ops.
        tuple(
            f"""ALTER TABLE {{db}}.{table} {{on_cluster}}
    ADD COLUMN IF NOT EXISTS applied_through UInt64 CODEC(Delta, ZSTD(1)),
    ADD COLUMN IF NOT EXISTS correction UInt64,
    MODIFY ORDER BY ({key}, correction)"""
            for table, key in (
                ("service_health_partial", "service, window_start, input_topic, input_partition"),
                ("service_edges_partial",
                 "client, server, connection_type, window_start, input_topic, input_partition"),
            )
        ),
        (("service_health_partial", "correction"), ("service_edges_partial", "correction")),
    ),
    Migration(
        7,
        "insights",
        (
            # One row per published version of an incident's insight; the newest version
            # wins. `published` is 0 while a version is stored but not yet acknowledged on
            # the insights topic, so a restart can tell what it must still send. window_start
            # is the incident's first window (the partition and TTL column of every table).
            f"""CREATE TABLE IF NOT EXISTS {{db}}.insights {{on_cluster}} ({_WINDOW[:_WINDOW.index("window_end")].rstrip()}
    insight_id String,
    incident_id String,
    version UInt32,
    status LowCardinality(String),
    severity LowCardinality(String),
    last_window DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    updated_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    narrator LowCardinality(String),
    grounded Bool,
    published UInt8,
    facts_key String,
    message String CODEC(ZSTD(3)),
    row_version UInt64 MATERIALIZED version * 2 + published
) ENGINE = ReplacingMergeTree(row_version)
{_PARTITION}
ORDER BY insight_id
{{ttl_clause}}""",
        ),
    ),
    Migration(
        8,
        "dashboards",
        (
            # One row per version of a dashboard spec (generated, or saved by a user); the
            # newest version wins, and a version marked published replaces the same version
            # unmarked (see insights). No TTL: saved dashboards outlive the data's retention,
            # and a spec is a few kB.
            """CREATE TABLE IF NOT EXISTS {db}.dashboards {on_cluster} (
    dashboard_id String,
    version UInt32,
    kind LowCardinality(String),
    title String,
    audience LowCardinality(String),
    incident_id String,
    service String,
    generator LowCardinality(String),
    updated_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    published UInt8,
    spec String CODEC(ZSTD(3)),
    row_version UInt64 MATERIALIZED version * 2 + published
) ENGINE = ReplacingMergeTree(row_version)
ORDER BY dashboard_id""",
        ),
    ),
    Migration(
        9,
        "edge dimensions",
        # processors.servicegraph.dimensions: an edge is also told apart by its labels
        # (client_<attribute> / server_<attribute> -> value; maps are written with their
        # keys sorted, so equal label sets are equal maps). Part of the replacing key, so a
        # replayed partial replaces the same edge's row; existing rows get the empty map,
        # which keeps their identity. Added and appended to the sorting key in one ALTER, as
        # ClickHouse requires; run again, both clauses are no-ops.
        tuple(
            f"""ALTER TABLE {{db}}.{table} {{on_cluster}}
    ADD COLUMN IF NOT EXISTS dimensions Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    MODIFY ORDER BY ({key}, dimensions)"""
            for table, key in (
                ("service_edges_partial",
                 "client, server, connection_type, window_start, input_topic, input_partition,"
                 " correction"),
                ("service_edges", "client, server, connection_type, window_start"),
            )
        ),
        (("service_edges_partial", "dimensions"), ("service_edges", "dimensions")),
    ),
    Migration(
        10,
        "feedback",
        (
            # What on-call people said of an insight in the UI: helpful or a false alarm, who
            # and when; one row per (insight, user), the newest wins. window_start and
            # last_window are the incident's windows and entities its "type:name"s: a false
            # alarm keeps those windows out of autoencoder training.
            """CREATE TABLE IF NOT EXISTS {db}.feedback {on_cluster} (
    insight_id String,
    incident_id String,
    verdict LowCardinality(String),
    user String,
    comment String CODEC(ZSTD(3)),
    at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    window_start DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    last_window DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    entities Array(String)
) ENGINE = ReplacingMergeTree(at)
ORDER BY (insight_id, user)""",
        ),
    ),
    Migration(
        11,
        "hourly rollups",
        (
            # Each hour of final windows merged per entity (counts summed, sketches merged),
            # rebuilt from the final rows whenever they change (processor/storage/rollups.py),
            # so long ranges read 60 times fewer rows. Same column names as the final tables
            # (window_start is the hour, window_end the end of its newest final window, so a
            # range's rates divide by the time it covers; health is its newest window's),
            # so the catalogue's map queries run unchanged on either. `fingerprint` is the
            # XOR of the hashes of the final rows it was built from: a changed final row
            # changes it, which is how a stale hour is found.
            f"""CREATE TABLE IF NOT EXISTS {{db}}.service_health_hourly {{on_cluster}} ({_WINDOW}
    service LowCardinality(String) CODEC(ZSTD(1)),
    calls UInt64 CODEC(ZSTD(1)),
    errors UInt64 CODEC(ZSTD(1)),
    health LowCardinality(String) CODEC(ZSTD(1)),
    latency_keys {_SKETCH[0]},
    latency_counts {_SKETCH[1]},
    windows UInt32,
    fingerprint UInt64,
    built_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(built_at)
{_PARTITION}
ORDER BY (service, window_start)
{{ttl_clause}}""",
            f"""CREATE TABLE IF NOT EXISTS {{db}}.service_edges_hourly {{on_cluster}} ({_WINDOW}
    client LowCardinality(String) CODEC(ZSTD(1)),
    server LowCardinality(String) CODEC(ZSTD(1)),
    connection_type LowCardinality(String) CODEC(ZSTD(1)),
    requests UInt64 CODEC(ZSTD(1)),
    failed UInt64 CODEC(ZSTD(1)),
    server_keys {_SKETCH[0]},
    server_counts {_SKETCH[1]},
    client_keys {_SKETCH[0]},
    client_counts {_SKETCH[1]},
    dimensions Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    windows UInt32,
    fingerprint UInt64,
    built_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(built_at)
{_PARTITION}
ORDER BY (client, server, connection_type, dimensions, window_start)
{{ttl_clause}}""",
        ),
    ),
    Migration(
        12,
        "re-key origins applied, per committed offset",
        (
            # What a re-key partition had applied of each input partition (origin) before
            # the offset stored with it (processor.aggregate.rekey): written just before
            # that offset is committed, read by the next owner resuming there. Kafka forgets
            # a group's offsets after offsets.retention.minutes (7 days by default); these
            # rows are kept twice that long.
            """CREATE TABLE IF NOT EXISTS {db}.rekey_origins {on_cluster} (
    group_id LowCardinality(String),
    topic LowCardinality(String),
    partition UInt16,
    offset Int64,
    origins Array(UInt32),
    applied Array(Int64),
    saved_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(saved_at)
PARTITION BY toDate(saved_at)
ORDER BY (group_id, topic, partition, offset)
TTL toDateTime(saved_at) + INTERVAL 14 DAY
SETTINGS ttl_only_drop_parts = 1""",
        ),
    ),
)

_BOOTSTRAP = """CREATE TABLE IF NOT EXISTS {db}.schema_migrations {on_cluster} (
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version"""

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CLUSTER_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def check_database_name(database: str) -> str:
    """The name itself, if it is a plain identifier (it is spliced into SQL text)."""
    if not _NAME_RE.match(database):
        raise ConfigError(
            f"exporters.clickhouse.database: {database!r} is not a plain identifier "
            "(letters, digits, underscore; not starting with a digit)"
        )
    return database


def ttl_clause(ttl_seconds: int) -> str:
    """TTL that drops whole daily parts once their newest window is older than ttl."""
    if ttl_seconds <= 0:
        return ""
    return (
        f"TTL toDateTime(window_start) + INTERVAL {int(ttl_seconds)} SECOND\n"
        "SETTINGS ttl_only_drop_parts = 1"
    )


def render(sql: str, **values: str) -> str:
    """Fill `{name}` placeholders; `{name:Type}` query parameters are left alone."""
    for key, value in values.items():
        sql = sql.replace("{" + key + "}", value)
    return sql


# Where a replicated table keeps its replication log in Keeper: one per table and shard,
# spelled with the server's own macros (the common convention).
REPLICA_PATH = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"
_ENGINE_RE = re.compile(r"ENGINE = (ReplacingMergeTree|MergeTree)(?:\(([^)]*)\))?")


def replicated(statement: str) -> str:
    """The statement with its table engine made Replicated* (for `cluster_name`)."""
    def engine(m: re.Match[str]) -> str:
        args = ", ".join(a for a in (REPLICA_PATH, m.group(2)) if a)
        return f"ENGINE = Replicated{m.group(1)}({args})"

    return _ENGINE_RE.sub(engine, statement)


def statements(ttl_seconds: int, cluster_name: str = "", database: str = "otel_insights"
               ) -> list[tuple[int, str]]:
    """Every DDL statement `migrate` may run, as (migration version, SQL); 0 = bootstrap.

    With a cluster name every statement runs ON CLUSTER and every table is Replicated*: the
    cluster is one shard, every replica holds every row, so reads need no Distributed table
    and a ReplacingMergeTree's versions of one key always meet on one server (on several
    shards they would not, and FINAL could not replace them).
    """
    db = check_database_name(database)
    if cluster_name and not _CLUSTER_RE.match(cluster_name):
        raise ConfigError(f"exporters.clickhouse.cluster_name: {cluster_name!r} is not a name")
    on_cluster = f"ON CLUSTER `{cluster_name}`" if cluster_name else ""
    fill = {"db": db, "on_cluster": on_cluster, "ttl_clause": ttl_clause(ttl_seconds)}
    out = [(0, render("CREATE DATABASE IF NOT EXISTS {db} {on_cluster}", **fill)),
           (0, render(_BOOTSTRAP, **fill))]
    out += [(step.version, render(sql, **fill)) for step in MIGRATIONS for sql in step.statements]
    return [(v, replicated(sql) if cluster_name else sql) for v, sql in out]


def migrate(backend: Backend, database: str, ttl_seconds: int, cluster_name: str = "") -> list[int]:
    """Create the database and apply pending migrations in order; returns versions applied."""
    db = check_database_name(database)
    ddl = statements(ttl_seconds, cluster_name, db)
    for _, sql in ddl[:2]:  # the database and schema_migrations
        backend.command(sql)
    done = {
        int(r["version"])
        for r in backend.query(f"SELECT version FROM {db}.schema_migrations FINAL")
    }
    applied: list[int] = []
    for step in MIGRATIONS:
        if step.version in done:
            continue
        apply_step(backend, db, step, ddl)
        backend.insert(
            f"{db}.schema_migrations",
            ["version", "name", "applied_at"],
            [[step.version, step.name, datetime.now(timezone.utc)]],
        )
        applied.append(step.version)
    return applied


def apply_step(backend: Backend, db: str, step: Migration, ddl: Sequence[tuple[int, str]]) -> None:
    """Run one step's statements, rendered in ``ddl`` (see `statements`). Each is IF NOT
    EXISTS or checks the sorting key first, so a step interrupted before it was recorded,
    or run by two workers at once, simply runs again."""
    for i, sql in enumerate(sql for version, sql in ddl if version == step.version):
        if step.sorting_keys and _key_has(backend, db, *step.sorting_keys[i]):
            continue
        backend.command(sql)


def _key_has(backend: Backend, db: str, table: str, column: str) -> bool:
    rows = backend.query("SELECT sorting_key FROM system.tables WHERE database = {db:String} "
                         "AND name = {table:String}", {"db": db, "table": table})
    return bool(rows) and column in [c.strip() for c in str(rows[0]["sorting_key"]).split(",")]


def applied_versions(backend: Backend, database: str) -> list[int]:
    """Versions recorded in schema_migrations, ascending."""
    db = check_database_name(database)
    rows = backend.query(f"SELECT version FROM {db}.schema_migrations FINAL ORDER BY version")
    return [int(r["version"]) for r in rows]
