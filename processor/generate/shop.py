"""ShopGenerator: seeded demo-shop traces (one TracesData per trace) with fault injection and call records."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from opentelemetry.proto.trace.v1 import trace_pb2

from processor.generate import topology as topo
from processor.generate.faults import FaultIndex, FaultSpec
from processor.generate.plan import SCOPE, Handler, Rand, Step, compile_topology, resource_for
from processor.generate.truth import DATABASE_EDGE, MESSAGING_EDGE, RPC_EDGE, VIRTUAL_EDGE, Call

_STATUS_ERROR = trace_pb2.Status.STATUS_CODE_ERROR
_ROOT_EDGE = f"user->{topo.ROOT_SERVICE}"


@dataclass(slots=True)
class GeneratedTrace:
    """One trace: its OTLP payload plus the generator's own record of every counted call."""

    trace_id: bytes
    data: trace_pb2.TracesData
    end_ns: int  # max span end
    calls: list[Call]
    start_ns: int = 0  # root span start (the arrival time)
    operation: str = ""  # the root route, e.g. "POST /api/checkout"
    span_count: int = 0


class _TraceBuilder:
    """Groups a trace's spans into one ResourceSpans + ScopeSpans per service."""

    __slots__ = ("trace_id", "data", "scopes", "calls", "end_ns", "spans", "resources")

    def __init__(self, trace_id: bytes, resources: dict[str, Any]) -> None:
        self.trace_id = trace_id
        self.data = trace_pb2.TracesData()
        self.scopes: dict[str, Any] = {}
        self.calls: list[Call] = []
        self.end_ns = 0
        self.spans = 0
        self.resources = resources

    def span(self, service: str, template: trace_pb2.Span, span_id: bytes, parent_id: bytes,
             start_ns: int, end_ns: int, error: bool, message: str) -> None:
        ss = self.scopes.get(service)
        if ss is None:
            rs = self.data.resource_spans.add()
            rs.resource.MergeFrom(self.resources[service])
            ss = self.scopes[service] = rs.scope_spans.add()
            ss.scope.MergeFrom(SCOPE)
        s = ss.spans.add()
        s.MergeFrom(template)
        s.trace_id = self.trace_id
        s.span_id = span_id
        if parent_id:
            s.parent_span_id = parent_id
        s.start_time_unix_nano = start_ns
        s.end_time_unix_nano = end_ns
        if error:
            s.status.code = _STATUS_ERROR
            s.status.message = message
        if end_ns > self.end_ns:
            self.end_ns = end_ns
        self.spans += 1


class _Run:
    """One pass of traces(): the random stream and the recursive call simulation."""

    def __init__(self, gen: ShopGenerator) -> None:
        self.rand = Rand(gen.seed)
        self.faults = gen._index
        self.roots = gen._roots
        self.cumulative = gen._cumulative
        self.resources = gen._resources

    def trace(self, t_ns: int) -> GeneratedTrace:
        r = self.rand
        u = r.uniform()
        i = 0
        while self.cumulative[i] <= u:
            i += 1
        root = self.roots[i]
        tb = _TraceBuilder(r.trace_id(), self.resources)
        fail_p = self.faults.edge_failure_p(_ROOT_EDGE, t_ns) if self.faults else 0.0
        fast_fail = fail_p > 0 and r.uniform() < fail_p
        _, end, err = self.serve(tb, root, b"", t_ns, _ROOT_EDGE, t_ns, fast_fail)
        tb.calls.append(Call("user", root.service, VIRTUAL_EDGE, 0, 0, t_ns, end, False, err))
        return GeneratedTrace(tb.trace_id, tb.data, tb.end_ns, tb.calls, t_ns, root.method, tb.spans)

    def serve(self, tb: _TraceBuilder, h: Handler, parent_id: bytes, start: int, edge: str,
              t_fault: int, fast_fail: bool) -> tuple[bytes, int, bool]:
        """Server (or consumer) span of `h` starting at `start`; -> (span id, end, error).

        Duration = own work + the sequential downstream calls. Half the own work comes
        before the first call, half after the last. A fast-failing server (edge_failure)
        makes no downstream calls.
        """
        r = self.rand
        own = r.duration_ns(h.profile)
        error_p = h.profile.error_p
        if self.faults:
            own = int(own * self.faults.latency_factor(h.service, edge, t_fault))
            error_p = self.faults.error_p(h.service, edge, t_fault, error_p)
        span_id = r.span_id()
        cursor = start + own // 2
        error, message = fast_fail, "connection reset by peer"
        if not fast_fail:
            for step in h.steps:
                n = step.repeat_lo
                if step.repeat_hi > n:
                    n += int(r.uniform() * (step.repeat_hi - n + 1))
                for _ in range(n):
                    res = self.call(tb, step, span_id, cursor)
                    if res is None:
                        continue
                    cursor, failed = res
                    if failed and step.critical:
                        error, message = True, f"{step.target} call failed"
                        break
                if error:
                    break
            if not error and r.uniform() < error_p:
                error, message = True, "internal error"
        end = cursor + own - own // 2
        tb.span(h.service, h.template, span_id, parent_id, start, end, error, message)
        return span_id, end, error

    def call(self, tb: _TraceBuilder, step: Step, parent_id: bytes, t0: int) -> tuple[int, bool] | None:
        """Client/producer span of `step` starting at t0; -> (client end, client error), None if dropped."""
        r = self.rand
        f = self.faults
        fail_p = 0.0
        if f:
            drop_p = f.drop_p(step.target, step.edge, t0)
            if drop_p > 0 and r.uniform() < drop_p:
                return None
            fail_p = f.edge_failure_p(step.edge, t0)
        fast_fail = fail_p > 0 and r.uniform() < fail_p
        caller = step.caller
        if step.handler is None:  # database: the client span is all there is
            dur = r.duration_ns(step.profile)
            error_p = step.profile.error_p
            if f:
                dur = int(dur * f.latency_factor(step.target, step.edge, t0))
                error_p = f.error_p(step.target, step.edge, t0, error_p)
            end = t0 + dur
            err = fast_fail or r.uniform() < error_p
            tb.span(caller, step.template, r.span_id(), parent_id, t0, end, err, "database error")
            tb.calls.append(Call(caller, step.target, DATABASE_EDGE, t0, end, 0, 0, err, False))
            return end, err
        client_id = r.span_id()
        if step.kind == topo.RPC:
            s_start = t0 + r.duration_ns(topo.NETWORK)
            _, s_end, s_err = self.serve(tb, step.handler, client_id, s_start, step.edge, t0, fast_fail)
            end = s_end + r.duration_ns(topo.NETWORK)
            # A server error always surfaces at the client; rarely the client alone fails.
            err = s_err or r.uniform() < topo.CLIENT_TIMEOUT_P
            tb.span(caller, step.template, client_id, parent_id, t0, end, err,
                    "upstream error" if s_err else "deadline exceeded")
            tb.calls.append(Call(caller, step.target, RPC_EDGE, t0, end, s_start, s_end, err, s_err))
            return end, err
        # Messaging: the producer returns once the broker acks; the consumer runs later, so
        # its outcome never reaches the producer (unless the edge itself is broken).
        end = t0 + r.duration_ns(topo.KAFKA_SEND)
        err = fast_fail or r.uniform() < topo.KAFKA_SEND.error_p
        tb.span(caller, step.template, client_id, parent_id, t0, end, err, "broker error")
        c_start = end + r.duration_ns(topo.KAFKA_QUEUE)
        _, c_end, c_err = self.serve(tb, step.handler, client_id, c_start, step.edge, t0, fast_fail)
        tb.calls.append(Call(caller, step.target, MESSAGING_EDGE, t0, end, c_start, c_end, err, c_err))
        return end, err


@dataclass
class ShopGenerator:
    """Seeded synthetic OTLP traffic shaped like the OpenTelemetry demo shop.

    Traces arrive as a Poisson process of `rate` traces/s in event time from `start_ns`,
    optionally modulated by a sine of `diurnal_amplitude` (0..1) over `diurnal_period_s`
    (phase 0 at start_ns) and by a lognormal rate factor of sigma `rate_noise`, redrawn
    every `noise_period_s`. Each traces() call replays the same stream for the same seed.
    """

    seed: int
    rate: float
    start_ns: int
    faults: Sequence[FaultSpec] = ()
    diurnal_amplitude: float = 0.0
    diurnal_period_s: float = 86400.0
    rate_noise: float = 0.0
    noise_period_s: float = 60.0
    _index: FaultIndex = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.rate < 0 or not math.isfinite(self.rate):
            raise ValueError(f"rate {self.rate}: must be a finite number of traces/s >= 0")
        if not 0.0 <= self.diurnal_amplitude <= 1.0:
            raise ValueError(f"diurnal_amplitude {self.diurnal_amplitude}: must be in [0, 1]")
        if self.rate_noise < 0:
            raise ValueError(f"rate_noise {self.rate_noise}: must be >= 0")
        self.faults = list(self.faults)
        self._index = FaultIndex(list(self.faults))
        _, self._roots, self._cumulative = compile_topology()
        services = set(topo.SERVICES)
        self._resources = {s: resource_for(s) for s in services}

    def labels(self) -> list[dict[str, Any]]:
        """The injected faults as plain dicts, for evaluating detections against them."""
        return [f.to_dict() for f in self.faults]

    def traces(self, duration_s: float) -> Iterator[GeneratedTrace]:
        """Traces starting in [start_ns, start_ns + duration_s) in start order; math.inf = endless."""
        run = _Run(self)
        rand = run.rand
        modulated = self.diurnal_amplitude > 0 or self.rate_noise > 0
        # A Poisson process with a piecewise-constant rate is exact if each piece restarts
        # its exponential gap at the boundary (memorylessness); 1 s pieces track the sine.
        piece_s = 1.0 if modulated else math.inf
        noise = _RateNoise(self.seed, self.rate_noise, self.noise_period_s)
        drop_root = bool(self._index)
        off_s = 0.0  # float seconds from start_ns: float ns since 1970 would lose sub-µs precision
        while off_s < duration_s:
            rate = self._rate_at(off_s, noise) if modulated else self.rate
            piece_end = (math.floor(off_s / piece_s) + 1) * piece_s if modulated else math.inf
            if rate <= 0:
                if piece_end == math.inf:
                    return
                off_s = piece_end
                continue
            nxt = off_s + rand.exponential() / rate
            if nxt >= piece_end:
                off_s = piece_end
                continue
            off_s = nxt
            if off_s >= duration_s:
                return
            t_ns = self.start_ns + int(off_s * 1e9)
            if drop_root:
                drop_p = self._index.drop_p(topo.ROOT_SERVICE, _ROOT_EDGE, t_ns)
                if drop_p > 0 and rand.uniform() < drop_p:
                    continue
            yield run.trace(t_ns)

    def _rate_at(self, off_s: float, noise: _RateNoise) -> float:
        diurnal = 1.0 + self.diurnal_amplitude * math.sin(2 * math.pi * off_s / self.diurnal_period_s)
        return self.rate * diurnal * noise.factor(off_s)


class _RateNoise:
    """Lognormal rate factor (mean 1) per period, from its own stream so it never shifts spans."""

    def __init__(self, seed: int, sigma: float, period_s: float) -> None:
        self._rng = np.random.default_rng([seed, 1])
        self.sigma, self.period_s = sigma, period_s
        self._factors: list[float] = []

    def factor(self, off_s: float) -> float:
        if self.sigma == 0:
            return 1.0
        k = int(off_s // self.period_s)
        while len(self._factors) <= k:  # drawn in period order, so deterministic per seed
            z = float(self._rng.standard_normal())
            self._factors.append(math.exp(self.sigma * z - self.sigma ** 2 / 2))
        return self._factors[k]
