"""Dashboard specs: their JSON Schema and the checks every spec passes before it is published.

A spec is valid when it matches the schema (`schemas/dashboard-spec.schema.json`, linked from
`config/schemas/`), every data panel names a catalogue query with exactly that query's own
parameters in their types (or a variable of the spec), shows only columns the query declares,
panel types get the shape of data they draw, entities it names exist, the grid is 24 columns
without overlaps, and every query runs on ClickHouse with LIMIT 0 returning its declared
columns. Problems are plain sentences naming the panel, so a model can repair its spec.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema

from processor.config.duration import Duration
from processor.dashboards.layout import GRID_COLUMNS
from processor.errors import ParamError, StorageError
from processor.storage.catalogue import NO_UNTIL_MS
from processor.storage.catalogue_sql import CATALOGUE

SCHEMA_VERSION = 1
SCHEMA_FILE = "dashboard-spec.schema.json"
DATA_PANELS = frozenset({"timeseries", "stat", "table", "topology", "bar", "heatmap"})
# Which query shapes each panel type can draw.
PANEL_SHAPES: dict[str, frozenset[str]] = {
    "timeseries": frozenset({"timeseries"}), "heatmap": frozenset({"timeseries"}),
    "topology": frozenset({"nodes", "edges"}), "stat": frozenset({"table", "nodes", "edges"}),
    "bar": frozenset({"table", "nodes", "edges"}), "table": frozenset({"table", "nodes", "edges", "timeseries"}),
}
ENTITY_PARAMS = ("service", "client", "server", "incident_id")

Columns = Callable[[str, Mapping[str, Any]], list[tuple[str, str]]]  # (query, params) -> LIMIT 0 columns
Exists = Callable[[str, str], bool]  # (param name, value) -> the entity exists


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    text = resources.files("processor.dashboards").joinpath("schemas", SCHEMA_FILE).read_text()
    return json.loads(text)


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema())
    cls.check_schema(schema())
    return cls(schema(), format_checker=cls.FORMAT_CHECKER)


def shape_problems(spec: Any) -> list[str]:
    """Where ``spec`` breaks the JSON Schema (at most 20, each with its JSON path)."""
    out = []
    for err in sorted(_validator().iter_errors(spec), key=lambda e: list(e.absolute_path))[:20]:
        path = "/".join(str(p) for p in err.absolute_path) or "(top)"
        out.append(f"{path}: {err.message[:300]}")
    return out


def range_ms(spec: Mapping[str, Any], now_ms: int | None = None) -> tuple[int, int]:
    """The spec's time range as (since_ms, until_ms)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return _time_ms(spec["time_range"]["from"], now), _time_ms(spec["time_range"]["to"], now)


def _time_ms(text: str, now_ms: int) -> int:
    if text == "now":
        return now_ms
    if text.startswith("now-"):
        return now_ms - Duration.parse(text[4:]).ms
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def check(spec: Any, columns: Columns | None = None, exists: Exists | None = None,
          now_ms: int | None = None) -> list[str]:
    """Every problem of ``spec``; empty when it may be published. ``columns`` runs a query
    with LIMIT 0 (None: not run), ``exists`` says whether a named entity exists (None: not checked)."""
    problems = shape_problems(spec)
    if problems:
        return problems
    variables = {v["name"]: v for v in spec["variables"]}
    ids = [p["id"] for p in spec["panels"]]
    if len(set(ids)) != len(ids):
        problems.append("panels: two panels have the same id")
    problems += _grid_problems(spec["panels"])
    since_ms, until_ms = range_ms(spec, now_ms)
    if until_ms <= since_ms:
        problems.append("time_range: 'to' is not after 'from'")
    for panel in spec["panels"]:
        where = f"panel {panel['id']} ({panel['type']})"
        if panel["type"] not in DATA_PANELS:
            if panel.get("queries"):
                problems.append(f"{where}: a {panel['type']} panel takes no queries")
            if panel["type"] == "insight" and exists is not None and not exists("incident_id", panel["incident_id"]):
                problems.append(f"{where}: incident {panel['incident_id']!r} does not exist")
            continue
        refs = [q["ref"] for q in panel["queries"]]
        if len(set(refs)) != len(refs):
            problems.append(f"{where}: two queries have the same ref")
        declared: set[str] = set()
        shapes = set()
        for q in panel["queries"]:
            found = _query_problems(where, q, variables, exists)
            problems += found
            cq = CATALOGUE.get(q["name"])
            if cq is None:
                continue
            declared |= {c.name for c in cq.columns}
            shapes.add(cq.shape)
            if shapes - PANEL_SHAPES[panel["type"]]:
                problems.append(f"{where}: query {q['name']} gives {cq.shape} data, which a {panel['type']} "
                                f"panel cannot draw (it takes {sorted(PANEL_SHAPES[panel['type']])})")
            if columns is not None and not found:
                problems += _run_problems(where, q, variables, columns, since_ms, until_ms)
        if panel["type"] == "topology" and shapes != {"nodes", "edges"}:
            problems.append(f"{where}: a topology panel needs a nodes query and an edges query "
                            "(topology_nodes and topology)")
        if panel["type"] == "heatmap" and any(q["name"] != "latency_heatmap" for q in panel["queries"]):
            problems.append(f"{where}: a heatmap panel reads latency_heatmap")
        unknown = [f for f in panel.get("fields", ()) if f not in declared]
        if unknown and declared:
            problems.append(f"{where}: fields {unknown} are not columns of its queries")
    return problems


def _query_problems(where: str, q: Mapping[str, Any], variables: Mapping[str, Any], exists: Exists | None) -> list[str]:
    cq = CATALOGUE.get(q["name"])
    if cq is None:
        return [f"{where}: unknown query {q['name']!r}; the catalogue has {sorted(CATALOGUE)}"]
    own = {p.name: p for p in cq.params}
    allowed = {**own, "limit": cq.param("limit")}  # a panel may show fewer rows; never more
    out = []
    for name, value in q["params"].items():
        if name == "limit":
            try:
                allowed["limit"].coerce(value)  # type: ignore[union-attr]
            except (ParamError, AttributeError) as exc:
                out.append(f"{where}: query {cq.name}: {exc}")
            continue
        if name not in allowed:
            out.append(f"{where}: query {cq.name} has no parameter {name!r} (it takes {sorted(own) or 'none'}; "
                       "the time range comes from the dashboard)")
    for name, p in own.items():
        value = q["params"].get(name)
        if value is None:
            if p.default is None:
                out.append(f"{where}: query {cq.name} needs parameter {name!r}")
            continue
        if isinstance(value, dict):
            if value["var"] not in variables:
                out.append(f"{where}: parameter {name!r} names variable {value['var']!r}, which the spec does not define")
            elif p.type != "string":
                out.append(f"{where}: parameter {name!r} is an integer and cannot take a variable")
            continue
        try:
            p.coerce(value)
        except ParamError as exc:
            out.append(f"{where}: query {cq.name}: {exc}")
            continue
        if name in ENTITY_PARAMS and value not in ("", "*") and exists is not None and not exists(name, str(value)):
            out.append(f"{where}: {name} {value!r} does not exist in the stored data")
    return out


def bound_params(q: Mapping[str, Any], variables: Mapping[str, Any], since_ms: int, until_ms: int) -> dict[str, Any]:
    """A panel query's parameters for the catalogue: variables at their defaults, the range."""
    params = {k: (variables[v["var"]].get("default", "") if isinstance(v, dict) else v)
              for k, v in q["params"].items()}
    return {**params, "since_ms": max(0, since_ms), "until_ms": min(NO_UNTIL_MS, until_ms)}


def _run_problems(where: str, q: Mapping[str, Any], variables: Mapping[str, Any], columns: Columns,
                  since_ms: int, until_ms: int) -> list[str]:
    cq = CATALOGUE[q["name"]]
    try:
        got = [name for name, _ in columns(cq.name, bound_params(q, variables, since_ms, until_ms))]
    except StorageError as exc:
        if exc.transient:
            raise  # ClickHouse is away: no verdict on the spec
        return [f"{where}: query {cq.name} does not run: {str(exc).splitlines()[0][:300]}"]
    except ParamError as exc:
        return [f"{where}: query {cq.name}: {exc}"]
    want = [c.name for c in cq.columns]
    return [] if got == want else [f"{where}: query {cq.name} returned columns {got}, not {want}"]


def _grid_problems(panels: Iterable[Mapping[str, Any]]) -> list[str]:
    out = []
    placed: list[tuple[int, int, int, int, int]] = []
    for p in panels:
        g = p["grid"]
        if g["x"] + g["w"] > GRID_COLUMNS:
            out.append(f"panel {p['id']}: x + w = {g['x'] + g['w']} is past the grid's {GRID_COLUMNS} columns")
        for pid, x, y, w, h in placed:
            if g["x"] < x + w and x < g["x"] + g["w"] and g["y"] < y + h and y < g["y"] + g["h"]:
                out.append(f"panel {p['id']} overlaps panel {pid}")
        placed.append((p["id"], g["x"], g["y"], g["w"], g["h"]))
    return out


def dashboard_id(kind: str, key: str) -> str:
    """A stable id: kind and a slug of the key (an incident id or a service name, any text)."""
    slug = re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")[:60] or "x"
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{kind}-{slug}-{digest}"


def encode(spec: Mapping[str, Any]) -> bytes:
    return json.dumps(spec, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
