"""The labels of an edge's traces_service_graph_* series, as the servicegraph connector sets them."""

from __future__ import annotations

import numpy as np

from processor.config.components import ServiceGraphConfig, label_name
from processor.graph.edge_ids import EdgeIds
from processor.graph.edges import CONN_NAMES, CONN_VIRTUAL, EdgeBatch
from processor.otlp.batch import StringTable

Labels = tuple[tuple[str, str], ...]  # (name, value) pairs of one series
_FLAGS = np.dtype([("id", np.int64), ("flags", np.int8)])
# Which side of a virtual-node edge is the virtual node (virtual_node_extra_label).
_VIRTUAL_SIDE = ("", "client", "server")


class EdgeLabels:
    """Turns completed edges into the series they count in.

    A series is client, server, connection_type and `failed` ("true"/"false": the connector
    keys its series by it), the `dimensions` of each side as client_<attribute> and
    server_<attribute> (only those present), and with `virtual_node_extra_label` the
    virtual side of a virtual-node edge as virtual_node="client"|"server". Attribute names
    become label names as the collector's prometheus exporter writes them ('.' -> '_').
    """

    def __init__(self, servicegraph: ServiceGraphConfig, strings: StringTable, edge_ids: EdgeIds) -> None:
        self.strings = strings
        self.edge_ids = edge_ids
        self.extra_label = servicegraph.virtual_node_extra_label
        self.dim_labels = [(f"client_{label_name(d)}", f"server_{label_name(d)}")
                           for d in servicegraph.dimensions]
        self._base: dict[int, Labels] = {}  # edge id -> its labels without failed/virtual_node

    def forget(self) -> None:
        """Edge ids were renumbered (EdgeIds.compact): the cached labels are stale."""
        self._base.clear()

    def of(self, edges: EdgeBatch, ids: np.ndarray) -> tuple[list[Labels], np.ndarray]:
        """(series, inverse): edge i counts in series[inverse[i]]."""
        side = np.zeros(len(edges), np.int8)
        if self.extra_label:
            virtual = edges.conn == CONN_VIRTUAL
            side[virtual & (edges.client_end_ns == 0)] = 1
            side[virtual & (edges.server_end_ns == 0)] = 2
        keys = np.empty(len(edges), _FLAGS)
        keys["id"] = ids
        keys["flags"] = side * 2 + edges.failed.astype(np.int8)
        uniq, inverse = np.unique(keys, return_inverse=True)
        series = []
        for eid, flags in uniq.tolist():
            labels = self._base.get(eid) or self._edge(eid)
            extra: Labels = (("failed", "true" if flags & 1 else "false"),)
            if flags >> 1:
                extra += (("virtual_node", _VIRTUAL_SIDE[flags >> 1]),)
            series.append(tuple(sorted(labels + extra)))
        return series, inverse.ravel()

    def _edge(self, eid: int) -> Labels:
        k = self.edge_ids.key(eid)
        names = self.strings.strings
        labels = [("client", names[k.client]), ("server", names[k.server]),
                  ("connection_type", CONN_NAMES[k.conn])]
        for (client_label, server_label), c, s in zip(self.dim_labels, k.client_dims, k.server_dims,
                                                      strict=True):
            if c:
                labels.append((client_label, names[c]))
            if s:
                labels.append((server_label, names[s]))
        self._base[eid] = tuple(labels)
        return self._base[eid]
