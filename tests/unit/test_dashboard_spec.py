"""Spec checks: schema, catalogue queries and their parameters, fields, panel shapes, grid."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from processor.config.components import HealthConfig
from processor.dashboards import layout, rules, spec
from processor.errors import StorageError


def _service(name: str = "checkout") -> dict[str, Any]:
    return rules.service(name, "sre", HealthConfig(), baseline_ms=12.0, now_ms=1_767_225_600_000)


def _broken(change) -> list[str]:  # type: ignore[no-untyped-def]
    s = copy.deepcopy(_service())
    change(s)
    return spec.check(s)


def test_generated_specs_pass_and_are_deterministic() -> None:
    a, b = _service(), _service()
    assert a == b and spec.check(a) == []
    assert spec.check(rules.overview("manager", HealthConfig())) == []
    assert spec.check(_service("x' OR 1=1 -- <script>")) == []  # any name is data


def _panel(s: dict, kind: str) -> dict:
    return next(p for p in s["panels"] if p["type"] == kind)


@pytest.mark.parametrize(("change", "says"), [
    (lambda s: _panel(s, "table")["queries"][0].update(name="SELECT * FROM system.users"), "does not match"),
    (lambda s: _panel(s, "table")["queries"][0].update(name="users_table"), "unknown query"),
    (lambda s: _panel(s, "table")["queries"][0].update(sql="SELECT 1"), "Additional properties"),
    (lambda s: _panel(s, "table")["queries"][0]["params"].update(service=7), "must be a string"),
    (lambda s: _panel(s, "table")["queries"][0]["params"].update(since_ms=0), "no parameter 'since_ms'"),
    (lambda s: _panel(s, "table")["queries"][0]["params"].update(limit=99999), "limit"),
    (lambda s: _panel(s, "table")["queries"][0]["params"].pop("service"), "needs parameter 'service'"),
    (lambda s: _panel(s, "table")["queries"][0]["params"].update(service={"var": "svc"}), "does not define"),
    (lambda s: _panel(s, "table").update(fields=["password"]), "not columns"),
    (lambda s: _panel(s, "heatmap")["queries"][0].update(name="health", params={}), "heatmap panel reads"),
    (lambda s: _panel(s, "stat")["grid"].update(x=20, w=8), "past the grid"),
    (lambda s: s["panels"][1]["grid"].update(x=0, y=0), "overlaps"),
    (lambda s: s["panels"][1].update(id=1), "same id"),
    (lambda s: s.update(time_range={"from": "now", "to": "now-1h"}), "not after"),
    (lambda s: s["panels"].append({"id": 99, "type": "text", "title": "t", "grid": {"x": 0, "y": 90, "w": 4, "h": 2},
                                   "text": "hi", "queries": [{"ref": "A", "name": "health", "params": {}}]}),
     "takes no queries"),
    (lambda s: s["panels"].append({"id": 98, "type": "topology", "title": "t", "grid": {"x": 0, "y": 95, "w": 4, "h": 2},
                                   "queries": [{"ref": "A", "name": "service_red", "params": {"service": "a"}}]}),
     "cannot draw"),
])
def test_each_kind_of_mistake_is_named(change, says: str) -> None:  # type: ignore[no-untyped-def]
    problems = _broken(change)
    assert problems and any(says in p for p in problems), problems


def test_entities_that_do_not_exist_and_queries_that_do_not_run_are_problems() -> None:
    s = _service("ghost")
    problems = spec.check(s, exists=lambda param, value: value != "ghost")
    assert any("'ghost' does not exist" in p for p in problems)

    def refuses(name: str, params: dict) -> list[tuple[str, str]]:
        raise StorageError("Code: 60. Table x.service_health does not exist")

    assert any("does not run: Code: 60" in p for p in spec.check(_service(), columns=refuses))

    def away(name: str, params: dict) -> list[tuple[str, str]]:
        raise StorageError("connection refused", transient=True)

    with pytest.raises(StorageError):  # no verdict while ClickHouse is away
        spec.check(_service(), columns=away)
    assert any("returned columns" in p for p in spec.check(_service(), columns=lambda n, p: [("x", "String")]))


def test_flow_fills_rows_of_24_and_never_overlaps() -> None:
    panels = layout.flow([({"type": "text"}, w, h) for w, h in [(8, 4), (8, 4), (12, 8), (12, 2), (24, 3), (30, 1)]])
    grids = [(p["grid"]["x"], p["grid"]["y"], p["grid"]["w"]) for p in panels]
    assert grids == [(0, 0, 8), (8, 0, 8), (0, 4, 12), (12, 4, 12), (0, 12, 24), (0, 15, 24)]
    assert [p["id"] for p in panels] == [1, 2, 3, 4, 5, 6]


def test_dashboard_ids_are_stable_slugs_of_any_text() -> None:
    a = spec.dashboard_id("service", "Check Out/<x>\x00sre")
    assert a == spec.dashboard_id("service", "Check Out/<x>\x00sre") and a.startswith("service-check-out-x-")
    assert spec.dashboard_id("service", "a") != spec.dashboard_id("service", "A")
