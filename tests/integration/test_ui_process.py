"""`otel-insights ui` as a process of its own: against a ClickHouse server (the chdb shim) it serves
the page and the API and is ready once it reads the topics; against an embedded store that
a worker holds it says, in one line, to let the worker serve the UI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from processor.generate.sinks import send_kafka
from processor.localstack import free_port
from tests.chshim import start_shim
from tests.e2e.procs import ChildProcess
from tests.integration.harness import http_get, make_pipeline, shop_traffic, wait_until

pytestmark = pytest.mark.integration


def test_ui_alone_against_a_clickhouse_server(broker, new_topic, unique_name, tmp_path) -> None:
    topic = new_topic("spans")
    shim = start_shim(tmp_path / "clickhouse")
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("uiw"), narrator=True, clickhouse=shim.url)
    port = free_port()
    # The UI defined but not in service.extensions: the worker does not serve it, `ui` does.
    ui_cfg = tmp_path / "ui.yaml"
    ui_cfg.write_text(p.config_path.read_text() + f"extensions:\n  ui: {{endpoint: 127.0.0.1:{port}}}\n")
    ui = ChildProcess([sys.executable, "-m", "pipelines.cli", "ui", "--config", str(ui_cfg)], tmp_path / "ui.log")
    traces, _ = shop_traffic(seed=5, seconds=8)
    try:
        p.start()
        ui.start()
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_get(base + "/healthz")[0] == 200, 60, "the UI process to answer")
        assert http_get(base + "/")[0] == 200
        wait_until(lambda: http_get(base + "/readyz")[0] == 200, 60, "the UI to be ready")
        asyncio.run(send_kafka(traces, [broker.bootstrap], topic))
        wait_until(lambda: len(json.loads(http_get(base + "/api/query/health?since=24h")[1] or b"[]")) > 0, 90,
                   "health windows through the UI's API", p)
        assert "web UI at http://127.0.0.1" in ui.log()
    finally:
        ui.stop()
        p.stop()
        shim.stop()


def test_ui_alone_on_a_held_embedded_store_says_what_to_do(broker, new_topic, unique_name, tmp_path) -> None:
    topic = new_topic("spans")
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("uic"), narrator=True).start()
    ui_cfg = tmp_path / "ui.yaml"
    ui_cfg.write_text(p.config_path.read_text() + f"extensions:\n  ui: {{endpoint: 127.0.0.1:{free_port()}}}\n")
    try:
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", "ui", "--config", str(ui_cfg)],
                              capture_output=True, text=True, timeout=60)
    finally:
        p.stop()
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and said.count("error:") == 1 and "Traceback" not in said, done.stderr
    assert "list `ui` in service.extensions" in said
