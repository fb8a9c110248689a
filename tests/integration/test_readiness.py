"""/healthz and /readyz of the long-running processes, on real processes: the worker (`run`) is
ready only once the ClickHouse schema is migrated and its consumer has joined the group; the
standalone gateway serves /metrics, /healthz and /readyz on its own port and is ready only
once its Kafka producer is connected."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from processor.localstack import free_port
from processor.storage.schema import MIGRATIONS
from tests.chshim import sql, start_shim
from tests.e2e.procs import GatewayProcess
from tests.integration.harness import http_get, make_pipeline, wait_until

pytestmark = pytest.mark.integration


def test_worker_is_ready_only_while_clickhouse_answers_migrated(broker, new_topic, unique_name, tmp_path) -> None:
    topic = new_topic("spans")
    shim = start_shim(tmp_path / "clickhouse")
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("ready"), clickhouse=shim.url)
    try:
        p.start()
        wait_until(lambda: p.status("/readyz")[0] == 200, 60, "the worker to be ready", p)
        code, body = p.status("/readyz")
        assert body == {"status": "ready", "problems": {}, "partitions": body["partitions"]}, body
        # A newer worker than the schema (create_schema: false, `migrate` not run yet):
        # alive, not ready, and the probe says what to do.
        sql(shim.url, "ALTER TABLE otel_insights.schema_migrations DELETE WHERE version = "
                       f"{MIGRATIONS[-1].version} SETTINGS mutations_sync = 1")
        wait_until(lambda: p.status("/readyz")[0] == 503, 30, "readyz to see the missing migration", p)
        code, body = p.status("/readyz")
        assert body["status"] == "not ready" and set(body["problems"]) == {"clickhouse"}, body
        assert "not migrated" in body["problems"]["clickhouse"] and shim.url in body["problems"]["clickhouse"]
        assert p.status("/healthz")[0] == 200
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", "migrate", "--config", str(p.config_path)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: p.status("/readyz")[0] == 200, 30, "the worker to be ready after migrate", p)
        shim.stop()  # ClickHouse goes away: alive still, no longer ready, and it says why
        wait_until(lambda: p.status("/readyz")[0] == 503, 30, "readyz to notice", p)
        body = p.status("/readyz")[1]
        assert "clickhouse" in body["problems"] and shim.url in body["problems"]["clickhouse"], body
        assert p.status("/healthz")[0] == 200
    finally:
        p.stop()
        shim.stop()


def _gateway(tmp_path, bootstrap: str, name: str) -> GatewayProcess:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({
        "receivers": {"kafka": {"brokers": [bootstrap], "traces": {"topic": "otlp_spans"}}, "otlp": None},
        "exporters": {"clickhouse": {"endpoint": "http://127.0.0.1:1"}, "prometheus": {"endpoint": "127.0.0.1:1"}},
        "service": {"pipelines": {"traces": {"receivers": ["kafka"], "exporters": ["clickhouse", "prometheus"]}}},
    }))
    return GatewayProcess(cfg, tmp_path)


def test_gateway_ready_only_with_kafka_connected(broker, tmp_path) -> None:
    def get(port: int, path: str) -> tuple[int, str]:
        code, body = http_get(f"http://127.0.0.1:{port}{path}")
        return code, body.decode()

    with _gateway(tmp_path, f"127.0.0.1:{free_port()}", "nokafka") as gw:  # nothing listens there
        assert get(gw.health_port, "/healthz")[0] == 200
        code, body = get(gw.health_port, "/readyz")
        assert code == 503 and '"kafka"' in body and "not connected" in body, body
        assert gw.health_port not in (gw.grpc_port, gw.http_port)
    with _gateway(tmp_path, broker.bootstrap, "kafka") as gw:
        wait_until(lambda: get(gw.health_port, "/readyz")[0] == 200, 30, "the gateway to connect")
        code, text = get(gw.health_port, "/metrics")
        assert code == 200 and "otel_insights_gateway_requests_total" in text
