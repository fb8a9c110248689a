"""Generated dashboard specs for the demo traffic, with and without a fault: valid against the
schema and the catalogue, every query running on chdb with data and returning its columns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor.dashboards import rules, spec
from processor.dashboards.entities import StoredEntities
from processor.storage.catalogue_sql import CATALOGUE
from tests.shop_store import ShopStore, build

pytestmark = pytest.mark.integration
HOSTILE = "<img src=x onerror=alert(1)>"
AUDIENCES = ("sre", "developer", "manager")


@pytest.fixture(scope="module", params=["fault", "no-fault"])
def shop(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShopStore]:
    s = build(Path(tmp_path_factory.mktemp("shop")) / "ch", minutes=12, fault=request.param == "fault",
              extra_service=HOSTILE)
    try:
        yield s
    finally:
        s.close()


def _specs(shop: ShopStore) -> list[dict]:
    h = shop.config.windows.health
    out = [rules.overview(a, h) for a in AUDIENCES]
    out += [rules.service(name, a, h, baseline_ms=20.0) for name in ("frontend", HOSTILE) for a in AUDIENCES]
    for incident in shop.incidents:
        (row,) = shop.store.catalogue("insight", {"since_ms": 0, "incident_id": incident})
        out += [rules.incident(json.loads(row["message"]), a, h) for a in AUDIENCES]
    return out


def test_the_fault_run_has_an_incident_and_the_clean_run_none(shop: ShopStore) -> None:
    assert bool(shop.incidents) == bool(shop.fault_service)


def test_every_generated_spec_is_valid_and_every_query_returns_its_columns_with_data(shop: ShopStore) -> None:
    exists = StoredEntities(shop.store.catalogue, 0)
    specs = _specs(shop)
    assert {s["kind"] for s in specs} == ({"overview", "service", "incident"} if shop.incidents
                                         else {"overview", "service"})
    for s in specs:
        assert spec.check(s, shop.store.catalogue_columns, exists) == [], s["id"]
        since, until = spec.range_ms(s)
        for panel in s["panels"]:
            for q in panel.get("queries", ()):
                params = spec.bound_params(q, {}, since, until)
                if s["kind"] == "incident" or q["name"] in ("insights", "top_edges"):
                    params["since_ms"] = 0  # the data is minutes old; incidents keep their own range
                rows = shop.store.catalogue(q["name"], params)
                names = [c.name for c in CATALOGUE[q["name"]].columns]
                assert not rows or list(rows[0]) == names
                if q["name"] not in ("anomalies", "insights", "top_edges"):  # may be empty in a clean run
                    assert rows, (s["id"], panel["title"], q)


def test_an_incident_dashboard_shows_what_moved_with_the_health_thresholds(shop: ShopStore) -> None:
    if not shop.incidents:
        pytest.skip("the clean run has no incident")
    (row,) = shop.store.catalogue("insight", {"since_ms": 0, "incident_id": shop.incidents[0]})
    insight = json.loads(row["message"])
    s = rules.incident(insight, "sre", shop.config.windows.health)
    types = [p["type"] for p in s["panels"]]
    assert types[0] == "insight" and "topology" in types and "heatmap" in types
    latency = [p for p in s["panels"] if p["type"] == "timeseries" and p.get("unit") == "ms"]
    assert latency and all(p["thresholds"] for p in latency)
    moved = {(m["entity"]) for m in insight["metrics"]}
    assert any(shop.fault_service in p["title"] for p in latency) and shop.fault_service in moved
    errors = [p for p in s["panels"] if p.get("unit") == "percentunit"]
    h = shop.config.windows.health
    assert all([t["value"] for t in p["thresholds"][1:]] == [h.error_rate_degraded, h.error_rate_critical]
               for p in errors)
    assert s["id"] == rules.incident(insight, "sre", h)["id"]  # one dashboard per incident, updated
