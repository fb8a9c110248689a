"""Golden cases through the Kafka-free runner over the in-memory store (tests/golden.py)."""

from __future__ import annotations

import pytest

from tests.golden import CASES, check, run_case


def test_every_case_listed_in_the_issue_exists() -> None:
    assert set(CASES) >= {"client_server", "producer_consumer_parent", "producer_consumer_link",
                          "database_edge", "virtual_node_by_peer", "unknown_virtual_node",
                          "root_user_edge", "failed_either_side", "late_span", "idle_partition"}
    # Issue 13: the servicegraph connector's meaning, point by point (and its own test traces).
    assert set(CASES) >= {"database_naming", "database_name_order", "idle_flush_metrics",
                          "client_consumer", "no_service_name", "connector_extra_dimensions",
                          "connector_virtual_node_label", "connector_consume",
                          "connector_failed_label", "header_dimension"}


@pytest.mark.parametrize("case", CASES)
def test_golden_case(case: str, request: pytest.FixtureRequest) -> None:
    check(case, run_case(case), bool(request.config.getoption("--update-golden")))
