"""Incident grouping: consecutive windows of one entity, and a service with its edges."""

from dataclasses import dataclass

from processor.detect.incidents import IncidentTracker

W = 60_000


@dataclass
class F:
    entity_type: str
    entity: str
    window_start_ms: int


def test_same_entity_over_consecutive_windows_is_one_incident() -> None:
    t = IncidentTracker(W, gap_windows=2)
    a = t.assign([F("service", "payment", 0)])[0]
    b = t.assign([F("service", "payment", W)])[0]
    c = t.assign([F("service", "payment", 3 * W)])[0]  # one quiet window in between: same
    assert a.new and not b.new and not c.new
    assert a.incident_id == b.incident_id == c.incident_id


def test_gap_longer_than_allowed_starts_a_new_incident() -> None:
    t = IncidentTracker(W, gap_windows=1)
    a = t.assign([F("service", "payment", 0)])[0]
    b = t.assign([F("service", "payment", 5 * W)])[0]
    assert b.new and a.incident_id != b.incident_id


def test_service_and_its_edges_in_one_window_share_an_incident() -> None:
    t = IncidentTracker(W, gap_windows=2)
    out = t.assign([F("edge", "checkout->payment", 0), F("service", "payment", 0),
                    F("edge", "frontend->ad", 0)])
    assert out[0].incident_id == out[1].incident_id
    assert out[2].incident_id != out[0].incident_id


def test_edge_then_its_service_next_window_continues_the_incident() -> None:
    t = IncidentTracker(W, gap_windows=2)
    first = t.assign([F("edge", "checkout->payment", 0)])[0]
    later = t.assign([F("edge", "checkout->payment", W), F("service", "payment", W)])
    assert {a.incident_id for a in later} == {first.incident_id}


def test_seed_restores_open_incidents_after_restart() -> None:
    t = IncidentTracker(W, gap_windows=2)
    iid = t.assign([F("service", "cart", 0)])[0].incident_id
    t2 = IncidentTracker(W, gap_windows=2)
    t2.seed([{"entity_type": "service", "entity": "cart", "window_start": 0, "incident_id": iid}])
    again = t2.assign([F("service", "cart", W)])[0]
    assert again.incident_id == iid and not again.new
