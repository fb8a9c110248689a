"""`otel-insights` command line: one clear error line on failure, never a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, get_args

import typer
from rich.console import Console

from pipelines.dashboards_cli import register as register_dashboards
from processor.config.components import Encoding, KafkaTraces
from processor.errors import OtelInsightsError
from processor.storage.catalogue_sql import CATALOGUE

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="OpenTelemetry service graph and health windows from Kafka into ClickHouse.")
err = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="collector-style YAML config")]


QueryName = Enum("QueryName", {name: name for name in CATALOGUE}, type=str)  # type: ignore[misc]


class Format(str, Enum):
    table = "table"
    json = "json"


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--param {text!r}: use KEY=VALUE")
    return key.strip(), value


def _fail(exc: BaseException) -> None:
    for line in str(exc).splitlines() or [type(exc).__name__]:
        err.print(f"[red]error:[/red] {line}", highlight=False, markup=True)
    raise typer.Exit(2)


def _load(path: Path):  # type: ignore[no-untyped-def]
    from processor.config import load_config

    return load_config(path)


@app.command("validate-config")
def validate_config(file: Path) -> None:
    """Validate a config file; print one line per problem."""
    try:
        cfg = _load(file)
    except OtelInsightsError as exc:
        _fail(exc)
    out.print(f"{file}: ok (pipeline traces: {', '.join(cfg.service.pipelines.traces.receivers)} "
              f"-> {', '.join(cfg.service.pipelines.traces.exporters)})")


@app.command()
def migrate(config: ConfigOpt) -> None:
    """Create or upgrade the ClickHouse schema (idempotent)."""
    from processor.storage.open import open_store

    try:
        cfg = _load(config)
        if cfg.clickhouse is None:
            raise OtelInsightsError("no clickhouse exporter in the traces pipeline")
        store = open_store(cfg.clickhouse, migrate=False, windows=cfg.windows)
        applied = store.migrate(cfg.clickhouse.ttl.ns // 1_000_000_000, cfg.clickhouse.cluster_name)
        store.close()
    except OtelInsightsError as exc:
        _fail(exc)
    out.print(f"applied migrations: {applied or 'none (schema up to date)'}")


def _log_level(cfg, override: str | None) -> str:  # type: ignore[no-untyped-def]
    """--log-level, else the config's service.telemetry.logs.level (logging's level name)."""
    level = override or cfg.service.telemetry.logs.level
    return "warning" if level == "warn" else level


@app.command()
def run(config: ConfigOpt,
        log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error (default: "
                                                      "the config's service.telemetry.logs.level)")] = None,
        create_input_topic: Annotated[bool, typer.Option(help="create the input topic if missing")] = False) -> None:
    """Run the configured pipeline until SIGTERM/SIGINT."""
    from pipelines.worker import run as run_worker

    try:
        cfg = _load(config)
        run_worker(cfg, loglevel=_log_level(cfg, log_level), create_input_topic=create_input_topic)
    except OtelInsightsError as exc:
        _fail(exc)


@app.command()
def gateway(config: ConfigOpt) -> None:
    """Run only the OTLP gateway (gRPC + HTTP) writing to Kafka; /metrics, /healthz and
    /readyz on the prometheus exporter's endpoint."""
    from pipelines.worker import serve_gateway

    try:
        cfg = _load(config)
        if cfg.otlp is None:
            raise OtelInsightsError("receivers.otlp is not configured")
        logging.getLogger().setLevel(_log_level(cfg, None).upper())
        asyncio.run(serve_gateway(cfg, lambda line: err.print(line, highlight=False)))
    except OtelInsightsError as exc:
        _fail(exc)


@app.command()
def generate(
    brokers: Annotated[str, typer.Option(help="comma-separated Kafka brokers")] = "127.0.0.1:19092",
    topic: Annotated[str, typer.Option()] = KafkaTraces().topics[0],
    otlp_http: Annotated[str, typer.Option(help="send to this OTLP/HTTP URL instead of Kafka")] = "",
    rate: Annotated[float, typer.Option(help="traces per second")] = 50.0,
    duration: Annotated[float, typer.Option(help="seconds of traffic")] = 60.0,
    encoding: Annotated[str, typer.Option(help=" or ".join(get_args(Encoding)))] = KafkaTraces().encoding,
    seed: Annotated[int, typer.Option()] = 1,
    realtime: Annotated[bool, typer.Option(help="pace to wall clock (else as fast as possible)")] = True,
    fault: Annotated[list[str], typer.Option(help="KIND:TARGET:START_S:DURATION_S[:MAGNITUDE], e.g. latency_shift:payment:30:60:4")] = [],  # noqa: B006
    labels: Annotated[Path | None, typer.Option(help="write the injected faults as JSON here")] = None,
) -> None:
    """Synthetic OTLP traffic shaped like the OpenTelemetry demo shop, with labelled faults."""
    import time

    from processor.generate import ShopGenerator, paced
    from processor.generate.demo_traffic import parse_fault, run_http

    try:
        start = time.time_ns()
        faults = [parse_fault(f, start) for f in fault]
        gen = ShopGenerator(seed=seed, rate=rate, start_ns=start, faults=faults)
    except (OtelInsightsError, ValueError) as exc:
        _fail(exc)
    if labels:
        labels.write_text(json.dumps(gen.labels(), indent=2))
    traces = gen.traces(duration)
    if realtime:
        traces = paced(traces)
    if otlp_http:
        n = asyncio.run(run_http(traces, otlp_http))
    else:
        from processor.generate.sinks import send_kafka

        n = asyncio.run(send_kafka(traces, brokers.split(","), topic, encoding))
    err.print(f"sent {n} traces")


@app.command()
def query(name: QueryName, config: ConfigOpt,  # type: ignore[valid-type]
          since: Annotated[str, typer.Option(help="look-back, e.g. 15m, 2h")] = "15m",
          param: Annotated[list[str] | None, typer.Option(
              "--param", "-p", help="a parameter of the query, KEY=VALUE (repeatable), e.g. service=cart")] = None,
          format: Annotated[Format, typer.Option("--format", "-f")] = Format.table) -> None:
    """Print the rows of a catalogue query (asks a running process when it holds the store)."""
    from pipelines.query import fetch, render_table

    try:
        params = dict(_key_value(p) for p in param or ())
        rows = fetch(_load(config), name.value, since, params)
    except (OtelInsightsError, ValueError) as exc:
        _fail(exc)
    if format is Format.json:
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
    else:
        out.print(render_table(name.value, rows))


@app.command()
def tail(topic: str,
         brokers: Annotated[str, typer.Option(help="comma-separated Kafka brokers")] = "127.0.0.1:19092",
         from_beginning: Annotated[bool, typer.Option()] = False,
         limit: Annotated[int, typer.Option(help="stop after N records (0 = follow)")] = 0) -> None:
    """Follow a topic and pretty-print its records (OTLP, JSON or raw)."""
    from pipelines.tail import follow

    try:
        asyncio.run(follow(topic, brokers.split(","), from_beginning, limit, out))
    except OtelInsightsError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        pass


evaluate_app = typer.Typer(no_args_is_help=True, help="Score anomaly detectors on labelled data.")
app.add_typer(evaluate_app, name="evaluate")


@evaluate_app.command("nab", add_help_option=False,
                      context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def evaluate_nab(ctx: typer.Context) -> None:
    """NAB scoring (standard / low-FP / low-FN): --data DIR [--windows FILE] [--detector ...] [--out DIR]."""
    from processor.evaluate.nab.cli import main as nab_main

    raise typer.Exit(nab_main(list(ctx.args), out))


@evaluate_app.command("faults", add_help_option=False,
                      context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def evaluate_faults(ctx: typer.Context) -> None:
    """Injected faults in generated traffic: precision, recall, F1, delay, false alarms per entity-day."""
    from processor.evaluate.faults_cli import main as faults_main

    raise typer.Exit(faults_main(list(ctx.args), out))


@evaluate_app.command("narratives", add_help_option=False,
                      context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def evaluate_narratives(ctx: typer.Context) -> None:
    """Insights on labelled faults: suspected origin top 1 / top 3, grounded share, cost
    (--seed N --days D --jobs J)."""
    from processor.evaluate.narratives_cli import main as narratives_main

    raise typer.Exit(narratives_main(list(ctx.args), out))


@app.command()
def ui(config: ConfigOpt) -> None:
    """Serve the web UI alone (against a ClickHouse server; with an embedded chdb store, list
    `ui` in service.extensions and `run` serves it)."""
    from pipelines.ui_main import serve

    try:
        cfg = _load(config)
        logging.getLogger().setLevel(_log_level(cfg, None).upper())
        asyncio.run(serve(cfg, err))
    except OtelInsightsError as exc:
        _fail(exc)


register_dashboards(app, out, _fail, _load)


@app.command()
def demo(duration: Annotated[float, typer.Option(help="seconds to run (0 = until Ctrl-C)")] = 0,
         data_dir: Annotated[Path, typer.Option(help="where the embedded ClickHouse keeps data")] = Path(".otel-insights"),
         rate: Annotated[float, typer.Option(help="traces per second")] = 40.0) -> None:
    """Embedded stack: local broker, embedded ClickHouse, gateway, pipeline and shop traffic."""
    from pipelines.demo import run_demo

    try:
        run_demo(duration=duration, data_dir=data_dir, rate=rate, console=out)
    except OtelInsightsError as exc:
        _fail(exc)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
