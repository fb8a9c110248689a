"""A chdb store filled as a running worker would fill it: shop traffic with an optional latency
fault through stages 1 and 2 (LocalRun), the detectors and incident tracker over its final
windows, and each incident's template insight. For tests of what reads the tables."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processor.aggregate.runner import LocalRun
from processor.config import Config, parse_config
from processor.config.components import AnomalyConfig
from processor.dashboards import record, rules
from processor.detect.incidents import IncidentTracker
from processor.detect.window import WindowDetector
from processor.generate import FaultSpec, ShopGenerator, to_records
from processor.insights import facts as facts_mod
from processor.insights import message
from processor.insights.message import template_narration
from processor.storage import rollups
from processor.storage.catalogue import Context
from processor.storage.open import open_store
from processor.storage.store import Store

WINDOW_S = 10
CONFIG = """
receivers:
  kafka: {{traces: {{topics: [spans]}}, group_id: g}}
processors:
  servicegraph: {{store: {{ttl: 1s, max_items: 100000}}}}
  windows: {{size: {window}s, allowed_lateness: 2s, idle_timeout: 2s}}
  anomaly: {{grace_windows: 8, history: 1h}}
exporters: {{clickhouse: {{endpoint: "chdb://{path}", ttl: 0s}}}}
service: {{pipelines: {{traces: {{receivers: [kafka], processors: [servicegraph, windows, anomaly], exporters: [clickhouse]}}}}}}
"""


@dataclass
class ShopStore:
    store: Store
    config: Config
    context: Context
    start_ms: int
    end_ms: int
    services: list[str]
    incidents: list[str] = field(default_factory=list)
    dashboards: list[str] = field(default_factory=list)
    fault_service: str = ""

    def close(self) -> None:
        self.store.close()


def build(path: Path, *, minutes: float = 12, fault: bool = True, rate: float = 20.0,
          extra_service: str | None = None) -> ShopStore:
    """``extra_service``: a hostile name given to one service's spans (as untrusted data)."""
    cfg = parse_config(CONFIG.format(window=WINDOW_S, path=path), environ={})
    window_ns = WINDOW_S * 10**9
    start_ns = (time.time_ns() // window_ns) * window_ns - int(minutes * 60 * 10**9) - 4 * window_ns
    seconds = minutes * 60
    faults = []
    if fault:
        f_start = start_ns + int(seconds * 0.7 * 1e9) // window_ns * window_ns
        faults = [FaultSpec("latency_shift", "product-catalog", f_start, f_start + 6 * window_ns, 6.0)]
    gen = ShopGenerator(seed=7, rate=rate, start_ns=start_ns, faults=faults)
    traces = list(gen.traces(seconds))
    if extra_service:
        for tr in traces[::50]:
            for rs in tr.data.resource_spans:
                for kv in rs.resource.attributes:
                    if kv.key == "service.name" and kv.value.string_value == "ad":
                        kv.value.string_value = extra_service
    store = open_store(cfg.clickhouse, windows=cfg.windows)  # type: ignore[arg-type]
    run = LocalRun(cfg, partitions=2, store=store, wall_clock=lambda: start_ns / 1e9 + seconds + 60)
    records = [run.record(value, i % 2, key) for i, (key, value) in enumerate(to_records(traces, "otlp_proto"))]
    for i in range(0, len(records), 400):
        run.feed(records[i:i + 400])
    run.finish()
    out = ShopStore(store, cfg, store.context,
                    start_ns // 10**6, (start_ns + int(seconds * 1e9)) // 10**6,
                    sorted({r["service"] for r in store.final_rows_between(0)[0]}),
                    fault_service="product-catalog" if fault else "")
    _detect(out, cfg.anomaly or AnomalyConfig())
    for table, hours in rollups.stale_hours(store.backend, store.database, 0, 9_999_999_999_999).items():
        rollups.rebuild(store.backend, store.database, table, hours)
    return out


def _detect(out: ShopStore, settings: AnomalyConfig) -> None:
    """The judge's work over the stored windows, and one template insight per incident."""
    window_ms = WINDOW_S * 1000
    health, edges = out.store.final_rows_between(0)
    det = WindowDetector(settings, window_ms)
    tracker = IncidentTracker(window_ms, settings.incident_gap_windows)
    starts = sorted({int(r["window_start"]) for r in health})
    rows: list[dict[str, Any]] = []
    for ws in starts:
        h = [r for r in health if int(r["window_start"]) == ws]
        e = [r for r in edges if int(r["window_start"]) == ws]
        verdicts = det.observe_window(ws, h, e)
        for v, a in zip(verdicts, tracker.assign(verdicts), strict=True):
            rows.append({"detected_at": ws + window_ms, "window_start": ws, "window_end": ws + window_ms,
                         "entity_type": v.entity_type, "entity": v.entity, "incident_id": a.incident_id,
                         "metric": v.metric, "observed": float(v.observed), "expected": float(v.expected),
                         "score": float(v.score), "severity": v.severity, "detectors": list(v.detectors),
                         "factors": json.dumps({"factors": list(v.factors), "attribution": []}, default=float)})
    if rows:
        out.store.insert_anomalies(rows)
    for incident in sorted({r["incident_id"] for r in rows}):
        mine = [{**r, "attribution": []} for r in rows if r["incident_id"] == incident]
        facts = facts_mod.build(incident, mine, edges, window_ms)
        body = message.build(facts, template_narration(facts), insight_id=incident, version=1,
                             status="open", change="opened")
        out.store.insert_insights([{
            "insight_id": incident, "incident_id": incident, "version": 1, "status": "open",
            "severity": body["severity"], "window_start": facts.first_window_ms,
            "last_window": facts.last_window_ms, "updated_at": int(time.time() * 1000),
            "narrator": "template", "grounded": True, "published": 1, "facts_key": body["facts_key"],
            "message": message.encode(body).decode()}])
        out.incidents.append(incident)
        dash = rules.incident(body, "sre", out.config.windows.health)
        out.store.insert_dashboards([record.row(dash, published=1)])
        out.dashboards.append(dash["id"])
        out.store.insert_feedback([{  # what the UI stores when someone calls it a false alarm
            "insight_id": incident, "incident_id": incident, "verdict": "false_alarm", "user": "tester",
            "comment": "", "at": int(time.time() * 1000), "window_start": facts.first_window_ms,
            "last_window": facts.last_window_ms, "entities": [f"{t}:{e}" for t, e in facts.entities]}])


def module_fixture(**kwargs: Any) -> Any:
    """A module-scoped pytest fixture holding one built store (chdb: one directory per process)."""
    import pytest

    @pytest.fixture(scope="module")
    def shop(tmp_path_factory: pytest.TempPathFactory) -> Any:
        s = build(Path(tmp_path_factory.mktemp("shop")) / "ch", **kwargs)
        try:
            yield s
        finally:
            s.close()

    return shop
