"""`otel-insights demo` as a newcomer runs it: live topology and health within a minute."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from processor.localstack import free_port

pytestmark = pytest.mark.e2e


def test_demo_prints_live_topology_and_health_then_stops_cleanly(tmp_path) -> None:
    ui_port = free_port()
    env = dict(os.environ, OTEL_INSIGHTS_BROKERS=f"127.0.0.1:{free_port()}",
               OTEL_INSIGHTS_OTLP_GRPC=f"127.0.0.1:{free_port()}",
               OTEL_INSIGHTS_OTLP_HTTP=f"127.0.0.1:{free_port()}",
               OTEL_INSIGHTS_METRICS=f"127.0.0.1:{free_port()}", OTEL_INSIGHTS_UI=f"127.0.0.1:{ui_port}",
               COLUMNS="160")
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "demo", "--duration", "45", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=150, env=env)
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    assert "service graph" in out and "service health" in out, out[-3000:]
    for name in ("frontend", "checkout", "payment", "product-catalog", "redis-cart"):
        assert name in out, name
    assert "messaging_system" in out and "database" in out
    assert "demo stopped" in out
    assert f"web UI: http://127.0.0.1:{ui_port}/" in out  # printed, never opened
    assert (tmp_path / "chdb").is_dir()
