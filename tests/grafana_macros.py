"""What Grafana and its ClickHouse plugin do to a panel's SQL before ClickHouse sees it.

The frontend replaces dashboard variables with their raw values (the plugin's `format` only
joins multi-values), then the plugin's backend expands its macros (grafana/clickhouse-
datasource, pkg/macros/macros.go): seconds precision for `$__fromTime`, `$__toTime` and
`$__timeFilter`, and `$__interval_s` at least 1. Tests run the result on chdb.
"""

from __future__ import annotations

import re
from collections.abc import Mapping


def expand(sql: str, from_ms: int, to_ms: int, interval_s: int = 60,
           variables: Mapping[str, str] | None = None) -> str:
    for name, value in (variables or {}).items():
        sql = sql.replace("${" + name + "}", value).replace("$" + name, value)
    frm, to = f"toDateTime({from_ms // 1000})", f"toDateTime({to_ms // 1000})"
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", lambda m: f"{m.group(1)} >= {frm} AND {m.group(1)} <= {to}", sql)
    sql = sql.replace("$__fromTime", frm).replace("$__toTime", to)
    sql = sql.replace("$__interval_s", str(max(1, interval_s)))
    leftover = re.findall(r"\$__\w+|\$\{\w+\}", sql)
    if leftover:
        raise AssertionError(f"unexpanded macros or variables: {leftover}")
    return sql
