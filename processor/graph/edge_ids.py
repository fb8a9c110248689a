"""Edge identity: one int64 id per (client, server, connection type, dimension values)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from processor.graph.edges import EdgeBatch

# Without dimensions an id is the codes packed: client << 33 | server << 2 | connection type.
_SERVER_SHIFT, _CLIENT_SHIFT = 2, 33
_CODE_MASK = (1 << 31) - 1


def pack_edge(client: np.ndarray, server: np.ndarray, conn: np.ndarray) -> np.ndarray:
    return ((client.astype(np.int64) << _CLIENT_SHIFT) | (server.astype(np.int64) << _SERVER_SHIFT)
            | conn.astype(np.int64))


def unpack_edge(edge: int) -> tuple[int, int, int]:
    return edge >> _CLIENT_SHIFT, (edge >> _SERVER_SHIFT) & _CODE_MASK, edge & 3


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
    distinct edges, like the string table does with distinct names, and is compacted with
    it (`compact`).
    """

    def __init__(self, dims: int = 0) -> None:
        self.dims = dims
        self._ids: dict[bytes, int] = {}
        self._keys: list[EdgeCodes] = []

    def ids(self, e: EdgeBatch) -> np.ndarray:
        """One id per edge of the batch."""
        return self._number(e.client, e.server, e.conn, e.client_dims, e.server_dims)

    def id_of(self, key: EdgeCodes) -> int:
        """The id of one edge given by its codes (e.g. the overflow edge)."""
        d = self.dims
        return int(self._number(np.array([key.client]), np.array([key.server]), np.array([key.conn]),
                                np.array([key.client_dims or (0,) * d], np.int32).reshape(1, d),
                                np.array([key.server_dims or (0,) * d], np.int32).reshape(1, d))[0])

    def _number(self, client: np.ndarray, server: np.ndarray, conn: np.ndarray,
                client_dims: np.ndarray, server_dims: np.ndarray) -> np.ndarray:
        packed = pack_edge(client, server, conn)
        if not self.dims or not packed.size:
            return packed
        rows = np.ascontiguousarray(np.concatenate(
            [packed.view(np.int32).reshape(-1, 2), client_dims, server_dims], axis=1,
            dtype=np.int32))
        raw = rows.view(np.dtype((np.void, rows.shape[1] * 4))).ravel()
        uniq, inverse = np.unique(raw, return_inverse=True)
        dense = np.empty(uniq.size, np.int64)
        for i, row in enumerate(uniq.tolist()):
            got = self._ids.get(row)
            if got is None:
                got = self._ids[row] = len(self._keys)
                codes = np.frombuffer(row, np.int32)
                c, s, cn = unpack_edge(int(codes[:2].view(np.int64)[0]))
                k = self.dims
                self._keys.append(EdgeCodes(c, s, cn, tuple(codes[2:2 + k].tolist()),
                                            tuple(codes[2 + k:].tolist())))
            dense[i] = got
        return dense[inverse.ravel()]

    def key(self, eid: int) -> EdgeCodes:
        if not self.dims:
            c, s, conn = unpack_edge(eid)
            return EdgeCodes(c, s, conn, (), ())
        return self._keys[eid]

    def codes(self, ids: np.ndarray) -> np.ndarray:
        """Every string code the edges ``ids`` name (for StringTable.compact)."""
        ids = np.unique(np.asarray(ids, np.int64))
        if not self.dims:
            return np.concatenate([ids >> _CLIENT_SHIFT, (ids >> _SERVER_SHIFT) & _CODE_MASK])
        return np.array([c for i in ids.tolist() for k in (self._keys[i],)
                         for c in (k.client, k.server, *k.client_dims, *k.server_dims)], np.int64)

    def compact(self, live: np.ndarray, remap: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """Follow a StringTable.compact (``remap``: old code -> new) and forget every edge
        not in ``live`` (the ids some state still holds). Returns the function that maps
        those ids to their new ones; ids keep their order, so sorted id arrays stay sorted.
        Whoever caches anything by edge id must drop it."""
        if not self.dims:
            def repack(ids: np.ndarray) -> np.ndarray:
                ids = np.asarray(ids, np.int64)
                return pack_edge(remap[ids >> _CLIENT_SHIFT], remap[(ids >> _SERVER_SHIFT) & _CODE_MASK],
                                 ids & 3)
            return repack
        keep = np.unique(np.asarray(live, np.int64))
        old = self._keys
        self._ids, self._keys = {}, []
        for i in keep.tolist():
            k = old[i]
            self.id_of(EdgeCodes(int(remap[k.client]), int(remap[k.server]), k.conn,
                                 tuple(int(remap[c]) for c in k.client_dims),
                                 tuple(int(remap[c]) for c in k.server_dims)))

        def renumber(ids: np.ndarray) -> np.ndarray:
            return np.searchsorted(keep, np.asarray(ids, np.int64)).astype(np.int64)
        return renumber
