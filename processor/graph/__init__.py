"""Service graph: pairs client/server, producer/consumer and database spans into edges."""

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
    "EdgeBatch", "PairingStats", "PairingStore",
]
