"""Hourly rollups of the final windows: kept exactly in step with the final rows, read by the map's long ranges.

A rollup row is a function of the final rows of its hour (counts summed, sketches merged
with sumMap, the newest window's health), computed inside ClickHouse (INSERT ... SELECT ...
FINAL) and replacing the hour's previous build. Whether an hour is stale is decided by a
fingerprint, the XOR of a hash of each final row (its identity, version and counts): a new
window, a late correction or a replay changes a final row and so the hour's fingerprint,
and nothing else does. Rebuilding from the final rows (never adding to the rollup) is what
keeps it exact through corrections, replays and two builders racing: the last build of an
hour is always the hour as its final rows say.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from processor.storage.backends import Backend
from processor.storage.schema import check_database_name, render

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Rollup:
    final: str  # the final table
    hourly: str
    row_hash: str  # a final row's identity, version and counts
    build: str  # INSERT ... SELECT of one range's hours, from the final rows


_RANGE = """window_start >= fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')
  AND window_start < fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')"""
_HOURS = f"""(SELECT toDateTime64(toStartOfHour(window_start), 3, 'UTC') AS hour, *
       FROM {{db}}.{{table}} FINAL WHERE {_RANGE})"""

_HEALTH_HASH = "cityHash64(service, window_start, version, calls, errors)"
_EDGE_HASH = "cityHash64(client, server, connection_type, toString(dimensions), window_start, version, requests, failed)"

HEALTH = Rollup("service_health", "service_health_hourly", _HEALTH_HASH, f"""INSERT INTO {{db}}.service_health_hourly
    (window_start, window_end, service, calls, errors, health, latency_keys, latency_counts,
     windows, fingerprint, built_at)
SELECT hour, max(window_end), service, sum(calls), sum(errors), argMax(health, window_start),
       tupleElement(sumMap(latency_keys, latency_counts) AS sk, 1), tupleElement(sk, 2),
       count(), groupBitXor({_HEALTH_HASH}), now64(3)
FROM {_HOURS.replace("{table}", "service_health")}
GROUP BY hour, service""")

EDGES = Rollup("service_edges", "service_edges_hourly", _EDGE_HASH, f"""INSERT INTO {{db}}.service_edges_hourly
    (window_start, window_end, client, server, connection_type, dimensions, requests, failed,
     server_keys, server_counts, client_keys, client_counts, windows, fingerprint, built_at)
SELECT hour, max(window_end), client, server, connection_type, dimensions, sum(requests), sum(failed),
       tupleElement(sumMap(server_keys, server_counts) AS ssk, 1), tupleElement(ssk, 2),
       tupleElement(sumMap(client_keys, client_counts) AS csk, 1), tupleElement(csk, 2),
       count(), groupBitXor({_EDGE_HASH}), now64(3)
FROM {_HOURS.replace("{table}", "service_edges")}
GROUP BY hour, client, server, connection_type, dimensions""")

ROLLUPS = (HEALTH, EDGES)


def _stale_sql(r: Rollup) -> str:
    return f"""SELECT toUnixTimestamp64Milli(f.hour) AS hour_ms
FROM (SELECT toDateTime64(toStartOfHour(window_start), 3, 'UTC') AS hour, groupBitXor({r.row_hash}) AS fp
      FROM {{db}}.{r.final} FINAL WHERE {_RANGE} GROUP BY hour) AS f
LEFT JOIN (SELECT window_start AS hour, groupBitXor(fingerprint) AS fp
           FROM {{db}}.{r.hourly} FINAL WHERE {_RANGE} GROUP BY hour) AS h
ON f.hour = h.hour
WHERE f.fp != h.fp
ORDER BY hour_ms"""


def stale_hours(backend: Backend, database: str, since_ms: int, until_ms: int) -> dict[str, list[int]]:
    """Hours in [since, until) whose rollup is missing or differs from their final rows, per final table."""
    db = check_database_name(database)
    # Whole hours only: a part of an hour would never match the whole hour's rollup.
    since_ms = int(since_ms) // HOUR_MS * HOUR_MS
    until_ms = -(-int(until_ms) // HOUR_MS) * HOUR_MS
    params = {"since_ms": since_ms, "until_ms": until_ms}
    return {r.final: [int(row["hour_ms"]) for row in backend.query(render(_stale_sql(r), db=db), params)]
            for r in ROLLUPS}


def rebuild(backend: Backend, database: str, table: str, hours: Iterable[int]) -> int:
    """Rebuild the rollup rows of ``hours`` (hour starts, epoch ms) of one final table."""
    r = next(x for x in ROLLUPS if x.final == table)
    db = check_database_name(database)
    n = 0
    for hour in sorted(set(hours)):
        backend.command(render(r.build, db=db), {"since_ms": hour, "until_ms": hour + HOUR_MS})
        n += 1
    return n
