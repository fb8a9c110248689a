"""Edge identity with dimensions, the labels of its series, and its key on the partials topic."""

from __future__ import annotations

import numpy as np
import pytest

from processor.aggregate import messages
from processor.aggregate.messages import EdgeKey, dimensions_key
from processor.config import Duration, ServiceGraphConfig, StoreConfig
from processor.graph import EdgeIds, PairingStore
from processor.graph.labels import EdgeLabels
from tests.unit.spans import Spans, edge_rows

DIMS = ("deployment.environment", "http.method")


def _pairs(sp: Spans, calls: list[tuple[str, str]], error: int = -1) -> list[dict]:
    rows = []
    for i, (env, method) in enumerate(calls):
        rows.append(sp.span(trace=i + 1, id=10, parent=1, service="web", kind="client", end_ms=5,
                            dims=(env, method), error=(i == error)))
        rows.append(sp.span(trace=i + 1, id=11, parent=10, service="api", kind="server", end_ms=4,
                            dims=(env, "")))
    return rows


def test_edges_with_other_dimension_values_are_other_edges() -> None:
    sp = Spans()
    store = PairingStore(sp.strings, StoreConfig())
    edges = store.add(sp.batch(*_pairs(sp, [("prod", "GET"), ("prod", "GET"), ("dev", "GET"),
                                            ("prod", "")])))
    ids = EdgeIds(len(DIMS))
    got = ids.ids(edges)
    assert got[0] == got[1] and len({*got.tolist()}) == 3
    again = ids.ids(store.add(sp.batch(*_pairs(sp, [("dev", "GET")]))))  # a later batch
    assert again[0] == got[2]
    key = ids.key(int(got[0]))
    names = sp.strings.lookup
    assert (names(key.client), names(key.server)) == ("web", "api")
    assert [names(c) for c in key.client_dims] == ["prod", "GET"]
    assert [names(c) for c in key.server_dims] == ["prod", ""]


def test_without_dimensions_an_id_is_the_packed_codes() -> None:
    sp = Spans()
    edges = PairingStore(sp.strings, StoreConfig()).add(sp.batch(*_pairs(sp, [("", "")])))
    ids = EdgeIds(0)
    (eid,) = ids.ids(edges).tolist()
    assert ids.key(eid)[:3] == (edges.client[0], edges.server[0], edges.conn[0])


def test_series_labels_as_the_connector_sets_them() -> None:
    sp = Spans()
    sg = ServiceGraphConfig(dimensions=DIMS, virtual_node_extra_label=True)
    store = PairingStore(sp.strings, StoreConfig(ttl=Duration.parse("1s")))
    edges = store.add(sp.batch(*_pairs(sp, [("prod", "GET"), ("prod", "GET")], error=1),
                               sp.span(trace=9, id=90, service="web", kind="server", end_ms=3,
                                       dims=("prod", ""))))  # a root server: user -> web
    ids = EdgeIds(len(DIMS))
    labels = EdgeLabels(sg, sp.strings, ids)
    series, inverse = labels.of(edges, ids.ids(edges))
    got = [dict(series[i]) for i in inverse]
    web_api = {"client": "web", "server": "api", "connection_type": "",
               "client_deployment_environment": "prod", "client_http_method": "GET",
               "server_deployment_environment": "prod"}
    assert {"failed": "false", **web_api} in got and {"failed": "true", **web_api} in got
    user = next(d for d in got if d["client"] == "user")
    assert user == {"client": "user", "server": "web", "connection_type": "virtual_node",
                    "failed": "false", "server_deployment_environment": "prod",
                    "virtual_node": "client"}


def test_no_virtual_node_label_unless_configured() -> None:
    sp = Spans()
    edges = PairingStore(sp.strings, StoreConfig()).add(sp.batch(
        sp.span(trace=9, id=90, service="web", kind="server", end_ms=3)))
    ids = EdgeIds(0)
    series, _ = EdgeLabels(ServiceGraphConfig(), sp.strings, ids).of(edges, ids.ids(edges))
    assert dict(series[0]) == {"client": "user", "server": "web", "connection_type": "virtual_node",
                               "failed": "false"}


def test_an_empty_peer_attribute_list_turns_virtual_nodes_off() -> None:
    """As the connector: no virtual_node_peer_attributes, no virtual-node edges; the spans are
    only counted as expired."""
    sp = Spans()
    store = PairingStore(sp.strings, StoreConfig(ttl=Duration.parse("1s")), virtual_nodes=False)
    root = sp.span(trace=1, id=10, service="web", kind="server", end_ms=3)
    lonely = sp.span(trace=2, id=20, parent=1, service="web", kind="client", end_ms=4,
                     virtual_peer="payments")
    assert len(store.add(sp.batch(root, lonely))) == 0
    tick = sp.span(trace=3, id=30, service="tick", kind="internal", end_ms=5_000)
    assert edge_rows(store.add(sp.batch(tick)), sp.strings) == []
    stats = store.take_stats()
    assert (stats.expired["server"], stats.expired["client"]) == (1, 1)
    assert stats.virtual_user == stats.virtual_peer == 0


@pytest.mark.parametrize("dims", [(), (("client_env", "prod"), ("server_env", "p\"rod"))])
def test_edge_keys_with_dimensions_cross_the_partials_topic(dims: messages.Dimensions) -> None:
    key = EdgeKey("web", "api", "", 1_700_000_000_000, dims)
    assert messages.decode(messages.encode(key)) == key
    # Partitioned by client and server only: every label set of an edge meets one worker.
    assert messages.message_key(key) == messages.message_key(EdgeKey("web", "api", "", 0))


def test_an_edge_key_from_an_older_worker_has_no_dimensions() -> None:
    old = b'{"t": "e", "k": ["web", "api", "", 1700000000000]}'
    assert messages.decode(old) == EdgeKey("web", "api", "", 1_700_000_000_000, ())
    assert b'"d"' not in messages.encode(EdgeKey("web", "api", "", 1))  # the format they read


def test_dimensions_key_is_canonical() -> None:
    assert dimensions_key({"b": "2", "a": "1"}) == dimensions_key({"a": "1", "b": "2"}) == (
        ("a", "1"), ("b", "2"))
    assert dimensions_key(None) == ()


def test_label_sets_count_separately_in_the_series() -> None:
    from prometheus_client import generate_latest

    from processor.telemetry import Metrics

    sp = Spans()
    sg = ServiceGraphConfig(dimensions=DIMS)
    edges = PairingStore(sp.strings, StoreConfig()).add(sp.batch(*_pairs(sp, [("prod", "GET"),
                                                                             ("dev", "GET")])))
    ids = EdgeIds(len(DIMS))
    m = Metrics()
    m.service_graph.observe(EdgeLabels(sg, sp.strings, ids).of(edges, ids.ids(edges)), edges)
    totals = [ln for ln in generate_latest(m.registry).decode().splitlines()
              if ln.startswith("traces_service_graph_request_total")]
    assert len(totals) == 2 and all(ln.endswith(" 1.0") for ln in totals)
    assert any('client_deployment_environment="dev"' in ln for ln in totals)
    assert np.all([ln.count("server_http_method") == 0 for ln in totals])  # absent, not empty
