"""Edge identity: one int64 id per (client, server, connection type, dimension values)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from processor.graph.edges import EdgeBatch

# Without dimensions an id is the codes packed: client << 33 | server << 2 | connection type.
_SERVER_SHIFT, _CLIENT_SHIFT = 2, 33


def pack_edge(client: np.ndarray, server: np.ndarray, conn: np.ndarray) -> np.ndarray:
    return ((client.astype(np.int64) << _CLIENT_SHIFT) | (server.astype(np.int64) << _SERVER_SHIFT)
            | conn.astype(np.int64))


def unpack_edge(edge: int) -> tuple[int, int, int]:
    return edge >> _CLIENT_SHIFT, (edge >> _SERVER_SHIFT) & ((1 << 31) - 1), edge & 3


class EdgeCodes(NamedTuple):
    """An edge as string-table codes: the labels of its series and the key of its rows."""

    client: int
    server: int
    conn: int
    client_dims: tuple[int, ...]  # one code per `dimensions` attribute, 0 = absent
    server_dims: tuple[int, ...]


class EdgeIds:
    """Numbers edges for grouping with numpy; shared by every partition of a worker.

    With no `dimensions` an id is the packed codes (no table). With dimensions, distinct
    identities are numbered as they first appear: the table grows with the number of
    distinct edges, like the string table does with distinct names.
    """

    def __init__(self, dims: int = 0) -> None:
        self.dims = dims
        self._ids: dict[bytes, int] = {}
        self._keys: list[EdgeCodes] = []

    def ids(self, e: EdgeBatch) -> np.ndarray:
        """One id per edge of the batch."""
        packed = pack_edge(e.client, e.server, e.conn)
        if not self.dims or not len(e):
            return packed
        rows = np.ascontiguousarray(np.concatenate(
            [packed.view(np.int32).reshape(-1, 2), e.client_dims, e.server_dims], axis=1,
            dtype=np.int32))
        raw = rows.view(np.dtype((np.void, rows.shape[1] * 4))).ravel()
        uniq, inverse = np.unique(raw, return_inverse=True)
        dense = np.empty(uniq.size, np.int64)
        for i, row in enumerate(uniq.tolist()):
            got = self._ids.get(row)
            if got is None:
                got = self._ids[row] = len(self._keys)
                codes = np.frombuffer(row, np.int32)
                c, s, conn = unpack_edge(int(codes[:2].view(np.int64)[0]))
                k = self.dims
                self._keys.append(EdgeCodes(c, s, conn, tuple(codes[2:2 + k].tolist()),
                                          tuple(codes[2 + k:].tolist())))
            dense[i] = got
        return dense[inverse.ravel()]

    def key(self, eid: int) -> EdgeCodes:
        if not self.dims:
            c, s, conn = unpack_edge(eid)
            return EdgeCodes(c, s, conn, (), ())
        return self._keys[eid]
