"""The CLI as a user runs it: validate-config, query through a running worker and directly."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from processor.generate import GroundTruth, ShopGenerator
from processor.generate.sinks import send_kafka
from tests.integration.harness import make_pipeline, wait_until

pytestmark = pytest.mark.integration


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # Wide enough that rich does not elide names in tables (CI has no terminal).
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, COLUMNS="200"))


def test_validate_config_reports_every_problem_on_its_own_line(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("receivers:\n  kafka:\n    brokers: [a:1]\n    bogus: 1\nprocessors:\n"
                   "  windows: {size: soon}\nexporters:\n  clickhouse: {endpoint: 'chdb:///tmp/x'}\n"
                   "service:\n  pipelines:\n    traces: {receivers: [kafka], exporters: [clickhouse]}\n")
    done = cli("validate-config", str(bad))
    assert done.returncode == 2
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert any("receivers.kafka.bogus" in ln for ln in lines)
    assert any("processors.windows.size" in ln for ln in lines)
    assert "Traceback" not in done.stderr
    ok = cli("validate-config", "config/local.yaml")
    assert ok.returncode == 0, ok.stderr


def test_query_goes_through_the_running_worker_then_directly(broker, new_topic, unique_name, tmp_path) -> None:
    topic = new_topic("spans")
    start = (time.time_ns() // 2_000_000_000 - 30) * 2_000_000_000
    traces = list(ShopGenerator(seed=3, rate=100, start_ns=start).traces(6))
    truth = GroundTruth(2_000_000_000)
    truth.add_all(traces)
    want_calls = sum(v["calls"] for v in truth.service_windows().values())
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("q")).start()
    try:
        asyncio.run(send_kafka(traces, [broker.bootstrap], topic))
        wait_until(lambda: sum(r["calls"] for r in p.query("health")) == want_calls, 60,
                   "all calls final", p)
        # chdb is held by the worker: the CLI must answer through the worker's HTTP API.
        done = cli("query", "health", "--config", str(p.config_path), "--since", "100000h",
                   "--format", "json")
        assert done.returncode == 0, done.stderr
        assert sum(r["calls"] for r in json.loads(done.stdout)) == want_calls
        table = cli("query", "topology", "--config", str(p.config_path), "--since", "100000h")
        assert table.returncode == 0 and "frontend" in table.stdout and "product-catalog" in table.stdout
    finally:
        p.stop()
    # Worker gone: the same command opens the embedded store itself.
    done = cli("query", "health", "--config", str(p.config_path), "--since", "100000h", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert sum(r["calls"] for r in json.loads(done.stdout)) == want_calls


def test_query_says_what_to_do_when_the_store_is_held_and_nobody_answers(tmp_path) -> None:
    from processor.localstack import free_port

    data = tmp_path / "chdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from processor.storage.backends import ChdbBackend;"
         f" b=ChdbBackend('{data}'); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        cfg = tmp_path / "c.yaml"
        cfg.write_text("receivers:\n  kafka: {brokers: ['127.0.0.1:1']}\nexporters:\n"
                       f"  clickhouse: {{endpoint: 'chdb://{data}'}}\n"
                       f"  prometheus: {{endpoint: '127.0.0.1:{free_port()}'}}\n"
                       "service:\n  pipelines:\n    traces: {receivers: [kafka], exporters: [clickhouse, prometheus]}\n")
        done = cli("query", "health", "--config", str(cfg))
        assert done.returncode == 2
        err = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
        assert err and "in use by pid" in done.stderr and "Traceback" not in done.stderr
    finally:
        holder.kill()


def test_run_with_unreachable_kafka_exits_with_one_clear_line(tmp_path) -> None:
    from processor.localstack import free_port

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"receivers:\n  kafka: {{brokers: ['127.0.0.1:{free_port()}']}}\nexporters:\n"
                   f"  clickhouse: {{endpoint: 'chdb://{tmp_path / 'db'}'}}\n"
                   "service:\n  pipelines:\n    traces: {receivers: [kafka], exporters: [clickhouse]}\n")
    done = cli("run", "--config", str(cfg))
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot reach Kafka"), done.stderr
    assert "Traceback" not in done.stderr and "Unclosed" not in done.stderr


def test_dashboards_generate_list_show_and_export_through_the_running_worker(broker, new_topic, unique_name,
                                                                             tmp_path) -> None:
    import urllib.error
    import urllib.request

    from processor.dashboards import spec
    from tests.integration.harness import read_topic

    topic = new_topic("spans")
    start = (time.time_ns() // 2_000_000_000 - 30) * 2_000_000_000
    traces = list(ShopGenerator(seed=4, rate=100, start_ns=start).traces(6))
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("dash"), narrator=True).start()
    cfg = str(p.config_path)
    try:
        asyncio.run(send_kafka(traces, [broker.bootstrap], topic))
        wait_until(lambda: any(r["service"] == "cart" for r in p.query("health")), 60, "cart's windows final", p)
        done = cli("dashboards", "generate", "--config", cfg, "--service", "cart", "--audience", "developer")
        assert done.returncode == 0, done.stderr
        listed = cli("dashboards", "list", "--config", cfg)
        assert listed.returncode == 0 and "service" in listed.stdout
        (dash_id,) = [row["dashboard_id"] for row in p.get("/api/dashboards")]
        assert dash_id in done.stdout
        show = cli("dashboards", "show", dash_id, "--config", cfg)
        assert show.returncode == 0, show.stderr
        shown = json.loads(show.stdout)
        assert shown["service"] == "cart" and shown["audience"] == "developer" and spec.check(shown) == []
        exported = cli("dashboards", "export", dash_id, "--config", cfg, "--format", "grafana")
        assert exported.returncode == 0, exported.stderr
        grafana = json.loads(exported.stdout)
        assert grafana["uid"] == dash_id[:40] and len(grafana["panels"]) == len(shown["panels"])
        again = cli("dashboards", "generate", "--config", cfg, "--service", "cart", "--audience", "developer")
        assert again.returncode == 0, again.stderr
        # Published on the specs topic: the same id, versions 1 and 2.
        published = asyncio.run(read_topic(broker.bootstrap, f"{topic}-dashboards"))
        assert [(s["id"], s["version"]) for s in published] == [(dash_id, 1), (dash_id, 2)]
        # A service with no data is refused with the reason; unknown ids and bad input are 4xx.
        ghost = cli("dashboards", "generate", "--config", cfg, "--service", "no-such-service")
        assert ghost.returncode == 2 and "failed its checks" in ghost.stderr and "Traceback" not in ghost.stderr
        missing = cli("dashboards", "show", "nope", "--config", cfg)
        assert missing.returncode == 2 and "no dashboard 'nope'" in missing.stderr
        with pytest.raises(urllib.error.HTTPError) as bad:
            urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{p.port}/api/dashboards/generate?audience=ceo", method="POST"), timeout=10)
        assert bad.value.code == 400
    finally:
        p.stop()
