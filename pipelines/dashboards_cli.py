"""`otel-insights dashboards`: generate, list, show and export dashboard specs; write Grafana's files.

Reads go through catalogue queries (asking a running worker when it holds an embedded store,
as `query` does). `generate` asks the running worker to generate, check, store and publish
(POST /api/dashboards/generate); with a ClickHouse server and no worker answering, it does
the same itself, publishing on the specs topic with its own producer.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from processor.config import Config
from processor.errors import OtelInsightsError

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="collector-style YAML config")]


class Audience(str, Enum):
    sre = "sre"
    developer = "developer"
    manager = "manager"


class ExportFormat(str, Enum):
    grafana = "grafana"
    spec = "spec"


def register(app: typer.Typer, out: Console, fail: Callable[[BaseException], None],
             load: Callable[[Path], Config]) -> None:
    dash = typer.Typer(no_args_is_help=True, help="Generated dashboard specs (and Grafana dashboards).")
    app.add_typer(dash, name="dashboards")

    @dash.command("generate")
    def generate(config: ConfigOpt,
                 service: Annotated[str, typer.Option(help="the service (none: the overview)")] = "",
                 audience: Annotated[Audience, typer.Option(help="who reads it")] = Audience.sre) -> None:
        """Generate, check, store and publish a service's (or the overview's) dashboard."""
        try:
            spec = _generate(load(config), service, audience.value)
        except (OtelInsightsError, ValueError) as exc:
            fail(exc)
        out.print(f"dashboard [bold]{escape(spec['id'])}[/] version {spec['version']}: {escape(spec['title'])} "
                  f"({len(spec['panels'])} panels) published on {escape(load(config).dashboards.topic)}"  # type: ignore[union-attr]
                  , highlight=False)

    @dash.command("list")
    def list_(config: ConfigOpt,
              since: Annotated[str, typer.Option(help="updated within, e.g. 24h")] = "720h",
              kind: Annotated[str, typer.Option(help="incident, service, overview or custom")] = "") -> None:
        """Dashboards stored, newest first."""
        from pipelines.query import fetch

        try:
            rows = fetch(load(config), "dashboards", since, {"kind": kind} if kind else {})
        except (OtelInsightsError, ValueError) as exc:
            fail(exc)
        t = Table(title=f"dashboards ({len(rows)})")
        for c in ("dashboard_id", "version", "kind", "audience", "generator", "updated_at", "title"):
            t.add_column(c)
        for r in rows:  # titles hold service names: never rich markup
            t.add_row(*(escape(str(r[c])) for c in ("dashboard_id", "version", "kind", "audience", "generator",
                                                    "updated_at", "title")))
        out.print(t)

    @dash.command("show")
    def show(dashboard_id: str, config: ConfigOpt) -> None:
        """One dashboard's newest spec, as JSON."""
        try:
            spec = _one(load(config), dashboard_id)
        except (OtelInsightsError, ValueError) as exc:
            fail(exc)
        sys.stdout.write(json.dumps(spec, indent=2, ensure_ascii=False) + "\n")

    @dash.command("export")
    def export(dashboard_id: str, config: ConfigOpt,
               format: Annotated[ExportFormat, typer.Option("--format", "-f")] = ExportFormat.grafana,
               out_file: Annotated[Path | None, typer.Option("--out", help="write here instead of stdout")] = None
               ) -> None:
        """A dashboard as Grafana dashboard JSON (import it, or drop it in a provisioned folder)."""
        from processor.dashboards import grafana
        from processor.storage.catalogue import Context

        try:
            cfg = load(config)
            spec = _one(cfg, dashboard_id)
            ch = cfg.clickhouse
            body = spec if format is ExportFormat.spec else grafana.export(spec, Context(
                ch.database if ch else "otel_insights", cfg.windows.size.ms, cfg.windows.health))
        except (OtelInsightsError, ValueError) as exc:
            fail(exc)
        text = json.dumps(body, indent=2, ensure_ascii=False) + "\n"
        if out_file is None:
            sys.stdout.write(text)
        else:
            out_file.write_text(text)
            out.print(f"wrote {escape(str(out_file))}")

    @dash.command("provision")
    def provision(out_dir: Annotated[Path, typer.Option("--out", help="folder for the dashboard files")],
                  config: Annotated[Path | None, typer.Option("--config", "-c")] = None) -> None:
        """Write the shipped Grafana dashboards for a config (its database, windows, health)."""
        try:
            written = write_grafana_files(out_dir, load(config) if config else None)
        except (OtelInsightsError, ValueError) as exc:
            fail(exc)
        out.print(f"wrote {len(written)} dashboards to {escape(str(out_dir))}")


def grafana_files(cfg: Config | None = None) -> dict[str, str]:
    """File name -> the shipped Grafana dashboard's JSON text."""
    from processor.config.components import WindowsConfig
    from processor.dashboards import grafana, shipped
    from processor.storage.catalogue import Context

    windows = cfg.windows if cfg is not None else WindowsConfig()
    db = cfg.clickhouse.database if cfg is not None and cfg.clickhouse is not None else "otel_insights"
    ctx = Context(db, windows.size.ms, windows.health)
    return {f"{name}.json": json.dumps(grafana.export(spec, ctx), indent=2, ensure_ascii=False) + "\n"
            for name, spec in shipped.specs(windows.health).items()}


def write_grafana_files(out_dir: Path, cfg: Config | None = None) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in grafana_files(cfg).items():
        (out_dir / name).write_text(text)
        paths.append(out_dir / name)
    return paths


def _one(cfg: Config, dashboard_id: str) -> dict[str, Any]:
    from pipelines.query import fetch

    rows = fetch(cfg, "dashboard", None, {"dashboard_id": dashboard_id, "since_ms": "0"})
    if not rows:
        raise OtelInsightsError(f"no dashboard {dashboard_id!r}: `otel-insights dashboards list` shows what exists")
    return json.loads(rows[0]["spec"])


def _generate(cfg: Config, service: str, audience: str) -> dict[str, Any]:
    from pipelines.query import api_base, api_request

    if cfg.dashboards is None:
        raise OtelInsightsError("no dashboards processor in service.pipelines.traces.processors")
    base = api_base(cfg)
    if base is not None:
        url = f"{base}/api/dashboards/generate?{urlencode({'service': service, 'audience': audience})}"
        try:
            return dict(api_request(cfg, url, "POST", timeout_s=60))
        except (urllib.error.URLError, OSError):
            if cfg.clickhouse is not None and cfg.clickhouse.backend == "chdb":
                raise OtelInsightsError(f"no running otel-insights answered at {base}: start `otel-insights run` "
                                        "(it holds the embedded store) and try again") from None
    return asyncio.run(_generate_here(cfg, service, audience))


async def _generate_here(cfg: Config, service: str, audience: str) -> dict[str, Any]:
    """No worker answered and the store is a server: generate and publish from this process."""
    from aiokafka import AIOKafkaProducer

    from pipelines.dashboards import DashboardPublisher
    from pipelines.store_io import StoreIO
    from processor.storage.open import open_store
    from processor.telemetry import Metrics

    assert cfg.clickhouse is not None and cfg.kafka is not None and cfg.dashboards is not None
    io = StoreIO(open_store(cfg.clickhouse, migrate=False, windows=cfg.windows), Metrics(), cfg.windows.size.ms)
    producer = AIOKafkaProducer(bootstrap_servers=list(cfg.kafka.brokers), acks="all",
                                **cfg.kafka.client_options())
    await producer.start()

    class Sink:
        async def send(self, key: bytes, value: bytes) -> None:
            await producer.send_and_wait(cfg.dashboards.topic, value, key=key)  # type: ignore[union-attr]

    try:
        publisher = DashboardPublisher(cfg, io, Metrics(), Sink())
        return await publisher.generate("service" if service else "overview", audience, service)
    finally:
        await producer.stop()
        io.close()
