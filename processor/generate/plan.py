"""Compiles the topology into linked handler/step objects with prebuilt span templates, plus the seeded random source."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from processor.generate import topology as topo

SERVER, CLIENT, PRODUCER, CONSUMER = (
    trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CLIENT,
    trace_pb2.Span.SPAN_KIND_PRODUCER, trace_pb2.Span.SPAN_KIND_CONSUMER,
)
SCOPE = common_pb2.InstrumentationScope(name="otel-insights.generate", version="1")
_ZERO_ID = bytes(8)
_BLOCK = 8192


def _span_template(name: str, kind: int, attributes: tuple[tuple[str, str], ...]) -> trace_pb2.Span:
    # Spans are stamped out with MergeFrom(template): copying a prebuilt message is several
    # times cheaper than setting name, kind and attributes field by field.
    span = trace_pb2.Span(name=name, kind=kind)  # type: ignore[arg-type]
    for key, value in attributes:
        kv = span.attributes.add()
        kv.key = key
        kv.value.string_value = value
    return span


def resource_for(service: str) -> resource_pb2.Resource:
    res = resource_pb2.Resource()
    kv = res.attributes.add()
    kv.key = "service.name"
    kv.value.string_value = service
    return res


@dataclass(eq=False)
class Handler:
    """What `service` does when serving `method`: its server (or consumer) span and its calls."""

    service: str
    method: str
    template: trace_pb2.Span
    profile: topo.Profile
    steps: list[Step] = field(default_factory=list)


@dataclass(eq=False)
class Step:
    """One compiled Downstream: the client span template and where the call lands."""

    kind: str
    caller: str
    target: str
    edge: str  # "caller->target", the key edge faults use
    template: trace_pb2.Span
    critical: bool
    repeat_lo: int
    repeat_hi: int
    handler: Handler | None  # None for database calls
    profile: topo.Profile  # the database's profile for db calls


def compile_topology() -> tuple[dict[tuple[str, str], Handler], list[Handler], list[float]]:
    """-> (handlers by (service, method), root handlers, their cumulative weights (last = 1))."""
    consumers = {(ds.target, ds.method) for calls in topo.HANDLERS.values()
                 for ds in calls if ds.kind == topo.MESSAGING}
    roots = {m for m, _ in topo.OPERATIONS}
    handlers: dict[tuple[str, str], Handler] = {}
    for service, method in topo.HANDLERS:
        if (service, method) in consumers:
            tmpl = _span_template(method, CONSUMER, topo.CONSUMER_ATTRIBUTES)
        elif service == topo.ROOT_SERVICE and method in roots:
            verb, _, route = method.partition(" ")
            tmpl = _span_template(method, SERVER, (("http.request.method", verb), ("http.route", route)))
        else:
            tmpl = _span_template(method, SERVER, (("rpc.system", "grpc"),))
        handlers[(service, method)] = Handler(service, method, tmpl, topo.SERVICES[service])
    for (service, method), calls in topo.HANDLERS.items():
        for ds in calls:
            kind = PRODUCER if ds.kind == topo.MESSAGING else CLIENT
            is_db = ds.kind == topo.DB
            handlers[(service, method)].steps.append(Step(
                ds.kind, service, ds.target, f"{service}->{ds.target}",
                _span_template(ds.name, kind, ds.attributes), ds.critical,
                ds.repeat[0], ds.repeat[1],
                None if is_db else handlers[(ds.target, ds.method)],
                topo.DATABASES[ds.target] if is_db else topo.SERVICES[ds.target],
            ))
    total = sum(w for _, w in topo.OPERATIONS)
    cumulative, acc = [], 0.0
    for _, w in topo.OPERATIONS:
        acc += w / total
        cumulative.append(acc)
    cumulative[-1] = 1.0
    root_handlers = [handlers[(topo.ROOT_SERVICE, m)] for m, _ in topo.OPERATIONS]
    return handlers, root_handlers, cumulative


class Rand:
    """Seeded scalar draws served from numpy blocks (a numpy call per scalar costs ~1 µs)."""

    def __init__(self, seed: int | list[int]) -> None:
        self._rng = np.random.default_rng(seed)
        self._u: list[float] = []
        self._ui = 0
        self._z: list[float] = []
        self._zi = 0
        self._ids = b""
        self._ii = 0

    def uniform(self) -> float:
        i = self._ui
        if i >= len(self._u):
            self._u = self._rng.random(_BLOCK).tolist()
            i = 0
        self._ui = i + 1
        return self._u[i]

    def normal(self) -> float:
        i = self._zi
        if i >= len(self._z):
            self._z = self._rng.standard_normal(_BLOCK).tolist()
            i = 0
        self._zi = i + 1
        return self._z[i]

    def exponential(self) -> float:
        return -math.log1p(-self.uniform())  # uniform() is in [0, 1), so the log is finite

    def duration_ns(self, p: topo.Profile) -> int:
        """Lognormal duration with median p.median_ms; at least 1 µs."""
        return max(1000, int(p.median_ms * 1e6 * math.exp(p.sigma * self.normal())))

    def span_id(self) -> bytes:
        while True:
            i = self._ii
            if i + 8 > len(self._ids):
                self._ids = self._rng.bytes(8 * _BLOCK)
                i = 0
            self._ii = i + 8
            sid = self._ids[i:i + 8]
            if sid != _ZERO_ID:  # an all-zero id means "absent" in OTLP
                return sid

    def trace_id(self) -> bytes:
        return self.span_id() + self.span_id()
