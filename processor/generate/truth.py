"""The independent oracle: per-call records kept by the generator, and the windows they count into.

Nothing here decodes or pairs spans. The generator writes one Call per interaction as it
decides it, and GroundTruth applies the product's documented counting rules to those
records, so a pipeline that mis-pairs or mis-windows spans disagrees with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

# connection_type values, as the service graph emits them.
RPC_EDGE, MESSAGING_EDGE, DATABASE_EDGE, VIRTUAL_EDGE = "", "messaging_system", "database", "virtual_node"


class Call(NamedTuple):
    """One interaction the generator made: an optional client side and an optional server side.

    - rpc ("") and messaging ("messaging_system"): a CLIENT/PRODUCER span on `client` and a
      SERVER/CONSUMER span on `server`.
    - database: only the client span; `server` is the database node name, and the client
      span's duration is the server latency too (the connector copies it).
    - virtual_node: a root SERVER span with no parent; `client` is "user", no client span.
    Times of an absent side are 0 and its error flag is False. (A NamedTuple, not a
    dataclass: the generator makes one per span pair and tuple construction is cheap.)
    """

    client: str
    server: str
    connection_type: str
    client_start_ns: int
    client_end_ns: int
    server_start_ns: int
    server_end_ns: int
    client_error: bool
    server_error: bool

    @property
    def has_client_span(self) -> bool:
        return self.connection_type != VIRTUAL_EDGE

    @property
    def has_server_span(self) -> bool:
        return self.connection_type != DATABASE_EDGE

    @property
    def failed(self) -> bool:
        return self.client_error or self.server_error

    @property
    def edge_end_ns(self) -> int:
        """The time that windows the edge: the client (or producer) span's end, else the server's."""
        return self.client_end_ns if self.has_client_span else self.server_end_ns


class GroundTruth:
    """Accumulates Calls into event-time tumbling windows (window_start = end - end % window_ns).

    Service windows: every SERVER/CONSUMER span (roots included) counted for its service at
    its end time. Edge windows: every Call at its client (or producer) end time; root
    calls (user -> frontend) at the server end time, with server latency only (stored rows
    leave a side with no span unmeasured); database edges with the client span's latency
    on both sides, as the servicegraph connector records them.
    """

    def __init__(self, window_ns: int) -> None:
        if window_ns <= 0:
            raise ValueError("window_ns must be positive")
        self.window_ns = window_ns
        self._services: dict[tuple[str, int], dict[str, Any]] = {}
        self._edges: dict[tuple[str, str, str, int], dict[str, Any]] = {}
        self.traces = 0

    def add(self, trace: Any) -> None:
        """Add a GeneratedTrace (anything with a `calls` list)."""
        self.traces += 1
        self.add_calls(trace.calls)

    def add_all(self, traces: Iterable[Any]) -> None:
        for t in traces:
            self.add(t)

    def add_calls(self, calls: Iterable[Call]) -> None:
        w = self.window_ns
        services, edges = self._services, self._edges
        for c in calls:
            server_ms = None
            if c.has_server_span:
                end = c.server_end_ns
                server_ms = (end - c.server_start_ns) / 1e6
                skey = (c.server, end - end % w)
                s = services.get(skey)
                if s is None:
                    s = services[skey] = {"calls": 0, "errors": 0, "latencies_ms": []}
                s["calls"] += 1
                s["errors"] += int(c.server_error)
                s["latencies_ms"].append(server_ms)
            end = c.edge_end_ns
            ekey = (c.client, c.server, c.connection_type, end - end % w)
            e = edges.get(ekey)
            if e is None:
                e = edges[ekey] = {"requests": 0, "failed": 0, "server_latencies_ms": [],
                                   "client_latencies_ms": []}
            e["requests"] += 1
            e["failed"] += int(c.failed)
            if c.has_client_span:
                client_ms = (c.client_end_ns - c.client_start_ns) / 1e6
                e["client_latencies_ms"].append(client_ms)
                if not c.has_server_span:  # a database call: its server side is the client span
                    server_ms = client_ms
            if server_ms is not None:
                e["server_latencies_ms"].append(server_ms)

    def service_windows(self) -> dict[tuple[str, int], dict[str, Any]]:
        """(service, window_start_ns) -> {calls, errors, latencies_ms}; a copy."""
        return {k: {"calls": v["calls"], "errors": v["errors"], "latencies_ms": list(v["latencies_ms"])}
                for k, v in self._services.items()}

    def edge_windows(self) -> dict[tuple[str, str, str, int], dict[str, Any]]:
        """(client, server, connection_type, window_start_ns) ->
        {requests, failed, server_latencies_ms, client_latencies_ms}; a copy."""
        return {k: {"requests": v["requests"], "failed": v["failed"],
                    "server_latencies_ms": list(v["server_latencies_ms"]),
                    "client_latencies_ms": list(v["client_latencies_ms"])}
                for k, v in self._edges.items()}
