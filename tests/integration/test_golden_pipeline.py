"""The golden cases through the real pipeline: the local broker, a `run` worker and chdb.

One worker per config file runs that config's cases one after another on one input topic,
each case shifted an hour later in event time than the one before (so earlier cases' windows
are long closed). A case is done when its final rows, read back through the query API, are
the expected ones shifted; its traces_service_graph_* samples are the /metrics difference
across the case, for the series the case touched. Time steps (`advance`) are not replayed:
the worker's own idle flush (idle_timeout 2 s) is what ends each case, which is what those
steps stand for in the runner.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from processor.localstack import free_port
from tests.golden import EDGE_FIELDS, HEALTH_FIELDS, TESTDATA, config_file, spec_of, step_record
from tests.integration.harness import Pipeline, wait_until
from tests.truth_compare import iso_to_ns

pytestmark = pytest.mark.integration

# Every case of issue 13, and the database edge case its first point changed.
CASES = ("database_edge", "database_naming", "idle_flush_metrics", "client_consumer",
         "no_service_name", "connector_failed_label", "database_name_order", "connector_consume",
         "header_dimension", "connector_extra_dimensions", "connector_virtual_node_label")
GROUPS: dict[str, list[str]] = defaultdict(list)
for _case in CASES:
    GROUPS[config_file(_case).name].append(_case)
HOUR_NS = 3_600_000_000_000
CASE_START_MS = 1_767_225_600_000  # every case's spans are in the hour after this (2026-01-01)


def _worker_config(config_name: str, tmp: Path, bootstrap: str, topic: str, group: str,
                   port: int) -> Path:
    """The case config, pointed at the broker, chdb and a metrics port, and made to finish
    cases fast: idle after 2 s; spans from the cases' 2026 dates are not too old."""
    cfg = yaml.safe_load((TESTDATA / config_name).read_text())
    kafka = cfg["receivers"]["kafka"]
    kafka.update(brokers=[bootstrap], group_id=group, initial_offset="earliest", partitions=1,
                 rekey="never", partials_topic=f"{topic}-partials", rekey_topic=f"{topic}-rekeyed",
                 max_batch_wait="100ms")
    kafka["traces"]["topics"] = [topic]
    cfg["processors"]["windows"].update(idle_timeout="2s", max_span_age="100000h")
    cfg["exporters"] = {"clickhouse": {"endpoint": f"chdb://{tmp / f'{group}-chdb'}", "ttl": "0s"},
                        "prometheus": {"endpoint": f"127.0.0.1:{port}"},
                        "kafka/dlq": {"topic": f"{topic}-dlq"}}
    cfg["service"]["pipelines"]["traces"]["exporters"] = ["clickhouse", "prometheus"]
    path = tmp / f"{group}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _shifted(otlp: dict[str, Any], shift_ns: int) -> dict[str, Any]:
    out = json.loads(json.dumps(otlp))
    for rs in out["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for k in ("startTimeUnixNano", "endTimeUnixNano"):
                    sp[k] = str(int(sp[k]) + shift_ns)
    return out


async def _produce(bootstrap: str, topic: str, case: str, shift_ns: int) -> None:
    from aiokafka import AIOKafkaProducer

    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await prod.start()
    try:
        for step in spec_of(case)["steps"]:
            if "otlp" not in step:
                continue
            _, key, headers = step_record(step)
            value = json.dumps(_shifted(step["otlp"], shift_ns)).encode()
            await prod.send_and_wait(topic, value, key=key, partition=0, headers=list(headers))
    finally:
        await prod.stop()


def _rows(p: Pipeline, name: str, fields: tuple[str, ...], lo_ms: int, hi_ms: int
          ) -> list[dict[str, Any]]:
    out = []
    for r in p.query(name):
        ws = iso_to_ns(r["window_start"]) // 1_000_000
        if lo_ms <= ws < hi_ms:
            row = dict(r, window_start=ws, window_end=iso_to_ns(r["window_end"]) // 1_000_000)
            # The API writes NaN as null; the golden files hold ClickHouse's 0 for "no side".
            out.append({f: (0.0 if row[f] is None else row[f]) for f in fields})
    return sorted(out, key=lambda r: tuple(str(r[f]) for f in fields))


def _expected_rows(rows: list[dict[str, Any]], fields: tuple[str, ...], shift_ms: int
                   ) -> list[dict[str, Any]]:
    out = [dict(r, window_start=r["window_start"] + shift_ms, window_end=r["window_end"] + shift_ms)
           for r in rows]
    return sorted(out, key=lambda r: tuple(str(r[f]) for f in fields))


def _same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> bool:
    return len(got) == len(want) and all(
        g.keys() == w.keys() and all(
            math.isclose(g[k], w[k], rel_tol=1e-9) if isinstance(w[k], float) else g[k] == w[k]
            for k in w)
        for g, w in zip(got, want, strict=True))


def _samples(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("traces_service_graph_")}


def _series(sample: str) -> str:
    """A sample's series without its metric name suffix and `le`: how its family is grouped."""
    labels = sample[sample.index("{"):]
    return ",".join(p for p in labels.strip("{}").split(",") if not p.startswith("le="))


def _case_metrics(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Every sample of the series the case counted requests in, as their change."""
    touched = {_series(s) for s, v in after.items()
               if s.startswith("traces_service_graph_request_total") and v != before.get(s, 0.0)}
    return {s: v - before.get(s, 0.0) for s, v in after.items() if _series(s) in touched}


@pytest.mark.parametrize("config_name", sorted(GROUPS))
def test_golden_cases_through_the_real_pipeline(config_name: str, broker: Any, new_topic: Any,
                                                unique_name: Any, tmp_path: Path) -> None:
    topic = new_topic("golden", partitions=1)
    group = unique_name("golden")
    port = free_port()
    p = Pipeline(_worker_config(config_name, tmp_path, broker.bootstrap, topic, group, port),
                 port, tmp_path / f"{group}.log").start()
    try:
        for k, case in enumerate(GROUPS[config_name], start=1):
            shift_ns = k * HOUR_NS
            shift_ms = shift_ns // 1_000_000
            lo, hi = CASE_START_MS + shift_ms, CASE_START_MS + shift_ms + HOUR_NS // 1_000_000
            want = yaml.safe_load((TESTDATA / case / "expected.yaml").read_text())
            health = _expected_rows(want["health"], HEALTH_FIELDS, shift_ms)
            edges = _expected_rows(want["edges"], EDGE_FIELDS, shift_ms)
            before = _samples(p.get("/metrics"))
            asyncio.run(_produce(broker.bootstrap, topic, case, shift_ns))
            wait_until(lambda lo=lo, hi=hi, health=health, edges=edges: (
                _same(_rows(p, "health", HEALTH_FIELDS, lo, hi), health)
                and _same(_rows(p, "edges", EDGE_FIELDS, lo, hi), edges)),
                60, f"{case}: final rows as expected.yaml", p)
            got = _case_metrics(before, _samples(p.get("/metrics")))
            expected = _samples("\n".join(ln for ln in want["metrics"]
                                          if ln.startswith("traces_service_graph_")))
            assert got.keys() == expected.keys(), (case, sorted(got.keys() ^ expected.keys())[:6])
            for sample, value in expected.items():
                assert math.isclose(got[sample], value, rel_tol=1e-9, abs_tol=1e-12), (case, sample)
    finally:
        p.stop()
