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

from processor.since import parse_since
from processor.storage.backends import Backend
from processor.storage.catalogue import CatalogueQuery, Context, ParamError, render_clickhouse
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


def request_params(name: str, args: Mapping[str, str], now_ms: int | None = None) -> dict[str, Any]:
    """An API request's query string as bound parameters of catalogue query ``name``:
    ``since`` is a look-back (``15m``, the default) unless ``since_ms`` is given; the
    others are the query's own parameters. ParamError on anything wrong."""
    query = lookup(name)
    raw: dict[str, Any] = dict(args)
    since = raw.pop("since", None)
    if "since_ms" not in raw:
        try:
            raw["since_ms"] = parse_since(since or "15m", now_ms)
        except ValueError as exc:
            raise ParamError(f"since: {exc}") from None
    elif since is not None:
        raise ParamError("give since or since_ms, not both")
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
