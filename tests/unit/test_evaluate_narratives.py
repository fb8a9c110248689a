"""evaluate narratives: faults matched to the incidents they caused, origins ranked, narratives grounded."""

from __future__ import annotations

from processor.config.components import AnomalyConfig
from processor.evaluate import narratives
from processor.evaluate.faults_scenario import LabelledFault
from processor.generate import FaultSpec

W = 60_000


def _incident(iid: str, first: int, last: int, entities: set, candidates: list[str]) -> narratives.IncidentResult:
    return narratives.IncidentResult(iid, first * W, last * W, entities, candidates, True, "template", 0.0)


def test_each_fault_is_scored_on_the_first_incident_that_matches_it() -> None:
    fault = LabelledFault(FaultSpec("latency_shift", "payment", 10 * W * 10**6, 14 * W * 10**6, 3.0), "large")
    edge = LabelledFault(FaultSpec("edge_failure", "frontend->cart", 40 * W * 10**6, 42 * W * 10**6, 0.5), "medium")
    incidents = [
        _incident("early", 2, 3, {("service", "payment")}, ["payment"]),  # before the fault: no match
        _incident("first", 10, 12, {("service", "checkout"), ("service", "payment")}, ["checkout", "payment"]),
        _incident("later", 13, 15, {("service", "payment")}, ["payment"]),
        _incident("edge", 40, 41, {("edge", "frontend->cart")}, ["cart", "frontend"]),
    ]
    report = narratives.score([(incidents, [fault, edge])], W)
    assert report["faults"] == 2 and report["with_incident"] == 2
    assert report["top1"] == 1 and report["top3"] == 2  # payment ranked 2nd in the first incident
    assert report["by_kind"]["edge_failure"]["top1"] == 1  # an edge fault's origin is its server
    assert report["unmatched_incidents"] == 2  # "early", and "later" (a fault counts its first only)
    (miss,) = report["misses"]
    assert miss["incident"] == "first" and miss["rank"] == 2


def test_a_short_generated_run_narrates_every_incident_grounded() -> None:
    incidents, faults = narratives.run(seed=2, rate=10.0, days=0.12, warmup_windows=120, window_s=60,
                                       slot_windows=24, settings=AnomalyConfig())
    assert faults and incidents
    assert all(i.grounded and i.narrator == "template" for i in incidents)
    assert all(i.candidates for i in incidents)
    report = narratives.score([(incidents, faults)], W)
    assert report["with_incident"] >= 1 and report["top3"] >= report["top1"] >= 0
