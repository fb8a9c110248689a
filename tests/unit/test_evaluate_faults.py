"""The fault evaluation: scenario rows agree with the oracle, scoring rules on hand-made runs, a tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

from processor.config.components import AnomalyConfig
from processor.evaluate import faults as ef
from processor.evaluate import faults_cli
from processor.evaluate.faults_scenario import (
    SIZES,
    LabelledFault,
    detecting_entities,
    make_schedule,
    related_entities,
    window_rows,
)
from processor.generate import FaultSpec, GroundTruth, ShopGenerator

W_MS = 60_000
W_NS = W_MS * 10**6


def test_window_rows_agree_with_the_ground_truth() -> None:
    gen = ShopGenerator(seed=3, rate=5, start_ns=0)
    rows = list(window_rows(gen, 600, W_NS))
    truth = GroundTruth(W_NS)
    truth.add_all(gen.traces(600))
    services = {k: v for k, v in truth.service_windows().items() if k[1] + W_NS <= 600 * 10**9}
    assert [r.window_start_ms for r in rows] == list(range(0, 600_000, W_MS))
    got = {(h["service"], h["window_start"] * 10**6): (h["calls"], h["errors"]) for r in rows for h in r.health}
    assert got == {k: (v["calls"], v["errors"]) for k, v in services.items()}
    db = [e for r in rows for e in r.edges if e["connection_type"] == "database"]
    # A database edge's server side is its client span, as the connector records it.
    assert db and all(e["server_p95_ms"] == e["client_p95_ms"] > 0.0 for e in db)
    for r in rows:
        for h in r.health:
            assert 0 < h["p50_ms"] <= h["p95_ms"] <= h["p99_ms"]


def test_schedule_cycles_through_every_kind_and_size_in_separate_slots() -> None:
    sched = make_schedule(seed=4, start_ns=0, window_ns=W_NS, windows=30 + 24 * 12, warmup_windows=30,
                          with_faults=True)
    assert sorted((f.kind, f.size) for f in sched.faults) == sorted((k, s) for k, s, _ in SIZES)
    spans = sorted((f.spec.start_ns, f.spec.end_ns) for f in sched.faults)
    assert spans[0][0] >= 30 * W_NS
    assert all(a_end < b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))
    assert make_schedule(4, 0, W_NS, 400, 30, with_faults=False).faults == []


def test_detecting_and_related_entities() -> None:
    edge = FaultSpec("edge_failure", "checkout->payment", 0, 1)
    assert detecting_entities(edge) == {("edge", "checkout->payment"), ("service", "checkout"),
                                        ("service", "payment")}
    db = FaultSpec("latency_shift", "postgres", 0, 1, 2.0)
    assert detecting_entities(db) == {("edge", "product-catalog->postgres")}
    slow = related_entities("payment", "latency_shift")
    assert {("service", "checkout"), ("service", "frontend"), ("edge", "checkout->payment")} <= slow
    assert ("service", "email") not in slow  # a slow payment does not move email
    # A failing payment ends checkout early: the calls checkout makes after it disappear.
    assert ("service", "email") in related_entities("payment", "error_burst")


def test_alarms_merge_runs_with_short_gaps() -> None:
    v = [("service", "a", ws * W_MS, "rate", 0.9) for ws in (1, 2, 4, 8)] + [("edge", "x->y", 2 * W_MS, "p95_ms", 0.6)]
    assert ef.alarms(v, W_MS) == [(("service", "a"), W_MS, 4 * W_MS), (("edge", "x->y"), 2 * W_MS, 2 * W_MS),
                                  (("service", "a"), 8 * W_MS, 8 * W_MS)]


def _result(name: str, verdicts: list[tuple[str, str, int, str, float]], faults: list[LabelledFault],
            days: float = 1.0, entities: int = 10) -> ef.RunResult:
    spec = ef.RunSpec(name, 1, 10.0, days, 0, 60, 0.5, 0.05, 24, AnomalyConfig())
    return ef.RunResult(spec, verdicts, faults, [], entities, 0, int(days * 86_400_000), 100, 0.01, 1.0)


def test_scoring_counts_detections_delays_and_false_alarms() -> None:
    onset = 100 * W_MS + 30_000  # mid-window: the onset window is 100
    faults = [
        LabelledFault(FaultSpec("latency_shift", "payment", onset * 10**6, (onset + 5 * W_MS) * 10**6, 4.0), "medium"),
        LabelledFault(FaultSpec("error_burst", "cart", 300 * W_MS * 10**6, 306 * W_MS * 10**6, 0.2), "medium"),
        LabelledFault(FaultSpec("edge_failure", "checkout->payment", 500 * W_MS * 10**6, 505 * W_MS * 10**6, 1.0),
                      "large"),
    ]
    verdicts = [
        ("service", "payment", 101 * W_MS, "p95_ms", 0.9),  # detected, delay 1
        ("service", "checkout", 101 * W_MS, "p95_ms", 0.7),  # a symptom upstream: explained
        ("service", "cart", 304 * W_MS, "error_ratio", 0.9),  # too late (delay 4), still explained
        ("service", "payment", 501 * W_MS, "error_ratio", 0.9),  # endpoint of the edge: detected
        ("service", "ad", 700 * W_MS, "rate", 0.6),  # nothing going on: a false alarm
    ]
    clean = [("service", "ad", 50 * W_MS, "rate", 0.6), ("service", "ad", 51 * W_MS, "rate", 0.6)]
    report = ef.score_runs([_result("faults", verdicts, faults), _result("clean", clean, [], days=2.0)])
    assert report["cells"]["latency_shift/medium"]["detected"] == 1
    assert report["cells"]["latency_shift/medium"]["median_delay_windows"] == 1
    assert report["cells"]["error_burst/medium"]["detected"] == 0
    assert report["cells"]["error_burst/medium"]["detected_any"] == 1
    assert report["cells"]["edge_failure/large"]["detected"] == 1
    assert report["overall"]["faults"] == 3 and report["overall"]["detected"] == 2
    assert report["recall"] == 2 / 3
    assert (report["alarms"], report["explained_alarms"]) == (5, 4)
    assert report["precision"] == 4 / 5
    assert report["false_alarms_per_entity_day_clean"] == 1 / 20  # one merged alarm, 10 entities x 2 days
    assert report["false_alarms_per_entity_day_quiet"] > 0
    assert [(f["target"], f["onset_window"], f["delay_windows"]) for f in report["faults"]] == [
        ("payment", 100, 1), ("cart", 300, 4), ("checkout->payment", 500, 1)]


def test_tiny_end_to_end_run_reports_a_consistent_structure(tmp_path: Path) -> None:
    report = ef.evaluate_faults(seed=5, rate=2.0, fault_days=0.05, clean_days=0.01, jobs=1,
                                warmup_windows=20, slot_windows=24)
    assert set(report["cells"]) == {f"{k}/{s}" for k, s, _ in SIZES}
    runs = {r["name"]: r for r in report["runs"]}
    assert runs["faults"]["faults"] == report["overall"]["faults"] == 3
    assert runs["clean"]["faults"] == 0 and runs["clean"]["entities"] > 10
    assert sum(c["faults"] for c in report["cells"].values()) == 3
    for c in [*report["cells"].values(), report["overall"]]:
        assert c["detected"] <= c["detected_any"] <= c["faults"]
        assert c["recall"] is None or 0.0 <= c["recall"] <= 1.0
    assert report["observe_us"] > 0 and report["entity_windows"] > 0
    assert report["false_alarms_per_entity_day_clean"] is not None


def test_cli_prints_the_tables_and_writes_json(tmp_path: Path) -> None:
    from rich.console import Console

    console = Console(record=True, width=140)
    out = tmp_path / "report.json"
    code = faults_cli.main(["--seed", "6", "--rate", "2", "--fault-days", "0.03", "--clean-days", "0",
                    "--jobs", "1", "--warmup-windows", "20", "--json", str(out)], console=console)
    assert code == 0
    text = console.export_text()
    assert "overall" in text and "false alarms / entity-day" in text
    assert json.loads(out.read_text())["overall"]["faults"] >= 1
    assert faults_cli.main(["--detectors", "robust,lstm", "--fault-days", "0.01"], console=console) == 2
