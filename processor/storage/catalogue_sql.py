"""The catalogue's queries: their SQL templates, parameters and declared result columns.

Latency quantiles always come from stored sketches merged with sumMap, never from averaging
percentiles; rates are per second of the bucket (or of the range). An edge with
`dimensions` has a row per label set: `edges` and `topology` keep them apart (and carry the
labels), the other edge queries total over them (a node's or an edge's traffic is the sum
of its label sets' rows, each counted once). Health of services is the
stored health of their windows (the one definition, with its baseline); nodes and edges that
have no service windows (databases, virtual nodes) get the error-rate part of it.
"""

from __future__ import annotations

from processor.storage.catalogue import CatalogueQuery, Column, Param
from processor.storage.sketch_sql import SKETCH_GAMMA, quantile_sql

_T = "DateTime64(3, 'UTC')"
_F = "Float64"
_NF = "Nullable(Float64)"
_S = "String"
_LS = "LowCardinality(String)"
_U = "UInt64"
# An edge's dimension labels (processors.servicegraph.dimensions): client_<attribute> /
# server_<attribute> -> value, {} without dimensions.
_DIMS = "Map(LowCardinality(String), String)"

SERVICE_OPT = Param("service", "string", "a service name ('' for all)", "")
SERVICE = Param("service", "string", "a service name")
INCIDENT_OPT = Param("incident_id", "string", "an incident id ('' for all)", "")

# One bucket of a time series: the step, never finer than a window.
# Whole windows per bucket: a bucket of one and a half windows would hold one or two of them
# in turn, and its rate would zig-zag.
_BUCKET_MS = "(@window_ms * greatest(1, intDiv(@step_s * 1000 + @window_ms - 1, @window_ms)))"
_TIME = f"fromUnixTimestamp64Milli(intDiv(toUnixTimestamp64Milli(window_start), {_BUCKET_MS}) * {_BUCKET_MS}, 'UTC')"
_HEALTH_RANK = ("multiIf(health = 'critical', 4, health = 'degraded', 3, health = 'healthy', 2, "
                "health = 'insufficient_data', 1, 0)")
_WORST_HEALTH = f"argMax(health, {_HEALTH_RANK})"


def _error_health(requests: str, rate: str) -> str:
    """The error-rate part of the health definition."""
    return (f"multiIf({requests} < @min_requests, 'insufficient_data', {rate} >= @err_critical, 'critical', "
            f"{rate} >= @err_degraded, 'degraded', 'healthy')")


def _color(health: str) -> str:
    """The health's colour, as Grafana's node graph and the UI draw it."""
    return (f"multiIf({health} = 'critical', 'red', {health} = 'degraded', 'yellow', {health} = 'healthy', 'green', "
            "'gray')")


def _quantiles(sketch: str, prefix: str) -> str:
    return ",\n       ".join(f"{quantile_sql(f'{sketch}.1', f'{sketch}.2', q)} AS {prefix}p{round(q * 100)}_ms"
                             for q in (0.5, 0.95, 0.99))


def _cols(spec: str) -> tuple[Column, ...]:
    """'name:Type, ...' -> columns (types may hold commas inside parentheses)."""
    out, depth, cur = [], 0, ""
    for ch in spec + ",":
        if ch == "," and depth == 0:
            name, _, typ = cur.strip().partition(":")
            out.append(Column(name.strip(), typ.strip()))
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    return tuple(out)


_SERVICE_FILTER = "({service:String} = '' OR service = {service:String})"
_EDGE_OF_SERVICE = "({service:String} = '' OR client = {service:String} OR server = {service:String})"
_ENTITY_OF_SERVICE = """({service:String} = '' OR entity = {service:String}
       OR startsWith(entity, concat({service:String}, '->')) OR endsWith(entity, concat('->', {service:String})))"""
_RANGE_S = ("ifNull((SELECT greatest(1, dateDiff('millisecond', min(window_start), max(window_end)) / 1000) "
            "FROM {db}.service_health FINAL WHERE @window_range), 1)")

HEALTH = CatalogueQuery("health", "per-service health windows", f"""SELECT window_start, window_end, service, calls,
       errors, error_rate, p50_ms, p95_ms, p99_ms, health
FROM {{db}}.service_health FINAL
WHERE @window_range AND {_SERVICE_FILTER}
ORDER BY window_start, service
LIMIT {{limit:Int64}}""", _cols(f"window_start:{_T}, window_end:{_T}, service:{_LS}, calls:{_U}, errors:{_U}, "
                               f"error_rate:{_F}, p50_ms:{_F}, p95_ms:{_F}, p99_ms:{_F}, health:{_LS}"),
    (SERVICE_OPT,), entity="service")

EDGES = CatalogueQuery("edges", "per-edge windows (client -> server, with their dimension labels)",
                       f"""SELECT window_start, window_end, client, server,
       connection_type, dimensions, requests, failed, error_rate, server_p50_ms, server_p95_ms, server_p99_ms,
       client_p50_ms, client_p95_ms, client_p99_ms
FROM {{db}}.service_edges FINAL
WHERE @window_range AND {_EDGE_OF_SERVICE}
ORDER BY window_start, client, server, connection_type, dimensions
LIMIT {{limit:Int64}}""", _cols(f"window_start:{_T}, window_end:{_T}, client:{_LS}, server:{_LS}, "
                               f"connection_type:{_LS}, dimensions:{_DIMS}, requests:{_U}, failed:{_U}, error_rate:{_F}, "
                               f"server_p50_ms:{_F}, server_p95_ms:{_F}, server_p99_ms:{_F}, "
                               f"client_p50_ms:{_F}, client_p95_ms:{_F}, client_p99_ms:{_F}"),
    (SERVICE_OPT,), entity="service")

_EDGE_TOTAL_COLS = (f"requests:{_U}, failed:{_U}, error_rate:{_F}, requests_per_s:{_F}, "
                    f"server_p50_ms:{_NF}, server_p95_ms:{_NF}, server_p99_ms:{_NF}, "
                    f"client_p50_ms:{_NF}, client_p95_ms:{_NF}, client_p99_ms:{_NF}, health:{_S}")

# A topology row's id: unique per (client, server, connection type, dimension labels).
_EDGE_ID = ("concat(client, ' -> ', server, if(connection_type = '', '', concat(' (', connection_type, ')')), "
            "if(empty(dimensions), '', concat(' [', arrayStringConcat(arrayMap((k, v) -> concat(k, '=', v), "
            "mapKeys(dimensions), mapValues(dimensions)), ', '), ']')))")

TOPOLOGY = CatalogueQuery("topology", "edges of the service map (one per dimension label set): totals and merged latency over the range",
                          f"""SELECT {_EDGE_ID} AS id,
       client AS source, server AS target, client, server, connection_type, dimensions,
       total_requests AS requests, total_failed AS failed,
       if(total_requests = 0, 0, total_failed / total_requests) AS error_rate,
       total_requests / {_RANGE_S} AS requests_per_s,
       {_quantiles("server_sketch", "server_")},
       {_quantiles("client_sketch", "client_")},
       {_error_health("total_requests", "error_rate")} AS health, {_color("health")} AS color,
       windows, first_start AS window_start, last_end AS window_end
FROM (
    SELECT client, server, connection_type, dimensions,
           sum(requests) AS total_requests, sum(failed) AS total_failed, count() AS windows,
           min(window_start) AS first_start, max(window_end) AS last_end,
           sumMap(server_keys, server_counts) AS server_sketch,
           sumMap(client_keys, client_counts) AS client_sketch
    FROM {{db}}.service_edges FINAL
    WHERE @window_range AND {_EDGE_OF_SERVICE}
    GROUP BY client, server, connection_type, dimensions
)
ORDER BY requests DESC, client, server, connection_type, dimensions
LIMIT {{limit:Int64}}""", _cols(f"id:{_S}, source:{_LS}, target:{_LS}, client:{_LS}, server:{_LS}, connection_type:{_LS}, "
                               f"dimensions:{_DIMS}, "
                               f"{_EDGE_TOTAL_COLS}, color:{_S}, windows:{_U}, window_start:{_T}, window_end:{_T}"),
    (SERVICE_OPT,), shape="edges", entity="service")

TOPOLOGY_NODES = CatalogueQuery("topology_nodes", "nodes of the service map: kind, traffic, errors, merged latency, health",
                                f"""SELECT node AS id, node AS title, node,
       multiIf(has_health, 'service', is_db, 'database', is_msg, 'messaging', is_virtual, 'virtual', 'service') AS kind,
       if(has_health, svc_calls, in_requests) AS requests,
       if(has_health, svc_errors, in_failed) AS errors,
       if(requests = 0, 0, errors / requests) AS error_rate,
       requests / {_RANGE_S} AS requests_per_s,
       {_quantiles("sketch", "")},
       if(has_health, last_health, {_error_health("requests", "error_rate")}) AS health, {_color("health")} AS color
FROM (
    SELECT node, max(h) AS has_health, max(db) AS is_db, max(msg) AS is_msg, max(virt) AS is_virtual,
           sum(calls) AS svc_calls, sum(errs) AS svc_errors, sum(in_req) AS in_requests, sum(in_fail) AS in_failed,
           argMaxIf(health, window_start, h = 1) AS last_health,
           if(max(h) = 1, sumMapIf(kh, ch, h = 1), sumMapIf(kh, ch, h = 0)) AS sketch
    FROM (
        SELECT toString(service) AS node, toUInt8(1) AS h, toUInt8(0) AS db, toUInt8(0) AS msg, toUInt8(0) AS virt,
               calls, errors AS errs, toUInt64(0) AS in_req, toUInt64(0) AS in_fail,
               latency_keys AS kh, latency_counts AS ch, window_start, toString(health) AS health
        FROM {{db}}.service_health FINAL WHERE @window_range
        UNION ALL
        SELECT toString(server), 0, connection_type = 'database', connection_type = 'messaging_system',
               connection_type = 'virtual_node', 0, 0, requests, failed, client_keys, client_counts, window_start, ''
        FROM {{db}}.service_edges FINAL WHERE @window_range
        UNION ALL
        SELECT toString(client), 0, 0, 0, connection_type = 'virtual_node', 0, 0, 0, 0,
               emptyArrayInt32(), emptyArrayUInt64(), window_start, ''
        FROM {{db}}.service_edges FINAL WHERE @window_range
    )
    GROUP BY node
)
WHERE {_SERVICE_FILTER.replace("service =", "node =")}
ORDER BY requests DESC, node
LIMIT {{limit:Int64}}""", _cols(f"id:{_LS}, title:{_LS}, node:{_LS}, kind:{_S}, requests:{_U}, errors:{_U}, error_rate:{_F}, "
                               f"requests_per_s:{_F}, p50_ms:{_NF}, p95_ms:{_NF}, p99_ms:{_NF}, health:{_S}, color:{_S}"),
    (SERVICE_OPT,), shape="nodes", entity="service")

SERVICE_RED = CatalogueQuery("service_red", "a service's rate, errors and duration (RED) over time",
                             f"""SELECT time, requests_per_s, errors_per_s, error_rate,
       {_quantiles("sketch", "")}, health
FROM (
    SELECT {_TIME} AS time,
           sum(calls) * 1000 / {_BUCKET_MS} AS requests_per_s, sum(errors) * 1000 / {_BUCKET_MS} AS errors_per_s,
           if(sum(calls) = 0, 0, sum(errors) / sum(calls)) AS error_rate,
           sumMap(latency_keys, latency_counts) AS sketch, toString({_WORST_HEALTH}) AS health
    FROM {{db}}.service_health FINAL
    WHERE @window_range AND service = {{service:String}}
    GROUP BY time
)
ORDER BY time
LIMIT {{limit:Int64}}""", _cols(f"time:{_T}, requests_per_s:{_F}, errors_per_s:{_F}, error_rate:{_F}, "
                               f"p50_ms:{_NF}, p95_ms:{_NF}, p99_ms:{_NF}, health:{_S}"),
    (SERVICE,), shape="timeseries", entity="service")

CLIENT = Param("client", "string", "the calling node")
SERVER = Param("server", "string", "the called node")
CONNECTION_OPT = Param("connection_type", "string", "'', messaging_system, database or virtual_node ('*' for any)", "*")

EDGE_SERIES = CatalogueQuery("edge_series", "an edge's latency percentiles and errors over time",
                             f"""SELECT time, requests_per_s, failed_per_s, error_rate,
       {_quantiles("server_sketch", "server_")},
       {_quantiles("client_sketch", "client_")}
FROM (
    SELECT {_TIME} AS time,
           sum(requests) * 1000 / {_BUCKET_MS} AS requests_per_s, sum(failed) * 1000 / {_BUCKET_MS} AS failed_per_s,
           if(sum(requests) = 0, 0, sum(failed) / sum(requests)) AS error_rate,
           sumMap(server_keys, server_counts) AS server_sketch, sumMap(client_keys, client_counts) AS client_sketch
    FROM {{db}}.service_edges FINAL
    WHERE @window_range AND client = {{client:String}} AND server = {{server:String}}
      AND ({{connection_type:String}} = '*' OR connection_type = {{connection_type:String}})
    GROUP BY time
)
ORDER BY time
LIMIT {{limit:Int64}}""", _cols(f"time:{_T}, requests_per_s:{_F}, failed_per_s:{_F}, error_rate:{_F}, "
                               f"server_p50_ms:{_NF}, server_p95_ms:{_NF}, server_p99_ms:{_NF}, "
                               f"client_p50_ms:{_NF}, client_p95_ms:{_NF}, client_p99_ms:{_NF}"),
    (CLIENT, SERVER, CONNECTION_OPT), shape="timeseries", entity="client")

SERVICE_EDGES = CatalogueQuery("service_edges", "a service's inbound and outbound edges over the range",
                               f"""SELECT if(server = {{service:String}}, 'inbound', 'outbound') AS direction,
       if(server = {{service:String}}, client, server) AS peer, client, server, connection_type,
       total_requests AS requests, total_failed AS failed,
       if(total_requests = 0, 0, total_failed / total_requests) AS error_rate,
       total_requests / {_RANGE_S} AS requests_per_s,
       {_quantiles("server_sketch", "server_")},
       {_quantiles("client_sketch", "client_")},
       {_error_health("total_requests", "error_rate")} AS health
FROM (
    SELECT client, server, connection_type, sum(requests) AS total_requests, sum(failed) AS total_failed,
           sumMap(server_keys, server_counts) AS server_sketch, sumMap(client_keys, client_counts) AS client_sketch
    FROM {{db}}.service_edges FINAL
    WHERE @window_range AND (client = {{service:String}} OR server = {{service:String}})
    GROUP BY client, server, connection_type
)
ORDER BY direction, requests DESC, peer
LIMIT {{limit:Int64}}""", _cols(f"direction:{_S}, peer:{_S}, client:{_LS}, server:{_LS}, connection_type:{_LS}, "
                               f"{_EDGE_TOTAL_COLS}"),
    (SERVICE,), entity="service")

ANOMALIES = CatalogueQuery("anomalies", "anomalous service and edge windows with their incident",
                           f"""SELECT detected_at, window_start, window_end, entity_type, entity, incident_id,
       metric, observed, expected, score, severity, detectors, factors
FROM {{db}}.anomalies FINAL
WHERE @window_range AND {_ENTITY_OF_SERVICE}
  AND ({{incident_id:String}} = '' OR incident_id = {{incident_id:String}})
ORDER BY window_start, entity_type, entity
LIMIT {{limit:Int64}}""", _cols(f"detected_at:{_T}, window_start:{_T}, window_end:{_T}, entity_type:{_LS}, "
                               f"entity:{_LS}, incident_id:{_S}, metric:{_LS}, observed:{_F}, expected:{_F}, "
                               f"score:{_F}, severity:{_LS}, detectors:Array({_LS}), factors:{_S}"),
    (SERVICE_OPT, INCIDENT_OPT), entity="service")

_INSIGHT_COLUMNS = """window_start, last_window, insight_id, incident_id, version, status, severity,
       JSONExtractString(message, 'suspected_origin', 'entity') AS suspected_origin,
       narrator, grounded, updated_at,
       JSONExtractString(message, 'narrative', 'summary') AS summary"""
_INSIGHT_COLS = (f"window_start:{_T}, last_window:{_T}, insight_id:{_S}, incident_id:{_S}, version:UInt32, "
                 f"status:{_LS}, severity:{_LS}, suspected_origin:{_S}, narrator:{_LS}, grounded:Bool, "
                 f"updated_at:{_T}, summary:{_S}")

INSIGHTS = CatalogueQuery("insights", "incident insights, newest version each, with their summary",
                          f"""SELECT {_INSIGHT_COLUMNS}
FROM {{db}}.insights FINAL
WHERE @window_range
  AND ({{service:String}} = '' OR incident_id IN (
       SELECT incident_id FROM {{db}}.anomalies WHERE @window_range AND {_ENTITY_OF_SERVICE}))
ORDER BY window_start, insight_id
LIMIT {{limit:Int64}}""", _cols(_INSIGHT_COLS), (SERVICE_OPT,), entity="service")

INCIDENT = Param("incident_id", "string", "an incident id")

INSIGHT = CatalogueQuery("insight", "the newest version of one incident's insight, with its whole message",
                         f"""SELECT {_INSIGHT_COLUMNS}, message
FROM {{db}}.insights FINAL
WHERE @window_range AND incident_id = {{incident_id:String}}
ORDER BY version DESC
LIMIT {{limit:Int64}}""", _cols(f"{_INSIGHT_COLS}, message:{_S}"), (INCIDENT,), entity="incident_id")

ORDER_BY = Param("order_by", "string", "error_rate, or latency_change (p95 now / p95 in the range before)",
                 "error_rate", choices=("error_rate", "latency_change"))

# The range before has the same length as the range (which ends now at the latest).
_PREV_SINCE = "(@since - toIntervalMillisecond(dateDiff('millisecond', @since, least(@until, now64(3)))))"

TOP_EDGES = CatalogueQuery("top_edges", "edges with the highest error rate or the largest p95 change against the range before",
                          f"""SELECT client, server, connection_type, n_req AS requests,
       if(n_req = 0, 0, n_fail / n_req) AS error_rate, if(p_req = 0, 0, p_fail / p_req) AS prev_error_rate,
       ifNull({quantile_sql("sk_now.1", "sk_now.2", 0.95)}, 0) AS p95_ms,
       ifNull({quantile_sql("sk_prev.1", "sk_prev.2", 0.95)}, 0) AS prev_p95_ms,
       if(prev_p95_ms > 0, p95_ms / prev_p95_ms, 0) AS p95_change
FROM (
    SELECT client, server, connection_type,
           sumIf(requests, now_) AS n_req, sumIf(failed, now_) AS n_fail,
           sumIf(requests, NOT now_) AS p_req, sumIf(failed, NOT now_) AS p_fail,
           sumMapIf(client_keys, client_counts, now_) AS sk_now,
           sumMapIf(client_keys, client_counts, NOT now_) AS sk_prev
    FROM (SELECT *, window_start >= @since AS now_ FROM {{db}}.service_edges FINAL
          WHERE window_start >= {_PREV_SINCE} AND window_start < @until)
    GROUP BY client, server, connection_type
    HAVING n_req > 0
)
ORDER BY if({{order_by:String}} = 'error_rate', error_rate, p95_change) DESC, requests DESC, client, server
LIMIT {{limit:Int64}}""", _cols(f"client:{_LS}, server:{_LS}, connection_type:{_LS}, requests:{_U}, error_rate:{_F}, "
                               f"prev_error_rate:{_F}, p95_ms:{_F}, prev_p95_ms:{_F}, p95_change:{_F}"),
    (ORDER_BY,))

HEALTH_TIMELINE = CatalogueQuery("health_timeline", "each service's worst health per bucket (a state timeline)",
                                 f"""SELECT {_TIME} AS time, toString(service) AS service, toString({_WORST_HEALTH}) AS health
FROM {{db}}.service_health FINAL
WHERE @window_range AND {_SERVICE_FILTER}
GROUP BY time, service
ORDER BY time, service
LIMIT {{limit:Int64}}""", _cols(f"time:{_T}, service:{_LS}, health:{_S}"), (SERVICE_OPT,), shape="timeseries",
    entity="service")

# Heatmap rows: the sketch's buckets folded into powers of two of milliseconds (Grafana's
# heatmap reads numeric fields named by their upper bound, as it does Prometheus `le`).
HEATMAP_BOUNDS_MS = tuple(2 ** i for i in range(17))  # 1 ms .. 65.5 s, then +Inf
_LE = ",\n       ".join(f"sumIf(c, le = {b}) AS `{b}`" for b in HEATMAP_BOUNDS_MS)

LATENCY_HEATMAP = CatalogueQuery("latency_heatmap", "a service's latency distribution over time, from its stored sketches",
                                 f"""SELECT time,
       {_LE},
       sumIf(c, le > {HEATMAP_BOUNDS_MS[-1]}) AS `+Inf`
FROM (
    SELECT {_TIME} AS time, kc.2 AS c,
           pow(2, greatest(0, ceil(log2(2 * pow({SKETCH_GAMMA!r}, kc.1) / ({SKETCH_GAMMA!r} + 1))))) AS le
    FROM {{db}}.service_health FINAL
    ARRAY JOIN arrayZip(latency_keys, latency_counts) AS kc
    WHERE @window_range AND service = {{service:String}}
)
GROUP BY time
ORDER BY time
LIMIT {{limit:Int64}}""", (Column("time", _T), *(Column(str(b), _U) for b in HEATMAP_BOUNDS_MS), Column("+Inf", _U)),
    (SERVICE,), shape="timeseries", entity="service")

SERVICE_NAMES = CatalogueQuery("service_names", "services with windows in the range (id: the name in hex, for variables)",
                               """SELECT hex(service) AS id, toString(service) AS service
FROM {db}.service_health FINAL
WHERE @window_range
GROUP BY service
ORDER BY service
LIMIT {limit:Int64}""", _cols(f"id:{_LS}, service:{_LS}"))

KIND_OPT = Param("kind", "string", "incident, service, overview or custom ('' for all)", "",
                 choices=("", "incident", "service", "overview", "custom"))
_DASHBOARD_COLUMNS = """dashboard_id, version, kind, title, audience, incident_id, service, generator, updated_at"""
_DASHBOARD_COLS = (f"dashboard_id:{_S}, version:UInt32, kind:{_LS}, title:{_S}, audience:{_LS}, incident_id:{_S}, "
                   f"service:{_S}, generator:{_LS}, updated_at:{_T}")

DASHBOARDS = CatalogueQuery("dashboards", "dashboards updated in the range, newest version each, newest first",
                            f"""SELECT {_DASHBOARD_COLUMNS}
FROM {{db}}.dashboards FINAL
WHERE updated_at >= @since AND updated_at < @until
  AND ({{kind:String}} = '' OR kind = {{kind:String}})
  AND ({{incident_id:String}} = '' OR incident_id = {{incident_id:String}})
ORDER BY updated_at DESC, dashboard_id
LIMIT {{limit:Int64}}""", _cols(_DASHBOARD_COLS), (KIND_OPT, INCIDENT_OPT))

DASHBOARD = CatalogueQuery("dashboard", "one dashboard's newest version, with its spec",
                           f"""SELECT {_DASHBOARD_COLUMNS}, spec
FROM {{db}}.dashboards FINAL
WHERE dashboard_id = {{dashboard_id:String}}
LIMIT {{limit:Int64}}""", _cols(f"{_DASHBOARD_COLS}, spec:{_S}"),
    (Param("dashboard_id", "string", "a dashboard id"),))

FEEDBACK = CatalogueQuery("feedback", "what people said of insights (helpful or a false alarm), newest first",
                          """SELECT insight_id, incident_id, verdict, user, comment, at
FROM {db}.feedback FINAL
WHERE at >= @since AND at < @until
  AND ({insight_id:String} = '' OR insight_id = {insight_id:String})
ORDER BY at DESC
LIMIT {limit:Int64}""", _cols(f"insight_id:{_S}, incident_id:{_S}, verdict:{_LS}, user:{_S}, comment:{_S}, at:{_T}"),
    (Param("insight_id", "string", "an insight id ('' for all)", ""),))

ENTITY_NAMES = CatalogueQuery("entity_names", "every service and node name with windows in the range",
                              """SELECT DISTINCT name FROM (
    SELECT CAST(service AS String) AS name FROM {db}.service_health WHERE @window_range
    UNION ALL SELECT CAST(client AS String) FROM {db}.service_edges WHERE @window_range
    UNION ALL SELECT CAST(server AS String) FROM {db}.service_edges WHERE @window_range)
ORDER BY name
LIMIT {limit:Int64}""", _cols("name:String"))


def _hourly(q: CatalogueQuery, name: str, description: str) -> CatalogueQuery:
    """The same query over the hourly rollups (processor/storage/rollups.py): every hour that
    starts in [the hour of since, until), 60 times fewer rows than the final windows."""
    sql = (q.sql.replace("{db}.service_health FINAL", "{db}.service_health_hourly FINAL")
           .replace("{db}.service_edges FINAL", "{db}.service_edges_hourly FINAL")
           .replace("@window_range", "(window_start >= toStartOfHour(@since) AND window_start < @until)"))
    return CatalogueQuery(name, description, sql, q.columns, q.params, q.shape, q.entity)


MAP_NODES = _hourly(TOPOLOGY_NODES, "map_nodes", "nodes of the service map over whole hours, from the hourly rollups")
MAP_EDGES = _hourly(TOPOLOGY, "map_edges", "edges of the service map over whole hours, from the hourly rollups")

CATALOGUE: dict[str, CatalogueQuery] = {q.name: q for q in (
    HEALTH, EDGES, TOPOLOGY, TOPOLOGY_NODES, SERVICE_RED, EDGE_SERIES, SERVICE_EDGES, ANOMALIES,
    INSIGHTS, INSIGHT, TOP_EDGES, HEALTH_TIMELINE, LATENCY_HEATMAP, SERVICE_NAMES, DASHBOARDS, DASHBOARD, FEEDBACK, MAP_NODES, MAP_EDGES, ENTITY_NAMES,
)}
