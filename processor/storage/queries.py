"""Named, parameterised read queries for the UI, the API and `otel-insights query`.

There is no raw-SQL entry point: callers pick a query by name and pass typed
parameters, which travel as ClickHouse `{name:Type}` parameters. Window times
come back as timezone-aware UTC datetimes; `rows_to_jsonable` turns rows into
plain JSON values (ISO-8601 `...Z` strings, NaN/inf as null).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from processor.storage.backends import Backend
from processor.storage.schema import check_database_name, render
from processor.storage.sketch_sql import quantile_sql

# Far enough ahead to mean "no upper bound" and still inside DateTime64(3)'s range.
NO_UNTIL_MS = 9_999_999_999_999
DEFAULT_LIMIT = 10_000

_RANGE = """window_start >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')
  AND window_start < fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')"""

HEALTH_SQL = f"""SELECT window_start, window_end, service, calls, errors, error_rate,
       p50_ms, p95_ms, p99_ms, health
FROM {{db}}.service_health FINAL
WHERE {_RANGE}
  AND ({{service:String}} = '' OR service = {{service:String}})
ORDER BY window_start, service
LIMIT {{limit:UInt32}}"""

EDGES_SQL = f"""SELECT window_start, window_end, client, server, connection_type, dimensions,
       requests, failed, error_rate,
       server_p50_ms, server_p95_ms, server_p99_ms,
       client_p50_ms, client_p95_ms, client_p99_ms
FROM {{db}}.service_edges FINAL
WHERE {_RANGE}
  AND ({{service:String}} = '' OR client = {{service:String}} OR server = {{service:String}})
ORDER BY window_start, client, server, connection_type, dimensions
LIMIT {{limit:UInt32}}"""


def _q(prefix: str, merged: str, q: float) -> str:
    return f"{quantile_sql(f'{merged}.1', f'{merged}.2', q)} AS {prefix}_p{round(q * 100)}_ms"


# Totals over the range per edge (and dimension labels); latency quantiles come from the
# per-window sketches merged with sumMap, never from averaging per-window percentiles.
TOPOLOGY_SQL = f"""SELECT client, server, connection_type, dimensions,
       total_requests AS requests, total_failed AS failed,
       if(total_requests = 0, 0, total_failed / total_requests) AS error_rate,
       {_q("server", "server_sketch", 0.5)},
       {_q("server", "server_sketch", 0.95)},
       {_q("server", "server_sketch", 0.99)},
       {_q("client", "client_sketch", 0.5)},
       {_q("client", "client_sketch", 0.95)},
       {_q("client", "client_sketch", 0.99)},
       windows, first_start AS window_start, last_end AS window_end
FROM (
    SELECT client, server, connection_type, dimensions,
           sum(requests) AS total_requests, sum(failed) AS total_failed, count() AS windows,
           min(window_start) AS first_start, max(window_end) AS last_end,
           sumMap(server_keys, server_counts) AS server_sketch,
           sumMap(client_keys, client_counts) AS client_sketch
    FROM {{db}}.service_edges FINAL
    WHERE {_RANGE}
      AND ({{service:String}} = '' OR client = {{service:String}} OR server = {{service:String}})
    GROUP BY client, server, connection_type, dimensions
)
ORDER BY requests DESC, client, server, connection_type, dimensions
LIMIT {{limit:UInt32}}"""


@dataclass(frozen=True)
class NamedQuery:
    """A read query users may run by name."""

    name: str
    description: str
    sql: str


_ENTITY_OF_SERVICE = """entity = {service:String} OR startsWith(entity, concat({service:String}, '->'))
       OR endsWith(entity, concat('->', {service:String}))"""

ANOMALIES_SQL = f"""SELECT detected_at, window_start, window_end, entity_type, entity, incident_id,
       metric, observed, expected, score, severity, detectors, factors
FROM {{db}}.anomalies FINAL
WHERE {_RANGE}
  AND ({{service:String}} = '' OR {_ENTITY_OF_SERVICE})
ORDER BY window_start, entity_type, entity
LIMIT {{limit:UInt32}}"""

# The newest version of each insight; the service filter matches incidents it took part in.
INSIGHTS_SQL = f"""SELECT window_start, last_window, insight_id, version, status, severity,
       JSONExtractString(message, 'suspected_origin', 'entity') AS suspected_origin,
       narrator, grounded, updated_at,
       JSONExtractString(message, 'narrative', 'summary') AS summary
FROM {{db}}.insights FINAL
WHERE {_RANGE}
  AND ({{service:String}} = '' OR incident_id IN (
       SELECT incident_id FROM {{db}}.anomalies WHERE {_RANGE} AND ({_ENTITY_OF_SERVICE})))
ORDER BY window_start, insight_id
LIMIT {{limit:UInt32}}"""

NAMED_QUERIES: dict[str, NamedQuery] = {
    q.name: q
    for q in (
        NamedQuery("health", "per-service health windows", HEALTH_SQL),
        NamedQuery("edges", "per-edge windows (client -> server)", EDGES_SQL),
        NamedQuery("topology", "per-edge totals and merged latency over the range", TOPOLOGY_SQL),
        NamedQuery("anomalies", "anomalous service and edge windows with their incident", ANOMALIES_SQL),
        NamedQuery("insights", "incident insights, newest version each, with their summary", INSIGHTS_SQL),
    )
}


def run_named(
    backend: Backend,
    database: str,
    name: str,
    since_ms: int,
    until_ms: int | None = None,
    service: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[dict[str, Any]]:
    """Run named query `name` over windows starting in [since_ms, until_ms)."""
    query = NAMED_QUERIES.get(name)
    if query is None:
        known = ", ".join(sorted(NAMED_QUERIES))
        raise KeyError(f"unknown query {name!r}; known queries: {known}")
    params = {
        "since_ms": int(since_ms),
        "until_ms": NO_UNTIL_MS if until_ms is None else int(until_ms),
        "service": service or "",
        "limit": int(limit),
    }
    return backend.query(render(query.sql, db=check_database_name(database)), params)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        text = value.astimezone(timezone.utc).isoformat(timespec="milliseconds")
        return text.replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "tolist"):  # numpy values
        return _jsonable(value.tolist())
    return value


def rows_to_jsonable(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with only JSON types: UTC times as ISO-8601 `...Z`, non-finite floats as null."""
    convert: Callable[[Any], Any] = _jsonable
    return [{k: convert(v) for k, v in row.items()} for row in rows]
