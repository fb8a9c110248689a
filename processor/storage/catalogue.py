"""The query catalogue: named, parameterised, read-only queries with typed parameters and columns.

Every panel, API call and Grafana dashboard reads ClickHouse through one of these. A query is
written once, as a template, and rendered two ways:

- for ClickHouse itself (the API, `otel-insights query`, spec validation): parameters travel
  as `{name:Type}` query parameters, never spliced into the text;
- for Grafana's ClickHouse plugin: the time range and step become the plugin's macros
  (`$__timeFilter`, `$__fromTime`, `$__toTime`, `$__interval_s`), and a string parameter
  becomes `unhex('...')` of either a dashboard variable whose values are hex (its options
  come from `SELECT hex(name), name`) or a fixed value in hex. The plugin splices variables
  into the SQL text; hex keeps any name, however hostile, from being read as SQL.

Template tokens: `{db}`; `@window_range` (window_start inside the range), `@since`, `@until`,
`@step_s` (bucket width in seconds, 0 for the native windows); constants of the running
configuration `@window_ms`, `@min_requests`, `@err_degraded`, `@err_critical`; and user
parameters as `{name:Type}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from processor.config.components import HealthConfig
from processor.errors import ParamError
from processor.storage.schema import check_database_name

# Far enough ahead to mean "no upper bound" and still inside DateTime64(3)'s range.
NO_UNTIL_MS = 9_999_999_999_999
MAX_LIMIT = 10_000
MAX_STRING = 1024  # a name is untrusted text: long enough for any real one
MAX_STEP_S = 7 * 86_400

ParamType = Literal["string", "int"]


@dataclass(frozen=True)
class Param:
    """A typed parameter of a catalogue query."""

    name: str
    type: ParamType
    description: str
    default: Any = None  # None: required
    minimum: int = 0
    maximum: int = NO_UNTIL_MS
    choices: tuple[str, ...] = ()

    @property
    def ch_type(self) -> str:
        return {"string": "String", "int": "Int64"}[self.type]

    def coerce(self, raw: Any) -> Any:
        """The value as the query takes it, or ParamError naming the parameter."""
        if self.type == "int":
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise ParamError(f"{self.name}: must be a whole number")
            text = str(raw).strip()
            if not re.fullmatch(r"-?[0-9]{1,19}", text):  # ASCII digits only: str.isdigit takes '²'
                raise ParamError(f"{self.name}: {text[:20]!r} is not a whole number")
            value = int(text)
            if not self.minimum <= value <= self.maximum:
                raise ParamError(f"{self.name}: {value} is out of range [{self.minimum}, {self.maximum}]")
            return value
        if not isinstance(raw, str):
            raise ParamError(f"{self.name}: must be a string")
        if len(raw) > MAX_STRING:
            raise ParamError(f"{self.name}: longer than {MAX_STRING} characters")
        if self.choices and raw not in self.choices:
            raise ParamError(f"{self.name}: one of {list(self.choices)}")
        return raw


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # a ClickHouse type, as declared (checked against what the query returns)


# Every query takes the range and a row limit.
RANGE_PARAMS = (
    Param("since_ms", "int", "range start, epoch ms (windows starting at or after it)", 0),
    Param("until_ms", "int", "range end, epoch ms (windows starting before it)", NO_UNTIL_MS),
    Param("limit", "int", "rows at most", MAX_LIMIT, 0, MAX_LIMIT),
)
STEP = Param("step_s", "int", "bucket width in seconds (0: the windows themselves)", 0, 0, MAX_STEP_S)


@dataclass(frozen=True)
class CatalogueQuery:
    """A read query users may run by name."""

    name: str
    description: str
    sql: str  # the template (see the module docstring)
    columns: tuple[Column, ...]
    params: tuple[Param, ...] = ()
    shape: Literal["table", "timeseries", "nodes", "edges"] = "table"  # how panels read it
    entity: str = ""  # the parameter naming the entity the query is about ("" if none)
    all_params: tuple[Param, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "all_params", RANGE_PARAMS + self.params)
        tokens = set(re.findall(r"\{(\w+):(\w+)\}", self.sql))
        declared = {(p.name, p.ch_type) for p in (*self.all_params, STEP)}
        if not tokens <= declared:
            raise ValueError(f"{self.name}: undeclared parameters {sorted(tokens - declared)}")

    def param(self, name: str) -> Param | None:
        return next((p for p in self.all_params if p.name == name), None)

    def bind(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Typed, bounded parameter values from ``raw`` (defaults filled in); unknown names
        and bad values are ParamError."""
        known = {p.name: p for p in self.all_params}
        if "@step_s" in self.sql:
            known[STEP.name] = STEP
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ParamError(f"{self.name}: unknown parameter(s) {unknown}; known: {sorted(known)}")
        out: dict[str, Any] = {}
        for name, p in known.items():
            if name in raw and raw[name] is not None:
                out[name] = p.coerce(raw[name])
            elif p.default is None:
                raise ParamError(f"{self.name}: parameter {name!r} is required")
            else:
                out[name] = p.default
        if out["until_ms"] < out["since_ms"]:
            raise ParamError("until_ms: before since_ms")
        return out


@dataclass(frozen=True)
class Context:
    """What rendering needs from the running configuration."""

    database: str = "otel_insights"
    window_ms: int = 60_000
    health: HealthConfig = HealthConfig()

    def constants(self) -> dict[str, str]:
        h = self.health
        return {"@window_ms": str(int(self.window_ms)), "@min_requests": str(int(h.min_requests)),
                "@err_degraded": repr(float(h.error_rate_degraded)),
                "@err_critical": repr(float(h.error_rate_critical))}


_TOKEN = re.compile(r"@(window_range|since|until|step_s|window_ms|min_requests|err_degraded|err_critical)\b")


def _fill(sql: str, ctx: Context, tokens: Mapping[str, str]) -> str:
    values = {**ctx.constants(), **tokens}
    out = _TOKEN.sub(lambda m: values[m.group(0)], sql)
    return out.replace("{db}", check_database_name(ctx.database))


def render_clickhouse(query: CatalogueQuery, ctx: Context) -> str:
    """The query for ClickHouse, with `{name:Type}` parameters (see `bind`)."""
    since = "fromUnixTimestamp64Milli({since_ms:Int64}, 'UTC')"
    until = "fromUnixTimestamp64Milli({until_ms:Int64}, 'UTC')"
    return _fill(query.sql, ctx, {
        "@window_range": f"(window_start >= {since} AND window_start < {until})",
        "@since": since, "@until": until, "@step_s": "{step_s:Int64}",
    })


def hex_literal(value: str) -> str:
    """A string as SQL that cannot be anything but that string."""
    return f"unhex('{value.encode().hex().upper()}')"


def render_grafana(query: CatalogueQuery, ctx: Context, values: Mapping[str, Any] | None = None,
                   variables: Mapping[str, str] | None = None) -> str:
    """The query for Grafana's ClickHouse plugin: the dashboard's range and interval through
    its macros; each user parameter either a fixed value (``values``) or a dashboard
    variable (``variables``: parameter -> variable name, whose values are hex)."""
    values = dict(values or {})
    variables = dict(variables or {})
    sql = _fill(query.sql, ctx, {
        "@window_range": "$__timeFilter(window_start)",
        "@since": "$__fromTime", "@until": "$__toTime", "@step_s": "$__interval_s",
    })

    def param(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "limit":
            return str(int(values.get("limit", MAX_LIMIT)))
        p = query.param(name)
        if p is None:
            raise ValueError(f"{query.name}: unknown parameter {name}")
        if name in variables:
            if p.type != "string":
                raise ValueError(f"{query.name}.{name}: only string parameters take a variable")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", variables[name]):
                raise ValueError(f"variable name {variables[name]!r} is not an identifier")
            return f"unhex('${{{variables[name]}}}')"
        value = p.coerce(values[name]) if name in values else p.default
        if value is None:
            raise ParamError(f"{query.name}: parameter {name!r} is required")
        return hex_literal(value) if p.type == "string" else str(int(value))

    return re.sub(r"\{(\w+):\w+\}", param, sql)
