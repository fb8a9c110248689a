"""Named queries for the CLI: from a running process's API when it holds the store, else direct."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from rich.markup import escape
from rich.table import Table

from processor.config import Config
from processor.errors import OtelInsightsError, StorageError
from processor.since import parse_since
from processor.storage.queries import rows_to_jsonable

HEALTH_COLOURS = {"healthy": "green", "degraded": "yellow", "critical": "red",
                  "insufficient_data": "dim"}

COLUMNS = {
    "health": ["window_start", "window_end", "service", "calls", "errors", "p50_ms", "p95_ms",
               "p99_ms", "health"],
    "edges": ["window_start", "window_end", "client", "server", "connection_type", "requests",
              "failed", "server_p50_ms", "server_p95_ms", "server_p99_ms", "client_p50_ms",
              "client_p95_ms", "client_p99_ms"],
    "topology": ["client", "server", "connection_type", "requests", "failed", "error_rate",
                 "server_p95_ms"],
    "anomalies": ["window_start", "entity_type", "entity", "incident_id", "metric", "observed",
                  "expected", "score", "severity"],
    "insights": ["window_start", "insight_id", "version", "status", "severity", "suspected_origin",
                 "narrator", "grounded", "summary"],
}


def api_url(cfg: Config, name: str, since: str) -> str | None:
    if cfg.prometheus is None:
        return None
    host, port = cfg.prometheus.host_port
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://{host}:{port}/api/query/{name}?since={since}"


def _from_api(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def fetch(cfg: Config, name: str, since: str) -> list[dict[str, Any]]:
    since_ms = parse_since(since)
    if cfg.clickhouse is None:
        raise OtelInsightsError("no clickhouse exporter in the traces pipeline")
    url = api_url(cfg, name, since)
    api_error = ""
    if cfg.clickhouse.backend == "chdb" and url:
        # chdb lets one process open a data directory: ask the process that holds it.
        try:
            return _from_api(url)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            api_error = str(getattr(exc, "reason", exc))
    from processor.storage.open import open_store

    try:
        store = open_store(cfg.clickhouse, migrate=False)
    except StorageError as exc:
        hint = (f"; no running otel-insights answered at {url} ({api_error})" if api_error else "")
        raise StorageError(f"{exc}{hint}. Stop the process holding the data directory, or start "
                           "it with the prometheus exporter enabled so queries can go through it") from exc
    try:
        return rows_to_jsonable(store.named_query(name, since_ms))
    except StorageError as exc:
        if "UNKNOWN_DATABASE" in str(exc) or "UNKNOWN_TABLE" in str(exc):
            raise StorageError(f"no otel-insights tables in {cfg.clickhouse.endpoint} yet: run "
                               "`otel-insights migrate --config ...` or start the pipeline") from exc
        raise
    finally:
        store.close()


def render_table(name: str, rows: list[dict[str, Any]]) -> Table:
    cols = list(COLUMNS[name])
    if any(r.get("dimensions") for r in rows):  # processors.servicegraph.dimensions
        cols.insert(cols.index("connection_type") + 1, "dimensions")
    t = Table(title=f"{name} ({len(rows)} rows)")
    for c in cols:
        t.add_column(c, justify="right" if c not in ("service", "client", "server", "health", "dimensions",
                                                    "connection_type", "window_start", "window_end") else "left")
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float):
                cells.append(f"{v:.3f}" if c == "error_rate" else f"{v:.2f}")
            elif c == "health" and v:
                cells.append(f"[{HEALTH_COLOURS.get(str(v), 'white')}]{v}[/]")
            elif isinstance(v, dict):
                cells.append(escape(", ".join(f"{k}={x}" for k, x in v.items())))
            else:  # names are span attributes: never rich markup
                cells.append("" if v is None else escape(str(v)))
        t.add_row(*cells)
    return t
