"""The metrics port of a running worker: only our pages, a validated query API behind an
optional bearer token, metric names under the configured namespace (real broker, chdb)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from processor.generate.sinks import send_kafka
from tests.integration.harness import make_pipeline, shop_traffic, wait_exact

pytestmark = pytest.mark.integration
TOKEN = "t0ken-for-tests"


def test_only_our_pages_validated_parameters_and_the_token(broker, new_topic, unique_name, tmp_path) -> None:
    topic = new_topic("spans")
    traces, truth = shop_traffic(seed=47, seconds=12)
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("port"), narrator=True,
                      prometheus_options="namespace: acme, api: {auth: {bearer_token_env: OI_TEST_API_TOKEN}}")
    p.env, p.token, p.prefix = {"OI_TEST_API_TOKEN": TOKEN}, TOKEN, "acme_"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        p.start()
        # faust's own pages are gone.
        for path in ("/router", "/router/", "/table", "/table/", "/graph", "/stats/", "/performance"):
            assert p.status(path)[0] == 404, path
        # /metrics and /healthz stay open; every metric is under the namespace.
        code, text = p.status("/metrics")
        assert code == 200
        names = {ln.split("{")[0].split(" ")[0] for ln in text.splitlines() if ln and not ln.startswith("#")}
        assert names and all(n.startswith("acme_") for n in names), sorted(names)[:5]
        assert p.status("/healthz")[0] == 200
        # The query API wants the token.
        code, body = p.status("/api/query/health")
        assert code == 401 and "bearer token" in body["error"]
        assert p.status("/api/query/health", {"Authorization": "Bearer nope"})[0] == 401
        assert p.status("/api/query/health", auth)[0] == 200

        half = len(traces) // 2
        asyncio.run(send_kafka(traces[:half], [broker.bootstrap], topic))
        # Out of range: refused at once, before ClickHouse, and the pipeline keeps writing.
        t0 = time.monotonic()
        code, body = p.status("/api/query/health?since=99999999999999999999s", auth)
        assert code == 400 and "before 1970" in body["error"], body
        assert time.monotonic() - t0 < 2
        for query, why in (("?limit=-1", "out of range"), ("?sql=SELECT%201", "unknown parameter"),
                           ("?since=1m&since=2m", "more than once"), ("?service=" + "x" * 1100, "longer than")):
            code, body = p.status(f"/api/query/edges{query}", auth)
            assert code == 400 and why in body["error"], (query, body)
        assert p.status("/api/query/nope", auth)[0] == 404
        # The dashboards API is behind the same token.
        assert p.status("/api/dashboards")[0] == 401 and p.status("/api/dashboards", auth)[0] == 200
        asyncio.run(send_kafka(traces[half:], [broker.bootstrap], topic))
        wait_exact(p, truth)
        assert p.metric("otel_insights_clickhouse_errors_total") == 0
        assert p.metric("otel_insights_spans_total") == sum(t.span_count for t in traces)
    finally:
        p.stop()


def test_a_token_variable_named_but_unset_refuses_to_start(broker, new_topic, unique_name, tmp_path) -> None:
    topic = new_topic("spans")
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("notoken"),
                      prometheus_options="api: {auth: {bearer_token_env: OI_TEST_UNSET_TOKEN}}")
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--config", str(p.config_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    said = " ".join(done.stderr.split())  # the console wraps long lines
    assert said.startswith("error: exporters.prometheus.api.auth.bearer_token_env: "
                           "environment variable OI_TEST_UNSET_TOKEN is unset"), done.stderr
    assert said.count("error:") == 1 and "Traceback" not in said and "Exception" not in said
