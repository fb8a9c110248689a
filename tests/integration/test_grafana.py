"""Grafana: the shipped dashboards are the generated ones, every SQL statement in them (and in
exported specs) runs on chdb with the plugin's macros expanded, and the provisioning parses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.dashboards_cli import grafana_files
from processor.dashboards import grafana, rules, shipped, spec
from processor.storage.catalogue_sql import CATALOGUE
from tests import grafana_macros
from tests.shop_store import ShopStore, module_fixture

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "config" / "grafana"
HOSTILE = "'; DROP TABLE x; -- ${__user.login} <b>"


shop = module_fixture(minutes=12, fault=True, extra_service=HOSTILE)


def _statements(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, SQL) of every panel target and query variable."""
    out = [(f"variable {v['name']}", v["query"]) for v in dash["templating"]["list"] if v["type"] == "query"]
    for p in dash["panels"]:
        out += [(f"panel {p['title']} {t['refId']}", t["rawSql"]) for t in p.get("targets", ())]
    return out


def _run_all(shop: ShopStore, dash: dict[str, Any], service: str) -> None:
    values = {"service": service.encode().hex().upper()}
    for where, sql in _statements(dash):
        expanded = grafana_macros.expand(sql, shop.start_ms, shop.end_ms + 60_000, 10, values)
        rows = shop.store.backend.query(expanded)
        if "anomalies" not in sql and "insights" not in sql and "top_edges" not in where:
            assert rows, f"{dash['title']}: {where} returned nothing"
        for p in dash["panels"]:  # the fields a panel keeps are columns its queries return
            for t in p.get("transformations", ()):
                if t["id"] == "filterFieldsByName" and rows and any(x["rawSql"] == sql for x in p.get("targets", ())):
                    missing = set(t["options"]["include"]["names"]) - set(rows[0])
                    assert not missing, (dash["title"], p["title"], missing)


def test_the_committed_dashboards_are_what_the_code_generates() -> None:
    committed = {p.name: p.read_text() for p in (GRAFANA / "dashboards").glob("*.json")}
    assert committed == grafana_files(), ("config/grafana/dashboards is stale: run `otel-insights dashboards "
                                          "provision --out config/grafana/dashboards`")


def test_the_shipped_specs_pass_the_checks_of_any_spec(shop: ShopStore) -> None:
    for name, s in shipped.specs().items():
        assert spec.check(s, shop.store.catalogue_columns) == [], name


@pytest.mark.parametrize("name", sorted(p.stem for p in (GRAFANA / "dashboards").glob("*.json")))
def test_every_statement_of_the_shipped_dashboards_runs_with_data(shop: ShopStore, name: str) -> None:
    dash = json.loads((GRAFANA / "dashboards" / f"{name}.json").read_text())
    assert all(p["datasource"] == {"type": grafana.PLUGIN, "uid": "${datasource}"}
               for p in dash["panels"] if p.get("targets"))
    _run_all(shop, dash, shop.fault_service)
    _run_all(shop, dash, HOSTILE)  # a hostile name picked in the variable is data too


def test_exported_specs_run_and_carry_names_only_as_data(shop: ShopStore) -> None:
    h = shop.config.windows.health
    (row,) = shop.store.catalogue("insight", {"since_ms": 0, "incident_id": shop.incidents[0]})
    specs = [rules.incident(json.loads(row["message"]), a, h) for a in ("sre", "developer", "manager")]
    specs += [rules.service(HOSTILE, "sre", h), rules.overview("sre", h)]
    for s in specs:
        dash = grafana.export(s, shop.store.context)
        assert len(dash["uid"]) <= 40 and dash["title"] == grafana.shown(s["title"])
        for _, sql in _statements(dash):
            assert HOSTILE not in sql and "DROP TABLE" not in sql
        _run_all(shop, dash, HOSTILE)
    hostile = grafana.export(rules.service(HOSTILE, "sre", h), shop.store.context)
    # Shown as text by Grafana, never in SQL; its `$` cannot expand a Grafana variable.
    assert grafana.shown(HOSTILE) in hostile["title"] and "$" not in hostile["title"]
    assert all("$" not in p["title"] for p in hostile["panels"])


def test_provisioning_names_the_plugin_and_the_dashboards_folder() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "otel-insights.yaml").read_text())
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == grafana.PLUGIN and source["uid"] == grafana.DATASOURCE_UID
    assert source["jsonData"]["defaultDatabase"] == "otel_insights"
    assert all(str(v).startswith("$") for k, v in source["jsonData"].items() if k in ("host", "port", "username"))
    assert set(source["secureJsonData"]) == {"password"} and source["secureJsonData"]["password"].startswith("$")
    dashboards = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "otel-insights.yaml").read_text())
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].endswith("/otel-insights")
    for dash in (json.loads(p.read_text()) for p in (GRAFANA / "dashboards").glob("*.json")):
        (ds_var,) = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
        assert ds_var["query"] == grafana.PLUGIN and ds_var["current"]["value"] == grafana.DATASOURCE_UID


def test_the_catalogue_reaches_every_shipped_query() -> None:
    used = {q["name"] for s in shipped.specs().values() for p in s["panels"] for q in p.get("queries", ())}
    assert used <= set(CATALOGUE) and {"topology", "topology_nodes", "service_red", "anomalies", "insights"} <= used
