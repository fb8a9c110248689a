"""Service graph: pairs client/server, producer/consumer and database spans into edges."""

from processor.graph.edge_ids import EdgeCodes, EdgeIds, pack_edge, unpack_edge
from processor.graph.edges import (
    CONN_DATABASE,
    CONN_MESSAGING,
    CONN_NAMES,
    CONN_NONE,
    CONN_VIRTUAL,
    EdgeBatch,
)
from processor.graph.pairing import PairingStats, PairingStore

__all__ = [
    "CONN_DATABASE", "CONN_MESSAGING", "CONN_NAMES", "CONN_NONE", "CONN_VIRTUAL",
    "EdgeBatch", "EdgeCodes", "EdgeIds", "PairingStats", "PairingStore", "pack_edge", "unpack_edge",
]
