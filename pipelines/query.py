"""Named queries for the CLI: from a running process's API when it holds the store, else direct."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from rich.markup import escape
from rich.table import Table

from pipelines.api import api_auth
from processor.config import Config
from processor.errors import OtelInsightsError, StorageError
from processor.storage.queries import lookup, request_params, rows_to_jsonable

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


def api_base(cfg: Config) -> str | None:
    """Where a running worker of this config answers (its prometheus exporter's endpoint),
    None when it serves no API."""
    if cfg.prometheus is None or not cfg.prometheus.api.enabled:
        return None
    host, port = cfg.prometheus.host_port
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://{host}:{port}"


def api_url(cfg: Config, name: str, since: str | None, params: Mapping[str, str] | None = None) -> str | None:
    base = api_base(cfg)
    if base is None:
        return None
    args = {**({"since": since} if since is not None else {}), **(params or {})}
    return f"{base}/api/query/{quote(name)}?{urlencode(args)}"


def api_request(cfg: Config, url: str, method: str = "GET", timeout_s: float = 10) -> Any:
    """A request to the running worker's API with its bearer token; the JSON it answers.
    An HTTP error is the worker's word and final: one OtelInsightsError line."""
    assert cfg.prometheus is not None
    auth = api_auth(cfg.prometheus)
    request = urllib.request.Request(url, headers=auth.headers(), method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            reason = exc.reason
        raise OtelInsightsError(f"{url.split('?')[0]} answered {exc.code}: {reason}") from None


def fetch(cfg: Config, name: str, since: str | None, params: Mapping[str, str] | None = None
          ) -> list[dict[str, Any]]:
    """Rows of catalogue query ``name``; ``params`` are its own parameters (strings, checked);
    ``since`` a look-back, or None when ``params`` gives since_ms."""
    bound = request_params(name, {**({"since": since} if since is not None else {}), **(params or {})})
    if cfg.clickhouse is None:
        raise OtelInsightsError("no clickhouse exporter in the traces pipeline")
    url = api_url(cfg, name, since, params)
    api_error = ""
    if cfg.clickhouse.backend == "chdb" and url:
        # chdb lets one process open a data directory: ask the process that holds it.
        try:
            return api_request(cfg, url)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            api_error = str(getattr(exc, "reason", exc))
    from processor.storage.open import open_store

    try:
        store = open_store(cfg.clickhouse, migrate=False, windows=cfg.windows)
    except StorageError as exc:
        hint = (f"; no running otel-insights answered at {url} ({api_error})" if api_error else "")
        raise StorageError(f"{exc}{hint}. Stop the process holding the data directory, or start "
                           "it with the prometheus exporter enabled so queries can go through it") from exc
    try:
        return rows_to_jsonable(store.catalogue(name, bound))
    except StorageError as exc:
        if "UNKNOWN_DATABASE" in str(exc) or "UNKNOWN_TABLE" in str(exc):
            raise StorageError(f"no otel-insights tables in {cfg.clickhouse.endpoint} yet: run "
                               "`otel-insights migrate --config ...` or start the pipeline") from exc
        raise
    finally:
        store.close()


def render_table(name: str, rows: list[dict[str, Any]]) -> Table:
    # The usual columns of the common queries; the declared ones (without bulky JSON) otherwise.
    cols = list(COLUMNS.get(name) or [c.name for c in lookup(name).columns if c.name not in ("message", "factors")])
    if "dimensions" not in cols and "connection_type" in cols and any(r.get("dimensions") for r in rows):
        cols.insert(cols.index("connection_type") + 1, "dimensions")  # processors.servicegraph.dimensions
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
