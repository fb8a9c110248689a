"""Runs `otel-insights run` as a real child process against the session broker and chdb."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processor.localstack import free_port

CONFIG = """
receivers:
  kafka:
    brokers: ["{bootstrap}"]
    group_id: {group}
    initial_offset: earliest
    traces: {{topics: [{topic}], encoding: {encoding}}}
    partitions: 3
    max_batch_records: {batch}
    max_batch_wait: 100ms
    rekey: {rekey}
    rekey_topic: {topic}-rekeyed
    partials_topic: {topic}-partials{kafka_options}
processors:
  servicegraph:
    store: {{ttl: 1s, max_items: 100000}}
  windows: {{size: {window}, allowed_lateness: {lateness}, idle_timeout: 2s{windows_options}}}
  anomaly: {{grace_windows: 8, history: 1h, topic: {topic}-anomalies,
            judge_empty_windows: {judge_empty}{anomaly_options}}}
  narrator: {{topic: {topic}-insights, cooldown: {cooldown}{narrator_options}}}
  dashboards: {{topic: {topic}-dashboards}}
exporters:
  clickhouse: {{endpoint: "{clickhouse}", database: otel_insights, ttl: 0s, create_schema: true{clickhouse_options}}}
  prometheus: {{endpoint: "127.0.0.1:{port}"{prometheus_options}}}
  kafka/dlq: {{topic: {topic}-dlq{dlq_options}}}
{ui_section}service:
  pipelines:
    traces: {{receivers: [kafka], processors: [servicegraph, windows{anomaly}{narrator}], exporters: [clickhouse, prometheus]}}{telemetry}{ui_service}
"""


@dataclass
class Pipeline:
    config_path: Path
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_level: str | None = "info"  # None: the config's service.telemetry.logs.level
    env: dict[str, str] = field(default_factory=dict)  # added to the environment, e.g. processor.failpoints
    token: str = ""  # the query API's bearer token, when the config asks for one
    prefix: str = ""  # the metrics namespace, "<namespace>_"

    def start(self, timeout_s: float = 90) -> Pipeline:
        log = open(self.log_path, "ab")
        level = ["--log-level", self.log_level] if self.log_level else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "run", "--config", str(self.config_path), *level],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **self.env))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"pipeline exited {self.proc.returncode}:\n{self.log()}")
            try:
                self.get("/healthz")
                return self
            except OSError:
                time.sleep(0.3)
        self.proc.kill()
        self.proc.wait()
        raise AssertionError(f"pipeline did not come up:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def get(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as r:
            body = r.read()
        return body.decode() if path == "/metrics" else json.loads(body)

    def status(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """(HTTP status, JSON body or text) of a GET, errors included."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                code, body = r.status, r.read()
        except urllib.error.HTTPError as exc:
            code, body = exc.code, exc.read()
        try:
            return code, json.loads(body)
        except ValueError:
            return code, body.decode(errors="replace")

    def query(self, name: str) -> list[dict[str, Any]]:
        return self.get(f"/api/query/{name}?since=100000h")

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        name = self.prefix + name
        for line in self.get("/metrics").splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                if all(f'{k}="{v}"' in line for k, v in labels.items()):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"pipeline did not stop within {timeout_s}s:\n{self.log()}") from None


def make_pipeline(tmp: Path, bootstrap: str, topic: str, group: str, encoding: str = "otlp_proto",
                  window: str = "2s", rekey: str = "auto", lateness: str = "2s",
                  batch: int = 200, anomaly: bool = False, anomaly_options: str = "",
                  clickhouse: str | None = None, judge_empty: bool = False, narrator: bool = False,
                  cooldown: str = "1s", narrator_options: str = "", kafka_options: str = "",
                  windows_options: str = "", clickhouse_options: str = "",
                  prometheus_options: str = "", dlq_options: str = "",
                  logs_level: str | None = None, ui: str | None = None) -> Pipeline:
    """A worker config; ``anomaly_options`` is extra flow-style YAML for processors.anomaly,
    and each ``<section>_options`` for that section (``kafka_options`` as block YAML lines
    under receivers.kafka, e.g. "\n    client_id: x"). ``logs_level`` sets
    service.telemetry.logs.level (the worker then starts without --log-level).

    Tests send traffic from the past that then stops: judging the silence after it (the
    default in production) would rightly flag that stop, so it is off unless asked for.

    ``clickhouse`` is an endpoint to share (e.g. a tests.chshim URL); by default each
    group gets its own chdb directory under ``tmp``. ``narrator`` runs stage 3 too (with
    anomaly), publishing insights on ``<topic>-insights`` and incident dashboards on
    ``<topic>-dashboards``. ``ui`` (flow-style YAML of extensions.ui, "" for its defaults)
    serves the web UI from the worker (it needs ``narrator``).
    """
    port = free_port()
    endpoint = clickhouse or f"chdb://{tmp / f'{group}-chdb'}"
    cfg = tmp / f"{group}.yaml"
    cfg.write_text(CONFIG.format(bootstrap=bootstrap, group=group, topic=topic, encoding=encoding,
                                 clickhouse=endpoint, port=port, window=window, rekey=rekey,
                                 lateness=lateness, batch=batch,
                                 anomaly=", anomaly" if anomaly or narrator else "",
                                 narrator=", narrator, dashboards" if narrator else "", cooldown=cooldown,
                                 ui_section=f"extensions:\n  ui: {{{ui}}}\n" if ui is not None else "",
                                 ui_service="\n  extensions: [ui]" if ui is not None else "",
                                 narrator_options=f", {narrator_options}" if narrator_options else "",
                                 anomaly_options=f", {anomaly_options}" if anomaly_options else "",
                                 judge_empty=str(judge_empty).lower(), kafka_options=kafka_options,
                                 windows_options=_opt(windows_options),
                                 clickhouse_options=_opt(clickhouse_options),
                                 prometheus_options=_opt(prometheus_options), dlq_options=_opt(dlq_options),
                                 telemetry=f"\n  telemetry: {{logs: {{level: {logs_level}}}}}" if logs_level else ""))
    return Pipeline(cfg, port, tmp / f"{group}.log", log_level=None if logs_level else "info")


def _opt(flow: str) -> str:
    return f", {flow}" if flow else ""


def http_get(url: str) -> tuple[int, bytes]:
    """(status, body) of a GET; an HTTP error is its status, nothing listening is 0."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def wait_until(pred: Any, timeout_s: float, what: str, pipeline: Pipeline | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{pipeline.log()}" if pipeline else ""))


async def read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every record of ``topic`` as JSON, in the order it was produced (timestamp, offset)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        out: list[tuple[int, int, dict[str, Any]]] = []
        while [tp for tp in tps if await c.position(tp) < ends[tp]]:
            for records in (await c.getmany(timeout_ms=1000)).values():
                out += [(r.timestamp, r.offset, json.loads(r.value)) for r in records]
        return [m for _, _, m in sorted(out, key=lambda t: (t[0], t[1]))]
    finally:
        await c.stop()


WINDOW_NS = 2_000_000_000  # the harness's default 2 s windows


def shop_traffic(seed: int, seconds: float, rate: float = 150.0) -> tuple[list[Any], Any]:
    """Shop traces starting a minute ago, window aligned, and their ground truth (2 s windows)."""
    from processor.generate import GroundTruth, ShopGenerator

    start = (time.time_ns() // WINDOW_NS - 60) * WINDOW_NS
    traces = list(ShopGenerator(seed=seed, rate=rate, start_ns=start).traces(seconds))
    truth = GroundTruth(WINDOW_NS)
    truth.add_all(traces)
    return traces, truth


def wait_exact(p: Pipeline, truth: Any, timeout_s: float = 120) -> None:
    """Wait for the final rows to equal the ground truth; on timeout, name the first difference."""
    from tests.truth_compare import assert_exact, counts_match

    try:
        wait_until(lambda: counts_match(truth, p.query("health"), p.query("edges")),
                   timeout_s, "final rows equal to ground truth", p)
    finally:
        assert_exact(truth, p.query("health"), p.query("edges"))


async def read_records(bootstrap: str, topic: str, want: int, timeout_s: float = 60) -> list[Any]:
    """At least ``want`` records of ``topic`` from its beginning (fewer on timeout)."""
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await c.start()
    got: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(got) < want and time.monotonic() < deadline:
            for msgs in (await c.getmany(timeout_ms=1000)).values():
                got += msgs
    finally:
        await c.stop()
    return got
