"""`otel-insights demo`: the whole stack on this machine, with live topology and health."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from pipelines.query import HEALTH_COLOURS
from processor.errors import OtelInsightsError
from processor.localstack import LocalBroker

# After the detectors' warm-up (grace_windows x 10s windows in config/local.yaml).
DEMO_FAULTS = ["latency_shift:product-catalog:150:60:4", "error_burst:cart:270:40:0.3",
               "traffic_drop:recommendation:360:40:0.9"]


def local_config_path() -> Path:
    return Path(str(resources.files("processor.config").joinpath("local.yaml")))


def _get_json(url: str) -> Any:
    import json

    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def run_demo(duration: float, data_dir: Path, rate: float, console: Console) -> None:
    from processor.config import load_config
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = local_config_path()
    env = dict(os.environ)
    env.setdefault("OTEL_INSIGHTS_DATA", str((data_dir / "chdb").resolve()))
    cfg = load_config(cfg_path, environ=env)
    host, port = cfg.kafka.brokers[0].rsplit(":", 1)  # type: ignore[union-attr]
    broker = LocalBroker(port=int(port), host=host, log_path=data_dir / "broker.log")
    console.print(f"starting local broker on {broker.bootstrap} ...")
    broker.start()
    worker: subprocess.Popen[bytes] | None = None
    traffic: threading.Thread | None = None
    stop = threading.Event()
    try:
        for topic in cfg.kafka.traces.topics:  # type: ignore[union-attr]
            broker.create_topic(topic, cfg.kafka.partitions)  # type: ignore[union-attr]
        log = open(data_dir / "pipeline.log", "ab")
        console.print(f"starting pipeline (logs: {data_dir / 'pipeline.log'}) ...")
        worker = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "run", "--config", str(cfg_path)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        http = cfg.otlp.protocols.http.endpoint  # type: ignore[union-attr]
        api = "http://{}:{}".format(*cfg.prometheus.host_port)  # type: ignore[union-attr]
        _wait_http(f"{api}/healthz", worker, 90)
        _wait_port(http, worker, 30)  # the OTLP receiver binds after the worker's web server
        traffic = threading.Thread(target=_traffic, args=(f"http://{http}/v1/traces", rate, stop),
                                   daemon=True)
        traffic.start()
        console.print(f"traffic: {rate:g} traces/s into OTLP/HTTP {http}; faults at "
                      f"{', '.join(DEMO_FAULTS)}; metrics {api}/metrics; Ctrl-C to stop")
        if cfg.ui is not None:
            console.print("web UI: http://{}:{}/ (service map, insights, dashboards)".format(*cfg.ui.host_port))
        t0 = time.monotonic()
        with Live(console=console, refresh_per_second=1, transient=False) as live:
            while not duration or time.monotonic() - t0 < duration:
                if worker.poll() is not None:
                    raise OtelInsightsError(f"pipeline exited with {worker.returncode}; see {data_dir / 'pipeline.log'}")
                try:
                    topo = _get_json(f"{api}/api/query/topology?since=1m")
                    health = _latest(_get_json(f"{api}/api/query/health?since=1m"))
                    anomalies = _get_json(f"{api}/api/query/anomalies?since=10m")
                    insights = _get_json(f"{api}/api/query/insights?since=30m")
                    live.update(Group(topology_table(topo), health_table(health),
                                      anomalies_table(anomalies), insights_table(insights)))
                except OSError:
                    pass
                time.sleep(2)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        if traffic is not None:
            traffic.join(timeout=5)  # no requests into a gateway that is going away
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
        broker.stop()
        console.print("demo stopped")


def topology_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="service graph, last minute", title_justify="left")
    for col, just in (("client", "left"), ("server", "left"), ("type", "left"), ("requests", "right"),
                      ("failed %", "right"), ("server p95 ms", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in sorted(rows, key=lambda r: (-int(r["requests"]), r["client"], r["server"])):
        p95 = r.get("server_p95_ms") or r.get("client_p95_ms")
        t.add_row(escape(r["client"]), escape(r["server"]), escape(r["connection_type"] or "-"), str(r["requests"]),
                  f"{100 * float(r['error_rate']):.1f}", f"{p95:.1f}" if p95 else "-")
    return t


def health_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="service health, newest final window", title_justify="left")
    for col in ("service", "window", "calls", "errors %", "p50 ms", "p95 ms", "p99 ms", "health"):
        t.add_column(col, justify="left" if col in ("service", "window", "health") else "right")
    for r in rows:
        h = str(r["health"])
        t.add_row(escape(r["service"]), str(r["window_start"])[11:19], str(r["calls"]),
                  f"{100 * float(r['error_rate']):.1f}", f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}",
                  f"{r['p99_ms']:.1f}", f"[{HEALTH_COLOURS.get(h, 'white')}]{h}[/]")
    return t


def anomalies_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="anomalies, last 10 minutes (newest first)", title_justify="left")
    for col in ("window", "entity", "metric", "observed", "expected", "score", "severity", "incident"):
        t.add_column(col, justify="right" if col in ("observed", "expected", "score") else "left")
    for r in sorted(rows, key=lambda r: (str(r["window_start"]), -float(r["score"])), reverse=True)[:12]:
        sev = str(r["severity"])
        t.add_row(str(r["window_start"])[11:19], escape(r["entity"]), r["metric"], f"{r['observed']:.2f}",
                  f"{r['expected']:.2f}", f"{r['score']:.2f}",
                  f"[{'red' if sev == 'critical' else 'yellow'}]{sev}[/]", str(r["incident_id"])[-8:])
    if not rows:
        t.add_row("-", "none yet (detectors learn for the first windows)", "", "", "", "", "", "")
    return t


def insights_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="incident insights (newest first; `otel-insights tail enriched-insights` for the whole "
                    "narrative)", title_justify="left")
    for col in ("since", "status", "severity", "origin", "summary"):
        t.add_column(col, overflow="fold", ratio=4 if col == "summary" else None)
    for r in sorted(rows, key=lambda r: str(r["window_start"]), reverse=True)[:4]:
        sev = str(r["severity"])
        t.add_row(str(r["window_start"])[11:19], f"{r['status']} v{r['version']}",
                  f"[{'red' if sev == 'critical' else 'yellow'}]{sev}[/]",
                  escape(str(r.get("suspected_origin") or "-")), escape(str(r["summary"])))
    if not rows:
        t.add_row("-", "none yet", "", "", "each incident's summary shows here as it opens")
    return t


def _latest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Newest final window per service."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        cur = best.get(r["service"])
        if cur is None or str(r["window_start"]) > str(cur["window_start"]):
            best[r["service"]] = r
    return sorted(best.values(), key=lambda r: r["service"])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OtelInsightsError(f"pipeline exited with {proc.returncode} during start-up")
        try:
            _get_json(url)
            return
        except OSError:
            time.sleep(0.5)
    raise OtelInsightsError(f"pipeline did not answer at {url} within {timeout_s:.0f}s")


def _wait_port(endpoint: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    import socket

    host, port = endpoint.rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OtelInsightsError(f"pipeline exited with {proc.returncode} during start-up")
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise OtelInsightsError(f"the OTLP receiver did not listen on {endpoint} within {timeout_s:.0f}s")


def _traffic(url: str, rate: float, stop: threading.Event) -> None:
    from processor.generate import ShopGenerator, paced
    from processor.generate.demo_traffic import parse_fault, run_http

    start = time.time_ns()
    gen = ShopGenerator(seed=int(start % 1000), rate=rate, start_ns=start,
                        faults=[parse_fault(f, start) for f in DEMO_FAULTS])
    traces = paced(gen.traces(float("inf")))
    ev = asyncio.Event()

    async def go() -> None:
        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.2)
            ev.set()

        w = asyncio.create_task(watch())
        await run_http(traces, url, stop=ev)
        w.cancel()

    asyncio.run(go())
