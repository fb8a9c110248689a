"""The query catalogue on chdb with a worker's data: declared columns, typed parameters,
untrusted names as data, and the Grafana rendering returning what the API returns."""

from __future__ import annotations

import pytest

from processor.storage.catalogue import (
    CatalogueQuery,
    ParamError,
    hex_literal,
    render_grafana,
)
from processor.storage.catalogue_sql import CATALOGUE
from processor.storage.queries import request_params
from tests import grafana_macros
from tests.shop_store import ShopStore, module_fixture

pytestmark = pytest.mark.integration
HOSTILE = "<img src=x onerror=alert(1)>' OR 1=1 -- \\"


shop = module_fixture(minutes=12, fault=True, extra_service=HOSTILE)


def example_params(q: CatalogueQuery, shop: ShopStore) -> dict[str, str]:
    """A value for each required parameter, from the data."""
    pick = {"service": shop.fault_service, "client": "frontend", "server": shop.fault_service,
            "incident_id": shop.incidents[0], "dashboard_id": shop.dashboards[0]}
    return {p.name: pick[p.name] for p in q.params if p.default is None}


def test_the_demo_data_has_an_incident(shop: ShopStore) -> None:
    assert shop.incidents and HOSTILE in shop.services


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_query_returns_rows_with_its_declared_columns(shop: ShopStore, name: str) -> None:
    q = CATALOGUE[name]
    params = {"since_ms": shop.start_ms, **example_params(q, shop)}
    rows = shop.store.catalogue(name, params)
    assert rows, f"{name} returned nothing on data that has everything it reads"
    declared = [(c.name, c.type) for c in q.columns]
    assert [c.name for c in q.columns] == list(rows[0])
    assert shop.store.catalogue_columns(name, params) == declared  # with LIMIT 0: no rows, same shape


def test_parameters_are_typed_bounded_and_refused_by_name() -> None:
    with pytest.raises(ParamError, match="required"):
        request_params("service_red", {})
    with pytest.raises(ParamError, match="whole number"):
        request_params("health", {"limit": "10; DROP TABLE x"})
    with pytest.raises(ParamError, match="limit"):
        request_params("health", {"limit": "10001"})
    with pytest.raises(ParamError, match="one of"):
        request_params("top_edges", {"order_by": "error_rate DESC; --"})
    with pytest.raises(ParamError, match="unknown parameter"):
        request_params("health", {"sql": "SELECT 1"})
    # A look-back is refused under the name it was given; an epoch bound under its own.
    with pytest.raises(ParamError, match="since: '99999999999999999999s' reaches back before 1970"):
        request_params("health", {"since": "99999999999999999999s"})
    with pytest.raises(ParamError, match="since_ms: -1 is out of range"):
        request_params("health", {"since_ms": "-1"})
    with pytest.raises(ParamError, match="unknown query"):
        request_params("system.users", {})


def test_names_are_only_ever_data(shop: ShopStore) -> None:
    # An injection attempt matches nothing (and is no syntax error); the hostile service that
    # really exists is found by its exact name, in both renderings.
    assert shop.store.catalogue("health", {"since_ms": 0, "service": "x' OR 1=1 --"}) == []
    rows = shop.store.catalogue("service_red", {"since_ms": 0, "service": HOSTILE})
    assert rows and sum(r["requests_per_s"] for r in rows) > 0
    sql = grafana_macros.expand(render_grafana(CATALOGUE["service_red"], shop.context, {"service": HOSTILE}),
                                shop.start_ms, shop.end_ms + 60_000, interval_s=1)
    assert HOSTILE not in sql and hex_literal(HOSTILE) in sql
    assert len(shop.store.backend.query(sql)) == len(rows)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_grafana_rendering_returns_what_the_api_returns(shop: ShopStore, name: str) -> None:
    q = CATALOGUE[name]
    values = example_params(q, shop)
    # Seconds-aligned, and not on a window boundary: the plugin's bounds are inclusive.
    lo, hi = shop.start_ms // 1000 * 1000, (shop.end_ms + 65_000) // 1000 * 1000 + 500
    api = shop.store.catalogue(name, {"since_ms": lo, "until_ms": hi, **values})
    variables = {p: f"v_{p}" for p in values if p in ("service",)}
    sql = render_grafana(q, shop.context, values, variables)
    expanded = grafana_macros.expand(sql, lo, hi, interval_s=1,
                                     variables={f"v_{p}": values[p].encode().hex().upper() for p in variables})
    grafana = shop.store.backend.query(expanded)
    if name == "top_edges":  # its range before is anchored at now() when the range ends later
        assert [r["client"] for r in grafana] == [r["client"] for r in api]
        return
    assert grafana == api
