"""Storage layer against real ClickHouse engines: chdb always, a server when one is reachable.

Every test that takes `backend`/`store` runs once per backend with identical SQL:
- `chdb`: the embedded engine.
- `http-adaptor`: HttpBackend and the real clickhouse-connect client talking the
  ClickHouse HTTP protocol to the test adaptor (tests/chshim.py) that hands each request to the
  same chdb engine. It covers HttpBackend's own code (parameter binding, Native
  inserts, result conversion) where no server exists; it is not a server.
- `http`: a real ClickHouse server from OTEL_INSIGHTS_CLICKHOUSE_URL or a
  testcontainers ClickHouse when Docker works; otherwise it skips and says why.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest

from processor.aggregate.messages import EdgeKey, dimensions_key
from processor.config import ClickHouseExporter
from processor.errors import ConfigError, StorageError
from processor.storage import CATALOGUE, Store, migrate, open_backend, rows_to_jsonable
from processor.storage import store as store_module
from processor.storage.backends import Backend, ChdbBackend
from processor.storage.catalogue import ParamError
from processor.storage.schema import (
    MIGRATIONS,
    REPLICA_PATH,
    applied_versions,
    apply_step,
    render,
    statements,
)
from processor.storage.sketch_sql import SKETCH_GAMMA, SKETCH_MIN_VALUE_MS, quantile_sql
from processor.windows import sketch
from tests.chshim import handler_for

pytestmark = pytest.mark.integration

NO_SERVER = (
    "no ClickHouse server: set OTEL_INSIGHTS_CLICKHOUSE_URL or run where Docker is available"
)
MINUTE_MS = 60_000
# Recent windows: the tables' TTL drops parts older than the TTL at insert time.
BASE_MS = (int(time.time() * 1000) // MINUTE_MS - 120) * MINUTE_MS
TTL_SECONDS = 30 * 24 * 3600

HEALTH_QUERY_COLUMNS = [
    "window_start", "window_end", "service", "calls", "errors", "error_rate",
    "p50_ms", "p95_ms", "p99_ms", "health",
]  # fmt: skip
EDGE_QUERY_COLUMNS = [
    "window_start", "window_end", "client", "server", "connection_type", "dimensions",
    "requests", "failed", "error_rate",
    "server_p50_ms", "server_p95_ms", "server_p99_ms",
    "client_p50_ms", "client_p95_ms", "client_p99_ms",
]  # fmt: skip


# --------------------------------------------------------------------------- sketch reference


def sketch_keys(values_ms: np.ndarray) -> np.ndarray:
    v = np.maximum(np.asarray(values_ms, dtype=np.float64), SKETCH_MIN_VALUE_MS)
    return np.ceil(np.log(v) / np.log(SKETCH_GAMMA)).astype(np.int64)


def sketch_of(values_ms: np.ndarray) -> tuple[list[int], list[int]]:
    keys, counts = np.unique(sketch_keys(values_ms), return_counts=True)
    return keys.tolist(), counts.tolist()


def numpy_quantile(keys: list[int], counts: list[int], q: float) -> float | None:
    k = np.asarray(keys, dtype=np.int64)
    c = np.asarray(counts, dtype=np.int64)
    n = int(c.sum())
    if n == 0:
        return None
    order = np.argsort(k, kind="stable")
    cum = np.cumsum(c[order])
    idx = int(np.argmax(cum > q * (n - 1)))
    return float(2 * SKETCH_GAMMA ** int(k[order][idx]) / (SKETCH_GAMMA + 1))


# --------------------------------------------------------------------------- backends


def _unique_db(prefix: str = "oi_test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("chdb"))


@pytest.fixture(scope="module")
def chdb_backend(chdb_dir: str) -> Iterator[ChdbBackend]:
    # chdb opens one data directory per process: one session for the whole module,
    # closed at the end so other modules can open their own directory.
    backend = ChdbBackend(chdb_dir)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def adaptor_backend(chdb_backend: ChdbBackend) -> Iterator[Backend]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(chdb_backend))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    backend = open_backend(ClickHouseExporter(endpoint=f"http://127.0.0.1:{server.server_address[1]}",
                                              timeout="30s"))
    yield backend
    backend.close()
    server.shutdown()
    server.server_close()


def _server_url() -> tuple[str | None, Any]:
    """(url, container to stop) for a real ClickHouse server, or (None, reason)."""
    url = os.environ.get("OTEL_INSIGHTS_CLICKHOUSE_URL")
    if url:
        return url, None
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return None, NO_SERVER
    from testcontainers.community.clickhouse import ClickHouseContainer

    container = ClickHouseContainer("clickhouse/clickhouse-server:latest")
    container.start()
    host = container.get_container_host_ip()
    port = container.get_exposed_port(8123)
    return f"http://{container.username}:{container.password}@{host}:{port}", container


@pytest.fixture(scope="module")
def server_backend() -> Iterator[Backend]:
    url, extra = _server_url()
    if url is None:
        pytest.skip(str(extra))
    backend = open_backend(ClickHouseExporter(endpoint=url))
    yield backend
    backend.close()
    if extra is not None:
        extra.stop()


_BACKEND_FIXTURES = {
    "chdb": "chdb_backend",
    "http-adaptor": "adaptor_backend",
    "http": "server_backend",
}


@pytest.fixture(scope="module", params=list(_BACKEND_FIXTURES))
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.getfixturevalue(_BACKEND_FIXTURES[request.param])


@pytest.fixture(scope="module")
def store(backend: Backend) -> Iterator[Store]:
    s = Store(backend, _unique_db())
    assert s.migrate(TTL_SECONDS) == [m.version for m in MIGRATIONS]
    yield s
    backend.command(f"DROP DATABASE IF EXISTS {s.database}")


# --------------------------------------------------------------------------- row builders


def health_partial(service: str, window: int, partition: int, calls: int, version: int,
                   topic: str = "otlp_spans", errors: int = 0, applied_through: int = 0,
                   correction: int = 0) -> dict[str, Any]:  # fmt: skip
    keys, counts = sketch_of(np.linspace(1.0, 50.0, calls))
    return {
        "window_start": BASE_MS + window * MINUTE_MS,
        "window_end": BASE_MS + (window + 1) * MINUTE_MS,
        "service": service, "input_topic": topic, "input_partition": partition,
        "calls": calls, "errors": errors, "latency_keys": keys, "latency_counts": counts,
        "applied_through": applied_through, "correction": correction, "version": version,
    }  # fmt: skip


def edge_partial(client: str, server: str, ctype: str, window: int, partition: int,
                 requests: int, version: int, applied_through: int = 0,
                 correction: int = 0, dimensions: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    keys, counts = sketch_of(np.linspace(2.0, 20.0, requests))
    return {
        "window_start": BASE_MS + window * MINUTE_MS,
        "window_end": BASE_MS + (window + 1) * MINUTE_MS,
        "client": client, "server": server, "connection_type": ctype,
        "dimensions": dict(sorted((dimensions or {}).items())),
        "input_topic": "otlp_spans", "input_partition": partition,
        "requests": requests, "failed": requests // 10,
        "server_keys": keys, "server_counts": counts,
        "client_keys": keys, "client_counts": counts, "applied_through": applied_through,
        "correction": correction, "version": version,
    }  # fmt: skip


def health_final(service: str, window: int, calls: int, p95: float, version: int,
                 health: str = "healthy") -> dict[str, Any]:  # fmt: skip
    keys, counts = sketch_of(np.full(calls, p95))
    return {
        "window_start": BASE_MS + window * MINUTE_MS,
        "window_end": BASE_MS + (window + 1) * MINUTE_MS,
        "service": service, "calls": calls, "errors": 1, "error_rate": 1 / calls,
        "p50_ms": p95 / 2, "p95_ms": p95, "p99_ms": p95 * 1.5, "health": health,
        "latency_keys": keys, "latency_counts": counts, "partitions": 3, "version": version,
    }  # fmt: skip


def edge_final(client: str, server: str, window: int, server_ms: np.ndarray,
               failed: int, version: int, ctype: str = "",
               dimensions: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    skeys, scounts = sketch_of(server_ms)
    ckeys, ccounts = sketch_of(server_ms * 1.1)
    n = len(server_ms)
    return {
        "window_start": BASE_MS + window * MINUTE_MS,
        "window_end": BASE_MS + (window + 1) * MINUTE_MS,
        "client": client, "server": server, "connection_type": ctype,
        "dimensions": dict(sorted((dimensions or {}).items())),
        "requests": n, "failed": failed, "error_rate": failed / n,
        "server_p50_ms": numpy_quantile(skeys, scounts, 0.5),
        "server_p95_ms": numpy_quantile(skeys, scounts, 0.95),
        "server_p99_ms": numpy_quantile(skeys, scounts, 0.99),
        "client_p50_ms": numpy_quantile(ckeys, ccounts, 0.5),
        "client_p95_ms": numpy_quantile(ckeys, ccounts, 0.95),
        "client_p99_ms": numpy_quantile(ckeys, ccounts, 0.99),
        "server_keys": skeys, "server_counts": scounts,
        "client_keys": ckeys, "client_counts": ccounts, "version": version,
    }  # fmt: skip


# --------------------------------------------------------------------------- schema


def test_migrate_is_idempotent_and_recorded(backend: Backend) -> None:
    db = _unique_db()
    try:
        every = [m.version for m in MIGRATIONS]
        assert every == sorted(every) and len(every) >= 4
        assert migrate(backend, db, TTL_SECONDS) == every
        assert migrate(backend, db, TTL_SECONDS) == []
        assert applied_versions(backend, db) == every
        tables = backend.query(
            "SELECT name, engine, create_table_query FROM system.tables "
            "WHERE database = {db:String} ORDER BY name",
            {"db": db},
        )
        by_name = {t["name"]: t for t in tables}
        assert sorted(by_name) == [
            "anomalies", "anomaly_models", "dashboards", "feedback", "insights",
            "pipeline_watermarks", "rekey_origins", "schema_migrations", "service_edges",
            "service_edges_hourly", "service_edges_partial", "service_health",
            "service_health_hourly", "service_health_partial",
        ]  # fmt: skip
        # Model history is kept (newest read with LIMIT BY); everything else replaces.
        assert by_name.pop("anomaly_models")["engine"] == "MergeTree"
        assert all(t["engine"] == "ReplacingMergeTree" for t in by_name.values())
        health_ddl = by_name["service_health"]["create_table_query"]
        assert "PARTITION BY toDate(window_start)" in health_ddl
        assert f"toIntervalSecond({TTL_SECONDS})" in health_ddl
        assert "ttl_only_drop_parts = 1" in health_ddl
        assert "LowCardinality(String)" in health_ddl
        assert "CODEC(Delta(8), ZSTD(1))" in health_ddl
        assert "TTL" not in by_name["pipeline_watermarks"]["create_table_query"]
        assert "TTL" not in by_name["dashboards"]["create_table_query"]  # saved ones outlive the data
        # The hourly rollups age out with the windows they summarise.
        assert f"toIntervalSecond({TTL_SECONDS})" in by_name["service_edges_hourly"]["create_table_query"]
        # A version stored before it was published must lose to the published one.
        assert "ReplacingMergeTree(row_version)" in by_name["insights"]["create_table_query"]
    finally:
        backend.command(f"DROP DATABASE IF EXISTS {db}")


def test_migrate_without_ttl_creates_tables_without_ttl(backend: Backend) -> None:
    db = _unique_db()
    try:
        migrate(backend, db, 0)
        ddl = backend.query(
            "SELECT create_table_query FROM system.tables "
            "WHERE database = {db:String} AND name = 'service_edges'",
            {"db": db},
        )[0]["create_table_query"]
        assert "TTL" not in ddl and "ttl_only_drop_parts" not in ddl
    finally:
        backend.command(f"DROP DATABASE IF EXISTS {db}")


def test_migrate_sends_on_cluster(chdb_backend: ChdbBackend) -> None:
    # chdb has no clusters, so the engine rejecting the name proves ON CLUSTER is sent.
    with pytest.raises(StorageError, match="no_such_cluster"):
        migrate(chdb_backend, _unique_db(), TTL_SECONDS, cluster_name="no_such_cluster")


def test_cluster_name_makes_every_table_replicated_on_the_cluster(chdb_backend: ChdbBackend) -> None:
    """exporters.clickhouse.cluster_name: every statement ON CLUSTER, every table Replicated*
    (one shard, every replica holds every row). chdb has no Keeper to create them in, so
    ClickHouse's own parser checks each statement as written (EXPLAIN AST)."""
    ddl = [sql for _, sql in statements(TTL_SECONDS, "prod_cluster", "otel_insights")]
    creates = [sql for sql in ddl if sql.startswith("CREATE TABLE")]
    assert len(creates) == 1 + sum(sql.startswith("CREATE TABLE") for m in MIGRATIONS for sql in m.statements)
    assert all("ON CLUSTER `prod_cluster`" in sql for sql in ddl)
    for sql in creates:
        engine = next(line for line in sql.splitlines() if "ENGINE" in line)
        assert "ENGINE = Replicated" in engine and REPLICA_PATH in engine, engine
    assert not any("Distributed" in sql for sql in ddl)
    for sql in ddl:
        assert chdb_backend.query(f"EXPLAIN AST {sql}"), sql
    plain = [sql for _, sql in statements(TTL_SECONDS)]
    assert not any("Replicated" in sql or "ON CLUSTER" in sql for sql in plain)


def test_async_insert_is_said_with_every_insert(chdb_backend: ChdbBackend) -> None:
    """exporters.clickhouse.async_insert: asynchronous inserts that still wait for their
    flush (offsets follow durable rows); off, async_insert=0 is said (servers differ in their
    default). Seen where a server sees it: the settings of each HTTP request."""
    seen: list[dict[str, str]] = []

    class Recording(handler_for(chdb_backend)):  # type: ignore[misc, valid-type]
        def _handle(self) -> None:
            seen.append(dict(parse_qsl(urlsplit(self.path).query)))
            super()._handle()

        do_GET = do_POST = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recording)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    db = _unique_db()
    try:
        for flag, want in ((True, {"async_insert": "1", "wait_for_async_insert": "1"}),
                           (False, {"async_insert": "0"})):
            backend = open_backend(ClickHouseExporter(endpoint=f"http://127.0.0.1:{server.server_address[1]}",
                                                      database=db, async_insert=flag))
            store = Store(backend, db)
            store.migrate(TTL_SECONDS)
            seen.clear()
            store.insert_health_partials([health_partial(f"svc-{flag}", 0, 0, 5, 1)])
            # clickhouse-connect reads the table's columns with the insert's settings, then inserts.
            inserts = [a for a in seen if "async_insert" in a]
            assert inserts and all({k: a.get(k) for k in want} == want for a in inserts), seen
            # Durable when the call returns: readable at once.
            rows = store.read_health_partials([(f"svc-{flag}", BASE_MS)])
            assert [r["calls"] for r in rows] == [5]
            backend.close()
    finally:
        server.shutdown()
        server.server_close()
        chdb_backend.command(f"DROP DATABASE IF EXISTS {db}")


def test_migrate_rejects_unsafe_names(chdb_backend: ChdbBackend) -> None:
    with pytest.raises(ConfigError, match="database"):
        migrate(chdb_backend, "x; DROP DATABASE system", 0)
    with pytest.raises(ConfigError, match="cluster_name"):
        migrate(chdb_backend, "fine_name", 0, cluster_name="a` b")


# --------------------------------------------------------------------------- partials


def test_replayed_health_partial_replaces_earlier_one(store: Store) -> None:
    svc = "checkout 'eu'\\\"\n\u00e9"  # quotes, backslash, newline, non-ASCII
    store.insert_health_partials([
        health_partial(svc, 0, partition=0, calls=10, version=1),
        health_partial(svc, 0, partition=1, calls=5, version=1),
        health_partial("other", 0, partition=0, calls=99, version=1),
    ])  # fmt: skip
    # Replay of partition 0 with new content and a higher version, then a stale replay.
    store.insert_health_partials([health_partial(svc, 0, partition=0, calls=12, version=2)])
    store.insert_health_partials([health_partial(svc, 0, partition=0, calls=11, version=1)])

    rows = store.read_health_partials([(svc, BASE_MS)])
    got = {(r["service"], r["input_partition"]): (r["calls"], r["version"]) for r in rows}
    assert got == {(svc, 0): (12, 2), (svc, 1): (5, 1)}
    row = next(r for r in rows if r["input_partition"] == 0)
    assert row["window_start"] == BASE_MS and row["window_end"] == BASE_MS + MINUTE_MS
    expected_keys, expected_counts = sketch_of(np.linspace(1.0, 50.0, 12))
    assert row["latency_keys"] == expected_keys and row["latency_counts"] == expected_counts
    assert store.read_health_partials([]) == []
    assert store.read_health_partials([(svc, BASE_MS + 7 * MINUTE_MS)]) == []


def test_replayed_edge_partial_replaces_earlier_one(store: Store) -> None:
    store.insert_edge_partials([
        edge_partial("web", "api", "", 1, partition=3, requests=20, version=1),
        edge_partial("web", "api", "database", 1, partition=3, requests=7, version=1),
        edge_partial("web", "api", "", 2, partition=3, requests=9, version=1),
    ])  # fmt: skip
    store.insert_edge_partials([edge_partial("web", "api", "", 1, 3, requests=30, version=5)])
    rows = store.read_edge_partials([("web", "api", "", BASE_MS + MINUTE_MS)])
    assert [(r["connection_type"], r["requests"], r["version"]) for r in rows] == [("", 30, 5)]
    assert rows[0]["failed"] == 3 and rows[0]["input_partition"] == 3


def test_edge_dimensions_are_part_of_the_key_in_partials_finals_and_queries(store: Store) -> None:
    """processors.servicegraph.dimensions: the same client, server and type with other labels is
    another edge; a replay of one with the same labels replaces it, not the others."""
    prod, dev = {"client_env": "prod", "server_env": "prod"}, {"client_env": "dev"}
    store.insert_edge_partials([
        edge_partial("web", "api", "", 50, partition=0, requests=10, version=1, dimensions=prod),
        edge_partial("web", "api", "", 50, partition=0, requests=4, version=1, dimensions=dev),
        edge_partial("web", "api", "", 50, partition=0, requests=2, version=1),
    ])  # fmt: skip
    store.insert_edge_partials([edge_partial("web", "api", "", 50, partition=0, requests=12,
                                             version=2, dimensions=prod)])  # a replay
    ws = BASE_MS + 50 * MINUTE_MS
    read = store.read_edge_partials([EdgeKey("web", "api", "", ws, dimensions_key(prod)),
                                     EdgeKey("web", "api", "", ws)])
    assert sorted((r["requests"], r["dimensions"]) for r in read) == [(2, {}), (12, prod)]
    assert store.read_edge_partials([("web", "api", "", ws)]) == [
        r for r in read if r["dimensions"] == {}]  # a plain key is the edge without labels
    store.insert_edges_final([edge_final("web", "api", 50, np.array([1.0] * n), 0, 1, dimensions=d)
                              for n, d in ((12, prod), (4, dev), (2, None))])
    _, finals = store.final_rows_between(ws, ws + 1)
    assert sorted((r["requests"], r["dimensions"]) for r in finals) == [(2, {}), (4, dev), (12, prod)]
    topo = store.topology(ws, until_ms=ws + MINUTE_MS, service="api")
    assert sorted((r["requests"], r["dimensions"]) for r in topo) == [(2, {}), (4, dev), (12, prod)]


def test_migration_9_keeps_existing_edge_rows_and_their_identity(backend: Backend) -> None:
    """An edge row stored before edge dimensions existed reads back with none, and a replay of
    it after the migration still replaces it."""
    db = _unique_db()
    try:
        fill = {"db": db, "on_cluster": "", "ttl_clause": ""}
        backend.command(render("CREATE DATABASE IF NOT EXISTS {db}", **fill))
        for step in MIGRATIONS[:7]:  # the schema as it was: no dimensions column
            for statement in step.statements:
                backend.command(render(statement, **fill))
        old = edge_partial("web", "api", "", 60, partition=1, requests=5, version=1)
        del old["dimensions"]
        backend.insert(f"{db}.service_edges_partial", list(old), [list(_old_values(old))])
        s = Store(backend, db)
        assert 9 in s.migrate(0)
        ws = BASE_MS + 60 * MINUTE_MS
        assert [(r["requests"], r["dimensions"]) for r in s.read_edge_partials([("web", "api", "", ws)])] == [(5, {})]
        s.insert_edge_partials([edge_partial("web", "api", "", 60, partition=1, requests=7, version=2)])
        assert [r["requests"] for r in s.read_edge_partials([("web", "api", "", ws)])] == [7]
        assert s.migrate(0) == []  # recorded; running it again changes nothing
    finally:
        backend.command(f"DROP DATABASE IF EXISTS {db}")


def test_older_steps_run_again_after_newer_ones_keep_the_sorting_keys(backend: Backend) -> None:
    """Two workers starting at once both migrate: one may run step 6 after the other ran 9.
    Re-run, 6's ORDER BY would drop `dimensions` from the key and 9 could not put it back."""
    db = _unique_db()
    try:
        migrate(backend, db, 0)
        ddl = statements(0, "", db)
        for step in MIGRATIONS[5:]:
            apply_step(backend, db, step, ddl)
        keys = {r["name"]: r["sorting_key"] for r in backend.query(
            "SELECT name, sorting_key FROM system.tables WHERE database = {db:String}", {"db": db})}
        assert keys["service_edges_partial"].endswith("input_partition, correction, dimensions")
        assert keys["service_edges"].endswith("window_start, dimensions")
    finally:
        backend.command(f"DROP DATABASE IF EXISTS {db}")


def _old_values(row: dict[str, Any]) -> list[Any]:
    return [datetime.fromtimestamp(v / 1000, timezone.utc) if k.startswith("window_") else v
            for k, v in row.items()]


def test_corrections_are_read_beside_the_base_row_and_mark_what_is_applied(store: Store) -> None:
    svc = "cart"
    store.insert_health_partials([
        health_partial(svc, 0, partition=0, calls=10, version=1, applied_through=40),
        health_partial(svc, 1, partition=0, calls=4, version=1, applied_through=90),
        health_partial(svc, 0, partition=1, calls=3, version=1, applied_through=7),
    ])  # fmt: skip
    # Two corrections of window 0 on partition 0, one replaced by a replay of itself.
    store.insert_health_partials([
        health_partial(svc, 0, partition=0, calls=2, version=2, applied_through=55, correction=55),
        health_partial(svc, 0, partition=0, calls=1, version=3, applied_through=61, correction=61),
    ])  # fmt: skip
    store.insert_health_partials([
        health_partial(svc, 0, partition=0, calls=1, version=4, applied_through=61, correction=61)])
    store.insert_edge_partials([
        edge_partial("web", svc, "", 0, partition=0, requests=5, version=1, applied_through=40),
        edge_partial("web", svc, "", 0, partition=0, requests=1, version=2, applied_through=55,
                     correction=55),
    ])  # fmt: skip
    rows = store.read_health_partials([(svc, BASE_MS)])
    assert sorted((r["input_partition"], r["calls"]) for r in rows) == [(0, 1), (0, 2), (0, 10), (1, 3)]
    edges = store.read_edge_partials([("web", svc, "", BASE_MS)])
    assert sorted(r["requests"] for r in edges) == [1, 5]
    # A restart of partition 0 reads, per closed window, what its stored rows cover.
    assert store.load_applied("otlp_spans", 0, BASE_MS, BASE_MS + 2 * MINUTE_MS) == {
        BASE_MS: (61, 55), BASE_MS + MINUTE_MS: (90, 0)}
    assert store.load_applied("otlp_spans", 0, BASE_MS, BASE_MS + MINUTE_MS) == {BASE_MS: (61, 55)}
    assert store.load_applied("otlp_spans", 1, BASE_MS, BASE_MS + MINUTE_MS) == {BASE_MS: (7, 0)}
    assert store.load_applied("other-topic", 0, BASE_MS, BASE_MS + MINUTE_MS) == {}


def test_read_partials_selects_exact_keys_across_chunks(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = [f"svc-{i}" for i in range(6)]
    rows = [
        health_partial(s, w, partition=p, calls=3 + w, version=1)
        for s in services for w in range(10, 16) for p in range(2)
    ]  # fmt: skip
    store.insert_health_partials(rows)
    wanted = [(s, BASE_MS + w * MINUTE_MS) for s in services[:4] for w in (10, 12, 15)]
    monkeypatch.setattr(store_module, "READ_CHUNK", 5)  # several statements
    got = store.read_health_partials(wanted + wanted[:3])  # duplicates are harmless
    assert sorted((r["service"], r["window_start"], r["input_partition"]) for r in got) == sorted(
        (s, ws, p) for s, ws in wanted for p in range(2)
    )


# --------------------------------------------------------------------------- finals + queries


def test_final_rows_one_per_window_after_repeated_inserts(store: Store) -> None:
    for version in (1, 3, 2):  # out of order: the highest version must win
        store.insert_health_final(
            [
                health_final("billing", w, calls=100, p95=10.0 * version, version=version)
                for w in (20, 21)
            ]  # fmt: skip
        )
        store.insert_edges_final(
            [
                edge_final("billing", "ledger", w, np.full(50, 4.0 * version), version, version)
                for w in (20, 21)
            ]  # fmt: skip
        )
    since = BASE_MS + 20 * MINUTE_MS
    health = [r for r in store.health(since, until_ms=since + 2 * MINUTE_MS)
              if r["service"] == "billing"]  # fmt: skip
    assert [(r["window_start"], r["p95_ms"]) for r in health] == [
        (datetime.fromtimestamp((since + i * MINUTE_MS) / 1000, timezone.utc), 30.0)
        for i in range(2)
    ]
    edges = store.edges(since, until_ms=since + 2 * MINUTE_MS, service="ledger")
    assert [(r["client"], r["server"], r["failed"]) for r in edges] == [
        ("billing", "ledger", 3), ("billing", "ledger", 3),
    ]  # fmt: skip


def test_named_queries_return_documented_columns_as_json(store: Store) -> None:
    store.insert_health_final([health_final("catalog", 30, calls=4, p95=7.5, version=1,
                                            health="insufficient_data")])  # fmt: skip
    store.insert_edges_final([edge_final("catalog", "db", 30, np.array([1.0, 2.0]), 0, 1,
                                         ctype="database")])  # fmt: skip
    since, until = BASE_MS + 30 * MINUTE_MS, BASE_MS + 31 * MINUTE_MS
    health = store.health(since, until_ms=until)
    edges = store.edges(since, until_ms=until)
    topo = store.topology(since, until_ms=until)
    assert [list(r) for r in health] == [HEALTH_QUERY_COLUMNS]
    assert [list(r) for r in edges] == [EDGE_QUERY_COLUMNS]
    assert list(topo[0]) == [c.name for c in CATALOGUE["topology"].columns]
    assert [topo[0][k] for k in ("id", "source", "target")] == ["catalog -> db (database)", "catalog", "db"]
    assert topo[0]["dimensions"] == {}  # an edge without dimension labels
    assert health[0]["health"] == "insufficient_data" and health[0]["calls"] == 4
    assert edges[0]["connection_type"] == "database"

    doc = json.loads(json.dumps(rows_to_jsonable(health + edges + topo)))
    start_iso = datetime.fromtimestamp(since / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M")
    assert doc[0]["window_start"] == f"{start_iso}:00.000Z"
    assert doc[1]["window_end"].endswith("Z")
    assert rows_to_jsonable([{"x": math.nan, "y": [math.inf, 1.5]}]) == [{"x": None,
                                                                          "y": [None, 1.5]}]  # fmt: skip
    with pytest.raises(ParamError, match="known queries"):
        store.named_query("DROP TABLE x", since)


def test_topology_merges_stored_sketches_over_the_range(store: Store) -> None:
    rng = np.random.default_rng(7)
    windows = [rng.lognormal(3.0, 1.0, size=n) for n in (300, 50, 1200)]
    store.insert_edges_final(
        [
            edge_final("gateway", "search", 40 + i, v, failed=i, version=1)
            for i, v in enumerate(windows)
        ]  # fmt: skip
    )
    # A virtual-node edge has no server span, so its server sketch is empty.
    virtual = edge_final("gateway", "s3", 40, np.array([5.0]), 0, 1, ctype="virtual_node")
    virtual.update(server_keys=[], server_counts=[])
    store.insert_edges_final([virtual])

    since = BASE_MS + 40 * MINUTE_MS
    topo = {(r["client"], r["server"]): r for r in store.topology(since, until_ms=since + 3 * MINUTE_MS)}  # fmt: skip
    search = topo[("gateway", "search")]
    merged = sketch_of(np.concatenate(windows))
    assert search["requests"] == 1550 and search["failed"] == 3 and search["windows"] == 3
    assert search["error_rate"] == pytest.approx(3 / 1550)
    for q in (0.5, 0.95, 0.99):
        expected = numpy_quantile(*merged, q)
        assert search[f"server_p{round(q * 100)}_ms"] == pytest.approx(expected, rel=1e-9)
        # Merged sketches stay within the sketch's relative error of the exact quantile.
        exact = np.quantile(np.concatenate(windows), q, method="lower")
        assert abs(search[f"server_p{round(q * 100)}_ms"] - exact) / exact < 0.011
    assert topo[("gateway", "s3")]["server_p95_ms"] is None
    assert topo[("gateway", "s3")]["client_p95_ms"] == pytest.approx(5.5, rel=0.01)


def test_sql_quantile_matches_numpy_definition(backend: Backend) -> None:
    rng = np.random.default_rng(42)
    sets: list[tuple[int, list[int], list[int]]] = []
    for i in range(300):
        n_keys = int(rng.integers(1, 40))
        keys = rng.choice(np.arange(-3000, 3000), size=n_keys, replace=False)  # unsorted
        counts = rng.integers(0, 1000, size=n_keys)
        counts[0] = max(int(counts[0]), 1)
        sets.append((i, [int(k) for k in keys], [int(c) for c in counts]))
    samples = rng.lognormal(2.0, 1.5, size=5000)
    sets.append((300, *sketch_of(np.append(samples, [0.0, 1e-9]))))  # clamped tiny values
    sets.append((301, [5], [1]))
    sets.append((302, [], []))
    qs = [0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0]
    cols = ", ".join(f"{quantile_sql('k', 'c', q)} AS q{j}" for j, q in enumerate(qs))
    rows = backend.query(
        f"SELECT i, {cols} FROM (SELECT t.1 AS i, t.2 AS k, t.3 AS c FROM "
        "(SELECT arrayJoin({sets:Array(Tuple(UInt32, Array(Int32), Array(UInt64)))}) AS t)) "
        "ORDER BY i",
        {"sets": sets},
    )
    assert len(rows) == len(sets)
    for (i, set_keys, set_counts), row in zip(sets, rows, strict=True):
        assert row["i"] == i
        for j, q in enumerate(qs):
            expected = numpy_quantile(set_keys, set_counts, q)
            if expected is None:
                assert row[f"q{j}"] is None
            else:
                assert row[f"q{j}"] == pytest.approx(expected, rel=1e-9), (i, q)
    # The pipeline's Python sketch computes the stored p50/p95/p99 with the same rule.
    real = rows[300]
    python_side = sketch.quantiles(
        np.asarray(sets[300][1], np.int32), np.asarray(sets[300][2], np.uint64), tuple(qs)
    )
    assert [real[f"q{j}"] for j in range(len(qs))] == pytest.approx(python_side, rel=1e-9)


# --------------------------------------------------------------------------- watermarks, baselines


def test_watermarks_round_trip(store: Store) -> None:
    assert store.load_watermarks("stage1", "otlp_spans") == {}
    store.save_watermarks("stage1", "otlp_spans", {0: 1_000, 1: 2_000, 65535: 5})
    store.save_watermarks("stage1", "otlp_spans", {0: 1_500})
    store.save_watermarks("stage2", "otlp_spans", {0: 9})
    store.save_watermarks("stage1", "partials", {0: 7})
    assert store.load_watermarks("stage1", "otlp_spans") == {0: 1_500, 1: 2_000, 65535: 5}
    assert store.load_watermarks("stage2", "otlp_spans") == {0: 9}


def test_rekey_origins_are_read_back_from_the_last_row_at_or_before_an_offset(store: Store) -> None:
    assert store.load_origins("g", "rekeyed", 0, 40) is None
    store.save_origins("g", "rekeyed", {0: (40, {0: 17, 2: 5}), 1: (12, {})})
    store.save_origins("g", "rekeyed", {0: (55, {0: 30, 1: 2, 2: 5})})
    assert store.load_origins("g", "rekeyed", 0, 40) == (40, {0: 17, 2: 5})
    assert store.load_origins("g", "rekeyed", 0, 54) == (40, {0: 17, 2: 5})
    assert store.load_origins("g", "rekeyed", 0, 9000) == (55, {0: 30, 1: 2, 2: 5})
    assert store.load_origins("g", "rekeyed", 1, 12) == (12, {})  # stored, nothing applied yet
    assert store.load_origins("g", "rekeyed", 0, 39) is None  # before any row: unknown
    assert store.load_origins("other", "rekeyed", 0, 40) is None


def test_detection_reads_windows_anomalies_and_newest_models(backend: Backend) -> None:
    s = Store(backend, _unique_db())
    s.migrate(TTL_SECONDS)
    try:
        assert s.first_final_window(0) is None and s.final_window_starts(0, 2**62) == []
        s.insert_health_final([health_final("cart", w, 100, 20.0, 1) for w in (3, 5)])
        s.insert_health_final([health_final("cart", 5, 120, 20.0, 2)])  # re-finalised: replaces
        s.insert_edges_final([edge_final("web", "cart", w, np.full(10, 5.0), 0, 1) for w in (4, 5)])
        ms = [BASE_MS + w * MINUTE_MS for w in range(7)]
        assert s.first_final_window(0) == ms[3] and s.first_final_window(ms[3] + 1) == ms[4]
        assert s.final_window_starts(ms[3], ms[6]) == [ms[4], ms[5]]  # both bounds exclusive
        health, edges = s.final_rows_between(ms[4], ms[6])
        assert [(r["window_start"], r["calls"]) for r in health] == [(ms[5], 120)]
        assert [r["window_start"] for r in edges] == [ms[4], ms[5]]
        s.insert_anomalies([{"detected_at": ms[6], "window_start": ms[5], "window_end": ms[6],
                             "entity_type": t, "entity": e, "incident_id": "inc-1", "metric": "rate",
                             "observed": 1.0, "expected": 2.0, "score": 0.9, "severity": "critical",
                             "detectors": ["robust"], "factors": "{}"}
                            for t, e in (("service", "cart"), ("edge", "web->cart"))])
        assert s.anomalous_windows(ms[0], ms[6]) == {ms[5]: {("service", "cart"), ("edge", "web->cart")}}
        assert s.anomalous_windows(ms[0], ms[5]) == {}

        def model(entity: str, at: int, blob: str) -> dict[str, Any]:
            return {"kind": "autoencoder", "entity_type": "service", "entity": entity, "format_version": 1,
                    "trained_at": at, "trained_from": at - 1000, "trained_until": at, "windows": 240,
                    "model": blob}

        s.insert_models([model("cart", ms[1], "old"), model("cart", ms[2], "new"), model("web", ms[1], "w")])
        latest = {r["entity"]: (r["model"], r["trained_at_ms"]) for r in s.latest_models("autoencoder")}
        assert latest == {"cart": ("new", ms[2]), "web": ("w", ms[1])}
        assert s.latest_models("other") == []
    finally:
        backend.command(f"DROP DATABASE IF EXISTS {s.database}")


def test_recent_health_p95_returns_last_windows_oldest_first(store: Store) -> None:
    store.insert_health_final(
        [health_final("cart", w, calls=50, p95=float(w), version=1) for w in range(50, 56)]
        + [health_final("cart", 56, calls=2, p95=999.0, version=1, health="insufficient_data")]
        + [health_final("pay", w, calls=50, p95=float(w) + 0.5, version=1) for w in (50, 51)]
    )
    before = BASE_MS + 57 * MINUTE_MS
    got = store.recent_health_p95(["cart", "pay", "absent"], before, windows=3)
    assert got == {"cart": [53.0, 54.0, 55.0], "pay": [50.5, 51.5]}
    assert store.recent_health_p95(["cart"], BASE_MS + 52 * MINUTE_MS, 10) == {"cart": [50.0, 51.0]}
    assert store.recent_health_p95(["cart"], before, 1, skip_insufficient=False) == {
        "cart": [999.0]
    }
    assert store.recent_health_p95(None, before, 2)["pay"] == [50.5, 51.5]
    assert store.recent_health_p95([], before, 2) == {}


# --------------------------------------------------------------------------- backend behaviour


def test_backend_is_usable_from_many_threads(store: Store) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(15):
                store.save_watermarks(f"thread-{t}", "topic", {i: t * 100 + i})
                store.load_watermarks(f"thread-{t}", "topic")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    for t in range(4):
        assert store.load_watermarks(f"thread-{t}", "topic") == {i: t * 100 + i for i in range(15)}


def test_rejected_statement_is_one_line_storage_error(backend: Backend) -> None:
    with pytest.raises(StorageError) as info:
        backend.query("SELECT no_such_column FROM system.one")
    message = str(info.value)
    assert "\n" not in message and "rejected" in message and "no_such_column" in message


def test_dead_http_endpoint_is_one_line_storage_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StorageError) as info:
        open_backend(ClickHouseExporter(endpoint=f"http://user:secret@127.0.0.1:{port}", timeout="2s"))
    message = str(info.value)
    assert message.startswith(f"ClickHouse http://127.0.0.1:{port} is unreachable: ")
    assert message.endswith("Connection refused") and "secret" not in message
    assert info.value.__cause__ is None  # nothing for the CLI to print beyond the line


def test_second_directory_in_same_process_is_storage_error(chdb_backend: ChdbBackend) -> None:
    with pytest.raises(StorageError, match="one data directory per process"):
        open_backend(ClickHouseExporter(endpoint=f"chdb://{chdb_backend.path}-other"))


def test_second_process_opening_chdb_dir_gets_storage_error(chdb_backend: ChdbBackend) -> None:
    script = (
        "import sys\n"
        "from processor.errors import StorageError\n"
        "from processor.storage import ChdbBackend\n"
        "try:\n"
        "    ChdbBackend(sys.argv[1])\n"
        "except StorageError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, chdb_backend.path],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    line = proc.stdout.strip()
    assert f"in use by pid {os.getpid()}" in line and chdb_backend.path in line
    assert "\n" not in line
