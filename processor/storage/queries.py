"""Running catalogue queries by name, and their rows as JSON.

There is no raw-SQL entry point: callers pick a query of the catalogue
(`processor.storage.catalogue_sql`) by name and pass typed parameters, which travel as
ClickHouse `{name:Type}` parameters. Window times come back as timezone-aware UTC
datetimes; `rows_to_jsonable` turns rows into plain JSON values (ISO-8601 `...Z`
strings, NaN/inf as null).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timezone
from typing import Any

from processor.errors import ParamError
from processor.since import parse_lookback
from processor.storage.backends import Backend
from processor.storage.catalogue import CatalogueQuery, Context, render_clickhouse
from processor.storage.catalogue_sql import CATALOGUE

CATALOGUE_LIMIT_0 = {"limit": 0}


def run_named(backend: Backend, ctx: Context, name: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Run catalogue query ``name`` with ``params`` (bound and bounded: ParamError on a bad one)."""
    query = lookup(name)
    return backend.query(render_clickhouse(query, ctx), query.bind(params))


def result_columns(backend: Backend, ctx: Context, name: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What the query returns, (name, type) each, found by running it with LIMIT 0."""
    query = lookup(name)
    return backend.columns(render_clickhouse(query, ctx), query.bind({**params, **CATALOGUE_LIMIT_0}))


def request_params(name: str, args: Mapping[str, Any] | Iterable[tuple[str, Any]],
                   now_ms: int | None = None) -> dict[str, Any]:
    """A request's parameters (a URL's query string) as bound parameters of catalogue query
    ``name``: ``since`` (default 15m) and ``until`` are look-backs unless ``since_ms`` /
    ``until_ms`` are given; the others are the query's own. ParamError, one line, on a
    parameter given twice, unknown, malformed or out of range."""
    query = lookup(name)
    pairs = list(args.items() if isinstance(args, Mapping) else args)
    raw: dict[str, Any] = {}
    for key, value in pairs:
        if key in raw:
            raise ParamError(f"{key}: given more than once")
        raw[key] = value
    for look, key in (("since", "since_ms"), ("until", "until_ms")):
        text = raw.pop(look, None)
        if text is not None and key in raw:
            raise ParamError(f"give {look} or {key}, not both")
        if text is not None or (look == "since" and key not in raw):
            raw[key] = parse_lookback(str(text if text is not None else "15m"), now_ms, look)
    return query.bind(raw)


def lookup(name: str) -> CatalogueQuery:
    query = CATALOGUE.get(name)
    if query is None:
        raise ParamError(f"unknown query {name!r}; known queries: {', '.join(sorted(CATALOGUE))}")
    return query


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
