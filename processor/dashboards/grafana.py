"""Dashboard specs as Grafana dashboards (grafana-foundation-sdk), querying ClickHouse through
the grafana-clickhouse-datasource plugin with the catalogue's SQL.

Each data panel's queries are the catalogue queries of the spec rendered for the plugin
(`render_grafana`: its macros for the range and step, string parameters as `unhex` of hex
literals or hex-valued variables). A `datasource` variable picks the ClickHouse data source
(the provisioned one by default), so an exported dashboard imports into any Grafana. Text
panels are plain text (code mode), never Markdown or HTML: a name in them is data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Self

from grafana_foundation_sdk.builders import (
    barchart,
    common,
    heatmap,
    nodegraph,
    stat,
    statetimeline,
    table,
    text,
    timeseries,
)
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as gm
from grafana_foundation_sdk.models import text as text_models

from processor.storage.catalogue import Context, render_grafana
from processor.storage.catalogue_sql import CATALOGUE

PLUGIN = "grafana-clickhouse-datasource"
DATASOURCE_UID = "otel-insights-clickhouse"  # the provisioned data source (config/grafana/provisioning)
DATASOURCE = gm.DataSourceRef(type_val=PLUGIN, uid="${datasource}")
COLORS = {"green": "green", "yellow": "yellow", "red": "red", "blue": "blue", "grey": "text"}


class ClickHouseQuery(cogvariants.Dataquery):
    """A target of the ClickHouse plugin in SQL mode (its `CHSqlQuery`)."""

    def __init__(self, ref: str, sql: str, timeseries: bool) -> None:
        self.ref, self.sql, self.timeseries = ref, sql, timeseries

    def to_json(self) -> dict[str, object]:
        # format 1 (table) always: sqlds' time-series format (0) pivots long rows on every
        # string column, which would split a series by its `health` text. One frame with a
        # time field and number fields is what the time series and heatmap panels read.
        return {"refId": self.ref, "datasource": DATASOURCE.to_json(), "editorType": "sql",
                "rawSql": self.sql, "format": 1,
                "queryType": "timeseries" if self.timeseries else "table", "pluginVersion": "4"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        return cls(str(data["refId"]), str(data["rawSql"]), data.get("queryType") == "timeseries")


class ClickHouseQueryBuilder(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, query: ClickHouseQuery) -> None:
        self._query = query

    def build(self) -> cogvariants.Dataquery:
        return self._query


def export(spec: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """The Grafana dashboard JSON of a spec."""
    d = (gd.Dashboard(shown(spec["title"])[:300]).uid(_uid(str(spec["id"]))).description(shown(spec["description"]))
         .tags(["otel-insights", str(spec["kind"]), str(spec["audience"])])
         .time(spec["time_range"]["from"], spec["time_range"]["to"]).timezone("utc")
         .refresh(spec["refresh"] if spec["refresh"] != "off" else "").editable())
    variables: dict[str, str] = {}
    d.with_variable(gd.DatasourceVariable("datasource").label("ClickHouse").type(PLUGIN)
                    .current(gm.VariableOption(selected=True, text=DATASOURCE_UID, value=DATASOURCE_UID)))
    for var in spec["variables"]:
        variables[var["name"]] = var["name"]
        default = var.get("default", "")
        sql = render_grafana(CATALOGUE[var["query"]], ctx)
        v = (gd.QueryVariable(var["name"]).label(var["label"]).datasource(DATASOURCE).query(sql)
             .refresh(gm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(gm.VariableSort.ALPHABETICAL_ASC))
        if default:
            v.current(gm.VariableOption(selected=True, text=default, value=default.encode().hex().upper()))
        d.with_variable(v)
    for panel in spec["panels"]:
        d.with_panel(_panel(panel, ctx, variables))
    return json.loads(json.dumps(d.build(), cls=JSONEncoder))


def shown(text: str) -> str:
    """Text for a title, description or text panel: Grafana expands `$name` and `${...}` in
    them (dashboard variables, `${__user.login}`), so a name's `$` is shown as a full-width
    dollar sign, which Grafana leaves alone."""
    return str(text).replace("$", "\uff04")


def _uid(spec_id: str) -> str:
    """Grafana uids are at most 40 characters: keep the start and the digest at the end."""
    return spec_id if len(spec_id) <= 40 else spec_id[:29] + "-" + spec_id[-10:]


def _targets(panel: Mapping[str, Any], ctx: Context, variables: Mapping[str, str]) -> list[Any]:
    out = []
    for q in panel.get("queries", ()):
        cq = CATALOGUE[q["name"]]
        values = {k: v for k, v in q["params"].items() if not isinstance(v, dict)}
        var_of = {k: variables[v["var"]] for k, v in q["params"].items() if isinstance(v, dict)}
        sql = render_grafana(cq, ctx, values, var_of)
        out.append(ClickHouseQueryBuilder(ClickHouseQuery(q["ref"], sql, cq.shape == "timeseries")))
    return out


def _thresholds(panel: Mapping[str, Any]) -> gd.ThresholdsConfig | None:
    steps = panel.get("thresholds") or []
    if not steps:
        return None
    return gd.ThresholdsConfig().mode(gm.ThresholdsMode.ABSOLUTE).steps(
        [gm.Threshold(value=s["value"], color=COLORS[s["color"]]) for s in steps])


def _only(fields: list[str], keep: tuple[str, ...] = ()) -> gm.DataTransformerConfig:
    """Show only the spec's fields (and the time column a series needs)."""
    return gm.DataTransformerConfig(id_val="filterFieldsByName",
                                    options={"include": {"names": [*keep, *fields]}})


def _graph_fields(ref: str, names: dict[str, str]) -> gm.DataTransformerConfig:
    """Keep and rename the fields of one frame for the node graph."""
    return gm.DataTransformerConfig(id_val="organize", filter_val=gm.MatcherConfig(id_val="byRefId", options=ref),
                                    options={"includeByName": {k: True for k in names},
                                             "renameByName": {k: v for k, v in names.items() if k != v}})


def _health_colours() -> gm.ValueMap:
    return gm.ValueMap(options={h: gm.ValueMappingResult(color=c, text=h) for h, c in (
        ("healthy", "green"), ("degraded", "yellow"), ("critical", "red"), ("insufficient_data", "gray"))})


def _panel(panel: Mapping[str, Any], ctx: Context, variables: Mapping[str, str]) -> Any:
    kind = panel["type"]
    fields = list(panel.get("fields", ()))
    unit = panel.get("unit", "none")
    b: Any
    if kind == "timeseries" and not any(q["name"] == "health_timeline" for q in panel.get("queries", ())):
        b = timeseries.Panel().unit(unit)
        if fields:
            b.with_transformation(_only(fields, ("time",)))
    elif kind == "stat":
        b = stat.Panel().unit(unit).reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"])
                                                   .fields("/^(" + "|".join(fields) + ")$/" if fields else ""))
    elif kind == "table":
        b = table.Panel().unit(unit)
        if fields:
            b.with_transformation(_only(fields))
    elif kind == "bar":
        b = barchart.Panel().unit(unit)
        if fields:
            b.with_transformation(_only(fields, ("client", "server")))
    elif kind == "heatmap":
        b = (heatmap.Panel().calculate(False).rows_frame(heatmap.RowsHeatmapOptions()
             .layout(common_models.HeatmapCellLayout.LE)).y_axis(heatmap.YAxisConfig().unit(unit)))
    elif kind == "topology":
        # The node graph reads fields by name: nodes (ref A) and edges (ref B) get theirs.
        b = (nodegraph.Panel().nodes(nodegraph.NodeOptions().main_stat_unit("reqps").secondary_stat_unit("ms"))
             .edges(nodegraph.EdgeOptions().main_stat_unit("reqps").secondary_stat_unit("percentunit"))
             .with_transformation(_graph_fields("A", {"id": "id", "title": "title", "requests_per_s": "mainstat",
                                                      "p95_ms": "secondarystat", "color": "color"}))
             .with_transformation(_graph_fields("B", {"id": "id", "source": "source", "target": "target",
                                                      "requests_per_s": "mainstat", "error_rate": "secondarystat",
                                                      "color": "color"})))
    elif kind == "timeseries" and any(q["name"] == "health_timeline" for q in panel.get("queries", ())):
        # One row per service: the long rows (time, service, health) split by service.
        b = (statetimeline.Panel().mappings([_health_colours()])
             .with_transformation(gm.DataTransformerConfig(id_val="partitionByValues", options={"fields": ["service"]})))
    elif kind == "insight":
        b = table.Panel().with_transformation(_only(["updated_at", "severity", "status", "suspected_origin", "summary"]))
        b.with_target(ClickHouseQueryBuilder(ClickHouseQuery("A", render_grafana(
            CATALOGUE["insight"], ctx, {"incident_id": panel["incident_id"]}), False)))
    else:  # text: plain text, whatever it holds
        b = (text.Panel().mode(text_models.TextMode.CODE).content(shown(panel.get("text", "")))
             .code(text.CodeOptions().language(text_models.CodeLanguage.PLAINTEXT).show_line_numbers(False)))
    g = panel["grid"]
    b.id(int(panel["id"])).title(shown(panel["title"])).grid_pos(gm.GridPos(h=g["h"], w=g["w"], x=g["x"], y=g["y"]))
    if panel.get("description"):
        b.description(shown(panel["description"]))
    if kind not in ("text", "insight"):
        b.datasource(DATASOURCE)
        for t in _targets(panel, ctx, variables):
            b.with_target(t)
    thresholds = _thresholds(panel)
    if thresholds is not None and hasattr(b, "thresholds"):
        b.thresholds(thresholds)
    return b
