"""Known web -> api -> postgresql traffic made with the OpenTelemetry SDK, and its expected rows."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.integration.harness import Pipeline

MS = 1_000_000
EdgeKey = tuple[str, str, str]  # (client, server, connection_type)


@dataclass
class Expected:
    """What the final rows must add up to, summed over windows."""

    edges: dict[EdgeKey, tuple[int, int]] = field(default_factory=dict)  # requests, failed
    health: dict[str, tuple[int, int]] = field(default_factory=dict)  # calls, errors
    server_ms: dict[EdgeKey, list[float]] = field(default_factory=dict)
    client_ms: dict[EdgeKey, list[float]] = field(default_factory=dict)
    spans: int = 0


def send_requests(make_exporter: Callable[[], SpanExporter], n: int, errors: set[int],
                  db_errors: set[int]) -> Expected:
    """N requests: web SERVER root -> web CLIENT -> api SERVER, plus a web CLIENT call to the
    postgresql database `orders` (a database edge: its db.name names the node).

    Request i fails end to end (api server, web client and web root ERROR) when i is in
    `errors`; its database call fails (handled by web, root stays OK) when i is in
    `db_errors`. Spans carry explicit times, so every latency is known exactly. Each
    service has its own TracerProvider (own resource and exporter), as in real deployments.
    """
    providers = {}
    for service in ("web", "api"):
        p = TracerProvider(resource=Resource.create({"service.name": service}))
        p.add_span_processor(BatchSpanProcessor(make_exporter(), schedule_delay_millis=200,
                                                max_export_batch_size=512))
        providers[service] = p
    web, api = providers["web"].get_tracer("e2e"), providers["api"].get_tracer("e2e")
    base = time.time_ns()
    root_ms: list[float] = []
    call_ms: list[float] = []
    api_ms: list[float] = []
    db_ms: list[float] = []
    for i in range(n):
        t = base + i * 10 * MS
        failed = i in errors
        root = web.start_span(f"GET /checkout/{i}", kind=SpanKind.SERVER, start_time=t)
        root_ctx = trace.set_span_in_context(root)
        call = web.start_span("POST api/charge", context=root_ctx, kind=SpanKind.CLIENT,
                              start_time=t + 2 * MS)
        handle = api.start_span("POST /charge", context=trace.set_span_in_context(call),
                                kind=SpanKind.SERVER, start_time=t + 3 * MS)
        d_api, d_call = 20 + 0.5 * i, 23 + 0.5 * i + (i % 3)
        if failed:
            handle.set_status(StatusCode.ERROR)
            call.set_status(StatusCode.ERROR)
        handle.end(end_time=t + 3 * MS + int(d_api * MS))
        call.end(end_time=t + 2 * MS + int(d_call * MS))
        d_db = 2 + (i % 7) * 0.75
        db = web.start_span("SELECT orders", context=root_ctx, kind=SpanKind.CLIENT,
                            start_time=t + 30 * MS,
                            attributes={"db.system": "postgresql", "db.name": "orders",
                                        "db.operation": "SELECT"})
        if i in db_errors:
            db.set_status(StatusCode.ERROR)
        db.end(end_time=t + 30 * MS + int(d_db * MS))
        d_root = 40 + i
        if failed:
            root.set_status(StatusCode.ERROR)
        root.end(end_time=t + int(d_root * MS))
        root_ms.append(d_root)
        call_ms.append(d_call)
        api_ms.append(d_api)
        db_ms.append(d_db)
    for p in providers.values():
        assert p.force_flush(30_000), "SDK exporter did not flush"
    for p in providers.values():
        p.shutdown()
    e, k = len(errors), len(db_errors)
    user, rpc, sql = ("user", "web", "virtual_node"), ("web", "api", ""), ("web", "orders", "database")
    return Expected(
        edges={user: (n, e), rpc: (n, e), sql: (n, k)},
        health={"web": (n, e), "api": (n, e)},
        # A database edge's server side is its client span, as the connector records it.
        server_ms={user: root_ms, rpc: api_ms, sql: db_ms},
        client_ms={rpc: call_ms, sql: db_ms},
        spans=4 * n,
    )


# -- reading the pipeline's final rows ---------------------------------------------------


def edge_totals(rows: list[dict[str, Any]]) -> dict[EdgeKey, tuple[int, int]]:
    out: dict[EdgeKey, tuple[int, int]] = {}
    for r in rows:
        key = (r["client"], r["server"], r["connection_type"])
        req, failed = out.get(key, (0, 0))
        out[key] = (req + int(r["requests"]), failed + int(r["failed"]))
    return out


def health_totals(rows: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for r in rows:
        calls, errors = out.get(r["service"], (0, 0))
        out[r["service"]] = (calls + int(r["calls"]), errors + int(r["errors"]))
    return out


def totals(p: Pipeline) -> tuple[dict[EdgeKey, tuple[int, int]], dict[str, tuple[int, int]]]:
    return edge_totals(p.query("edges")), health_totals(p.query("health"))


def assert_final_rows(p: Pipeline, want: Expected, timeout_s: float = 60) -> None:
    """Waits until the windows add up to `want`, then checks totals and merged latencies."""
    deadline = time.monotonic() + timeout_s
    got = totals(p)
    while got != (want.edges, want.health) and time.monotonic() < deadline:
        # Fail fast (with the reason) on what can never end with the expected rows.
        assert p.metric("otel_insights_dlq_records_total") == 0, (
            f"records were dead-lettered:\n{_lines(p, 'DLQ')}")
        assert "Crashed reason" not in p.log_path.read_text(errors="replace"), (
            f"a pipeline agent crashed:\n{p.log()}")
        time.sleep(0.5)
        got = totals(p)
    assert got == (want.edges, want.health), (
        f"final rows differ from the SDK traffic\n got edges {got[0]}\nwant edges {want.edges}\n"
        f" got health {got[1]}\nwant health {want.health}\n--- pipeline log ---\n{p.log()}")
    topo = {(r["client"], r["server"], r["connection_type"]): r for r in p.query("topology")}
    assert {k: (r["requests"], r["failed"]) for k, r in topo.items()} == want.edges
    for side, lat in (("server", want.server_ms), ("client", want.client_ms)):
        for key, values in lat.items():
            check_quantiles(topo[key], side, values)


def _lines(p: Pipeline, needle: str) -> str:
    return "\n".join(ln for ln in p.log_path.read_text(errors="replace").splitlines()
                     if needle in ln)[-3000:]


def check_quantiles(row: dict[str, Any], side: str, values_ms: list[float]) -> None:
    """Merged-sketch quantiles within the sketch's 1% relative error of the exact ones."""
    arr = np.asarray(values_ms)
    for q in (50, 95, 99):
        exact = float(np.percentile(arr, q, method="lower"))
        got = row[f"{side}_p{q}_ms"]
        assert got is not None and abs(got - exact) <= 0.01 * exact + 1e-6, (row, side, q, exact)
