"""Golden cases: tests/testdata/<case>/input.json through stages 1 and 2, against expected.yaml.

input.json holds the case's Kafka records (OTLP/JSON, with their partition, key and headers)
and time steps (`{"advance": "11s"}`: wall time passes with no records); a case runs with
tests/testdata/config.yaml, or the config file its `"config"` names there. expected.yaml
holds the final health and edge rows and the metrics the run must produce. Ignored: each row's `version` (wall clock) and its stored
sketch arrays (the quantiles read from them are compared), and `_created` samples.

Regenerate with `pytest ... --update-golden`: it rewrites expected.yaml and fails the run,
so the flag is never left on; review the diff before committing it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from processor.aggregate.runner import LocalRun, RunResult
from processor.config import Config, Duration, load_config
from processor.storage.window_store import WindowStore

TESTDATA = Path(__file__).parent / "testdata"
CASES = sorted(p.name for p in TESTDATA.iterdir() if (p / "input.json").exists())
HEALTH_FIELDS = ("window_start", "window_end", "service", "calls", "errors", "error_rate",
                 "p50_ms", "p95_ms", "p99_ms", "health")
EDGE_FIELDS = ("window_start", "window_end", "client", "server", "connection_type", "dimensions", "requests",
               "failed", "error_rate", "server_p50_ms", "server_p95_ms", "server_p99_ms",
               "client_p50_ms", "client_p95_ms", "client_p99_ms")
# The self metrics a case pins down besides the traces_service_graph_* series; gauges of wall
# time and stage busy time are not the case's.
COUNTED = ("otel_insights_records_total", "otel_insights_spans_total", "otel_insights_rejected_spans_total",
           "otel_insights_late_spans_total", "otel_insights_unpaired_spans_total",
           "otel_insights_expired_edges_total", "otel_insights_evicted_spans_total",
           "otel_insights_dlq_records_total", "otel_insights_rekeyed_records_total",
           "otel_insights_windows_finalized_total")
HEADER = ("# Expected output of input.json (see tests/golden.py). Regenerate with --update-golden,\n"
          "# which fails the run: review the diff before committing.\n")


def spec_of(case: str) -> dict[str, Any]:
    return json.loads((TESTDATA / case / "input.json").read_text())


def config_file(case: str) -> Path:
    return TESTDATA / spec_of(case).get("config", "config.yaml")


def config(case: str | None = None) -> Config:
    return load_config(config_file(case) if case else TESTDATA / "config.yaml", environ={})


def step_record(step: dict[str, Any]) -> tuple[bytes, bytes | None, tuple[tuple[str, bytes], ...]]:
    """A record step's (value, key, headers)."""
    value = json.dumps(step["otlp"]).encode()
    key = step["key"].encode() if step.get("key") else None
    headers = tuple((k, v.encode()) for k, v in (step.get("headers") or {}).items())
    return value, key, headers


def run_case(case: str, store: WindowStore | None = None) -> dict[str, Any]:
    """The case's output as expected.yaml holds it."""
    spec = spec_of(case)
    # The wall clock bounds event time: the case's own "now", or just after its last span.
    now_s = spec.get("now_unix_s", _latest_end_s(spec) + 60)
    run = LocalRun(config(case), partitions=int(spec.get("partitions", 1)), store=store,
                   wall_clock=lambda: now_s)
    for step in spec["steps"]:
        if "advance" in step:
            run.advance(Duration.parse(step["advance"]).seconds)
            continue
        value, key, headers = step_record(step)
        rec = run.record(value, int(step.get("partition", 0)), key)
        run.feed([replace(rec, headers=headers)])
    return _output(run.finish())


def _latest_end_s(spec: dict[str, Any]) -> float:
    ends = [int(span.get("endTimeUnixNano", 0)) for step in spec["steps"] if "otlp" in step
            for rs in step["otlp"].get("resourceSpans", ()) for ss in rs.get("scopeSpans", ())
            for span in ss.get("spans", ())]
    return max(ends, default=0) / 1e9


def _output(result: RunResult) -> dict[str, Any]:
    return {
        "health": [{f: _plain(r[f]) for f in HEALTH_FIELDS} for r in result.health],
        "edges": [{f: _plain(r[f]) for f in EDGE_FIELDS} for r in result.edges],
        "dead_letters": [{"partition": rec.partition, "offset": rec.offset, "error": error}
                         for rec, error in result.dead_letters],
        "metrics": _samples(result),
    }


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _samples(result: RunResult) -> list[str]:
    lines = generate_latest(result.metrics.registry).decode().splitlines()
    keep = [ln for ln in lines if not ln.startswith("#") and "_created" not in ln.split(" ")[0]
            and (ln.startswith("traces_service_graph_") or ln.startswith(COUNTED))]
    return sorted(ln for ln in keep if not ln.endswith(" 0.0") or ln.startswith("traces_service_graph_"))


def _flow_list(name: str, rows: list[dict[str, Any]]) -> str:
    """`name:` and one row per line (a row's nested map stays on its line)."""
    if not rows:
        return f"{name}: []\n"
    return f"{name}:\n" + "".join(
        "- " + yaml.safe_dump(r, sort_keys=False, width=10000, default_flow_style=True).strip() + "\n"
        for r in rows)


def check(case: str, got: dict[str, Any], update: bool) -> None:
    path = TESTDATA / case / "expected.yaml"
    if update:
        text = "".join(_flow_list(k, got[k]) for k in ("health", "edges", "dead_letters"))
        text += yaml.safe_dump({"metrics": got["metrics"]}, width=1000, default_flow_style=False)
        path.write_text(HEADER + text)
        pytest.fail(f"{path} regenerated; rerun without --update-golden")
    want = yaml.safe_load(path.read_text())
    assert got["metrics"] == want["metrics"]
    assert got["dead_letters"] == want["dead_letters"]
    for table in ("health", "edges"):
        assert len(got[table]) == len(want[table]), (table, got[table])
        for g, w in zip(got[table], want[table], strict=True):
            # Quantiles come from log-bucket sketches: equal up to the last bits of numpy's pow.
            assert g == {k: pytest.approx(v, rel=1e-9) if isinstance(v, float) else v
                         for k, v in w.items()}, table
