"""ClickHouse failing under a running worker (real broker; real chdb behind tests/chshim.py,
reached through clickhouse-connect as a server would be).

A statement ClickHouse rejects stops the worker at once with one line, and nothing past
it is committed: the restart, once the cause is fixed, ends exact. An outage is waited
out (transient failures are retried) and ends exact too.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from processor.generate.sinks import send_kafka
from tests.chshim import sql, start_shim
from tests.integration.harness import Pipeline, make_pipeline, shop_traffic, wait_exact, wait_until

pytestmark = pytest.mark.integration


def test_a_rejected_insert_stops_the_worker_with_one_line_and_nothing_past_it_is_committed(
        broker, new_topic, unique_name, tmp_path) -> None:
    topic = new_topic("spans")
    traces, truth = shop_traffic(seed=41, seconds=16, rate=200)
    shim = start_shim(tmp_path / "chdb")
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("perm"), clickhouse=shim.url)
    try:
        p.start()
        half = len(traces) // 2
        asyncio.run(send_kafka(traces[:half], [broker.bootstrap], topic))
        wait_until(lambda: len(p.query("edges")) > 0, 60, "first final rows", p)
        # A real ClickHouse rejection: the table stage 1 writes edge partials to is gone.
        sql(shim.url, "RENAME TABLE otel_insights.service_edges_partial TO otel_insights.moved_away")
        failed_at = time.monotonic()
        asyncio.run(send_kafka(traces[half:], [broker.bootstrap], topic))
        assert p.proc is not None
        code = p.proc.wait(timeout=60)
        stopped_after = time.monotonic() - failed_at
        log = p.log()
        assert code == 1, log
        stops = [line for line in log.splitlines() if "stopping:" in line]
        assert len(stops) == 1, log
        assert "write not retried" in stops[0] and "UNKNOWN_TABLE" in stops[0], stops[0]
        assert "Received ClickHouse exception" not in stops[0], stops[0]
        assert "Traceback" not in log and "retrying in" not in log, log
        # Windows close every 2 s (+2 s lateness): the next partials insert fails within seconds.
        assert stopped_after < 30, stopped_after

        # Fixed, the restart replays everything not committed: exact, nothing lost or doubled.
        sql(shim.url, "RENAME TABLE otel_insights.moved_away TO otel_insights.service_edges_partial")
        p2 = Pipeline(p.config_path, p.port, tmp_path / "restart.log")
        try:
            p2.start()
            wait_exact(p2, truth)
            assert p2.metric("otel_insights_clickhouse_errors_total") == 0, p2.log()
        finally:
            p2.stop()
    finally:
        p.stop()
        shim.stop()


def test_a_20s_clickhouse_outage_is_waited_out_and_the_totals_stay_exact(
        broker, new_topic, unique_name, tmp_path) -> None:
    topic = new_topic("spans")
    traces, truth = shop_traffic(seed=43, seconds=20, rate=150)
    data = tmp_path / "chdb"
    shim = start_shim(data)
    port = shim.port
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("outage"), clickhouse=shim.url,
                      clickhouse_options="retry_on_failure: {initial_interval: 500ms, max_interval: 4s}")
    try:
        p.start()
        third = len(traces) // 3
        asyncio.run(send_kafka(traces[:third], [broker.bootstrap], topic))
        wait_until(lambda: len(p.query("edges")) > 0, 60, "first final rows", p)
        shim.stop()  # ClickHouse goes away: connections refused
        down_at = time.monotonic()
        asyncio.run(send_kafka(traces[third:], [broker.bootstrap], topic))
        time.sleep(max(0.0, 20 - (time.monotonic() - down_at)))
        assert p.proc is not None and p.proc.poll() is None, p.log()  # still waiting, not stopped
        assert p.metric("otel_insights_clickhouse_errors_total", outcome="retried") > 0
        shim = start_shim(data, tmp_path / "chshim-again.log", port=port)
        wait_exact(p, truth)
        assert p.metric("otel_insights_clickhouse_errors_total", outcome="failed") == 0
        assert "stopping:" not in p.log()
    finally:
        p.stop(signal.SIGTERM)
        shim.stop()
