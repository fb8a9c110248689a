"""Vectorised pairing store with the OTel servicegraph connector's semantics.

CLIENT/PRODUCER spans wait under (trace id, span id); SERVER/CONSUMER spans wait under
(trace id, parent span id), or under their first span link when they have one (semconv's
messaging default). Waiting spans live in columnar arrays, not per-span dict entries, so a
batch pairs with a few sorts instead of a Python loop per span.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from processor.config.components import StoreConfig
from processor.graph.edges import (
    CONN_DATABASE,
    CONN_MESSAGING,
    CONN_NONE,
    CONN_VIRTUAL,
    EMPTY_EDGES,
    EdgeBatch,
)
from processor.otlp.batch import (
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_PRODUCER,
    KIND_SERVER,
    STATUS_ERROR,
    SpanBatch,
    StringTable,
)

KIND_NAMES = {KIND_CLIENT: "client", KIND_SERVER: "server", KIND_PRODUCER: "producer",
              KIND_CONSUMER: "consumer"}


@dataclass
class PairingStats:
    """Counts since the last `take_stats`, for the self metrics."""

    paired: int = 0
    database: int = 0
    virtual_user: int = 0
    virtual_peer: int = 0  # expired clients/producers turned into virtual-node edges
    expired: Counter[str] = field(default_factory=Counter)  # unpaired spans by kind
    evicted: int = 0  # dropped early because max_items was reached


_KEY = np.dtype([("span", np.uint64), ("hi", np.uint64), ("lo", np.uint64)])


def _match_key(span: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """(span id, trace hi, trace lo) as one sortable structured column."""
    k = np.empty(span.shape[0], _KEY)
    k["span"], k["hi"], k["lo"] = span, hi, lo
    return k


def _ms(b: SpanBatch) -> np.ndarray:
    return (b.end_ns - b.start_ns).astype(np.float64) / 1e6


class PairingStore:
    """Pairs spans of one input partition; `add` returns the edges completed by a batch.

    `store` is `processors.servicegraph.store`. A waiting span expires `ttl` after it
    entered the store, as the connector's do, but on the partition's event-time clock (the
    latest span end read), so a replay expires the same spans: a span enters at its own end
    or, arriving late, at the clock when it came. A late client so still waits its full
    ttl for a server that comes with it.
    """

    def __init__(self, strings: StringTable, store: StoreConfig, virtual_nodes: bool = True) -> None:
        """``virtual_nodes``: expired clients and root servers become virtual-node edges (the
        connector's rule: only when virtual_node_peer_attributes is not empty); else they
        are only counted as expired."""
        self.ttl_ns = store.ttl.ns
        self.max_items = store.max_items
        self.virtual_nodes = virtual_nodes
        self.user_code = strings.code("user")
        self.unknown_code = strings.code("unknown")
        self.clients = SpanBatch.empty()
        self.servers = SpanBatch.empty()
        # Match key of each waiting server: (trace hi, trace lo, span id it waits for).
        self._skey = (np.empty(0, np.uint64), np.empty(0, np.uint64), np.empty(0, np.uint64))
        # When each waiting client and server entered the store (event time, see above).
        self._c_since = np.empty(0, np.int64)
        self._s_since = np.empty(0, np.int64)
        self.clock_ns = 0
        # Expiry may not run ahead of this (a re-key partition's slowest origin); None: no cap.
        self.cap_ns: int | None = None
        self.stats = PairingStats()

    def __len__(self) -> int:
        return len(self.clients) + len(self.servers)

    def min_client_end_ns(self) -> int | None:
        """The earliest end among waiting client spans: its window must not close (nor take
        corrections) before the span pairs or expires, or the edge would land after it."""
        return int(self.clients.end_ns.min()) if len(self.clients) else None

    def min_offset(self) -> int | None:
        offs = [b.offset.min() for b in (self.clients, self.servers) if len(b)]
        return int(min(offs)) if offs else None

    def codes(self) -> np.ndarray:
        """Every string code the store holds (for StringTable.compact)."""
        return np.concatenate([self.clients.codes(), self.servers.codes(),
                               np.array([self.user_code, self.unknown_code], np.int32)])

    def remap_codes(self, remap: np.ndarray) -> None:
        """Follow a StringTable.compact."""
        self.clients.remap_codes(remap)
        self.servers.remap_codes(remap)
        self.user_code, self.unknown_code = int(remap[self.user_code]), int(remap[self.unknown_code])

    def take_stats(self) -> PairingStats:
        s, self.stats = self.stats, PairingStats()
        return s

    def add(self, spans: SpanBatch) -> EdgeBatch:
        entered = self.clock_ns  # the clock this batch arrived at
        if len(spans):
            self.clock_ns = max(self.clock_ns, int(spans.end_ns.max()))
        kind = spans.kind
        is_client = (kind == KIND_CLIENT) | (kind == KIND_PRODUCER)
        # As the connector: a client (or producer) span with a database_name_attributes
        # value is a database call, complete at once; db.system alone is not.
        is_db = is_client & (spans.db_name != 0)
        is_server = (kind == KIND_SERVER) | (kind == KIND_CONSUMER)
        has_link = spans.link_span_id != 0
        is_root = (spans.parent_span_id == 0) & ~has_link
        parts = [self._database_edges(spans.take(is_db)),
                 self._user_edges(spans.take(is_server & is_root))]
        waiting_servers = spans.take(is_server & ~is_root)
        parts.append(self._pair(spans.take(is_client & ~is_db), waiting_servers, entered))
        parts.append(self._expire())
        return EdgeBatch.concat(parts)

    def flush_all(self) -> EdgeBatch:
        """Expire everything now (idle partition or end of input)."""
        self.clock_ns = max(
            [self.clock_ns] + [int(since.max()) + self.ttl_ns + 1
                               for since in (self._c_since, self._s_since) if since.size]
        )
        return self._expire(capped=False)

    # -- edge builders ---------------------------------------------------------------

    def _database_edges(self, c: SpanBatch) -> EdgeBatch:
        if not len(c):
            return EMPTY_EDGES
        # The node is the database's name; its "server" latency is the client span's, as
        # the connector copies it (there is no server span).
        self.stats.database += len(c)
        return self._one_sided(c, c.db_name, CONN_DATABASE, client_side=True, server_too=True)

    def _user_edges(self, s: SpanBatch) -> EdgeBatch:
        if not len(s):
            return EMPTY_EDGES
        if not self.virtual_nodes:
            self._count_expired(s)
            return EMPTY_EDGES
        self.stats.virtual_user += len(s)
        return self._one_sided(s, np.full(len(s), self.user_code, np.int32), CONN_VIRTUAL,
                               client_side=False)

    def _one_sided(self, b: SpanBatch, other: np.ndarray, conn: int, client_side: bool,
                   server_too: bool = False) -> EdgeBatch:
        """Edges with one span: the client side (a virtual or database server) or the server
        side (a root server called by `user`). NaN latency and no dimensions on the side
        with no span, except `server_too`: the client span stands for both latencies."""
        n = len(b)
        nan = np.full(n, np.nan)
        zero = np.zeros(n, np.int64)
        ms = _ms(b)
        none = np.zeros_like(b.dims)
        return EdgeBatch(
            client=b.service if client_side else other.astype(np.int32),
            server=other.astype(np.int32) if client_side else b.service,
            conn=np.full(n, conn, np.int8), failed=b.status == STATUS_ERROR,
            client_ms=ms if client_side else nan,
            server_ms=ms if server_too or not client_side else nan,
            time_ns=b.end_ns, client_end_ns=b.end_ns if client_side else zero,
            server_end_ns=zero if client_side else b.end_ns, hold_offset=b.offset,
            offset=b.offset, client_dims=b.dims if client_side else none,
            server_dims=none if client_side else b.dims,
        )

    def _count_expired(self, gone: SpanBatch) -> None:
        for k, n in zip(*np.unique(gone.kind, return_counts=True), strict=True):
            self.stats.expired[KIND_NAMES.get(int(k), "other")] += int(n)

    # -- pairing ------------------------------------------------------------------------

    def _pair(self, new_clients: SpanBatch, new_servers: SpanBatch, entered: int) -> EdgeBatch:
        clients = SpanBatch.concat([self.clients, new_clients])
        servers = SpanBatch.concat([self.servers, new_servers])
        c_since = np.concatenate([self._c_since, np.maximum(new_clients.end_ns, entered)])
        s_since = np.concatenate([self._s_since, np.maximum(new_servers.end_ns, entered)])
        linked = new_servers.link_span_id != 0
        skey = tuple(
            np.concatenate([old, np.where(linked, lnk, own)])
            for old, lnk, own in zip(
                self._skey,
                (new_servers.link_trace_hi, new_servers.link_trace_lo, new_servers.link_span_id),
                (new_servers.trace_hi, new_servers.trace_lo, new_servers.parent_span_id),
                strict=True,
            )
        )
        edges = EMPTY_EDGES
        c_keep = np.ones(len(clients), bool)
        s_keep = np.ones(len(servers), bool)
        if len(clients) and len(servers):
            order = np.argsort(clients.span_id, kind="stable")
            sorted_ids = clients.span_id[order]
            if sorted_ids.size > 1 and bool((sorted_ids[1:] == sorted_ids[:-1]).any()):
                # A span id repeats across traces (ids not random), so the first client
                # with the id may be in another trace: search on the whole key instead.
                ckey = _match_key(clients.span_id, clients.trace_hi, clients.trace_lo)
                order = np.argsort(ckey, kind="stable")
                sorted_keys = ckey[order]
                want = _match_key(skey[2], skey[0], skey[1])
                pos = np.minimum(np.searchsorted(sorted_keys, want), len(order) - 1)
                ci = order[pos]
                hit = sorted_keys[pos] == want
            else:
                pos = np.minimum(np.searchsorted(sorted_ids, skey[2]), len(order) - 1)
                ci = order[pos]
                hit = ((sorted_ids[pos] == skey[2]) & (clients.trace_hi[ci] == skey[0])
                       & (clients.trace_lo[ci] == skey[1]))
            si = np.nonzero(hit)[0]
            ci = ci[si]
            # One server per client span: a second server waiting on the same client
            # keeps waiting (and expires) rather than counting the request twice.
            ci, first = np.unique(ci, return_index=True)
            si = si[first]
            if si.size:
                edges = self._paired_edges(clients.take(ci), servers.take(si))
                c_keep[ci] = False
                s_keep[si] = False
        self.clients = clients.take(c_keep)
        self.servers = servers.take(s_keep)
        self._c_since, self._s_since = c_since[c_keep], s_since[s_keep]
        self._skey = tuple(k[s_keep] for k in skey)  # type: ignore[assignment]
        return edges

    def _paired_edges(self, c: SpanBatch, s: SpanBatch) -> EdgeBatch:
        self.stats.paired += len(c)
        # Messaging when either side is: the connector takes it from whichever span it
        # reads last, so a CLIENT -> CONSUMER pair is messaging_system whatever the order.
        messaging = (c.kind == KIND_PRODUCER) | (s.kind == KIND_CONSUMER)
        conn = np.where(messaging, CONN_MESSAGING, CONN_NONE).astype(np.int8)
        return EdgeBatch(
            client=c.service, server=s.service, conn=conn,
            failed=(c.status == STATUS_ERROR) | (s.status == STATUS_ERROR),
            client_ms=_ms(c), server_ms=_ms(s), time_ns=c.end_ns,
            client_end_ns=c.end_ns, server_end_ns=s.end_ns,
            hold_offset=np.minimum(c.offset, s.offset), offset=np.maximum(c.offset, s.offset),
            client_dims=c.dims, server_dims=s.dims,
        )

    # -- expiry -----------------------------------------------------------------------

    def _expire(self, capped: bool = True) -> EdgeBatch:
        clock = self.clock_ns if self.cap_ns is None or not capped else min(self.clock_ns, self.cap_ns)
        limit = clock - self.ttl_ns
        c_exp = self._c_since < limit
        s_exp = self._s_since < limit
        over = len(self) - int(c_exp.sum()) - int(s_exp.sum()) - self.max_items
        if over > 0:
            # Store full: the oldest waiting spans leave early, as if expired (clients still
            # become virtual-node edges). The connector instead refuses new spans while it is
            # full (dropped_spans); evicting the oldest keeps the newest traffic pairing.
            since = np.concatenate([self._c_since[~c_exp], self._s_since[~s_exp]])
            cutoff = np.partition(since, over - 1)[over - 1]
            before = int(c_exp.sum() + s_exp.sum())
            c_exp |= self._c_since <= cutoff
            s_exp |= self._s_since <= cutoff
            self.stats.evicted += int(c_exp.sum() + s_exp.sum()) - before
        edges = EMPTY_EDGES
        if c_exp.any():
            gone = self.clients.take(c_exp)
            self.clients = self.clients.take(~c_exp)
            self._c_since = self._c_since[~c_exp]
            self._count_expired(gone)
            if self.virtual_nodes:
                self.stats.virtual_peer += len(gone)
                peer = np.where(gone.virtual_peer != 0, gone.virtual_peer, self.unknown_code)
                edges = self._one_sided(gone, peer, CONN_VIRTUAL, client_side=True)
        if s_exp.any():
            gone = self.servers.take(s_exp)
            self.servers = self.servers.take(~s_exp)
            self._s_since = self._s_since[~s_exp]
            self._skey = tuple(k[~s_exp] for k in self._skey)  # type: ignore[assignment]
            self._count_expired(gone)
        return edges
