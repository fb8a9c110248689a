"""Labelled fault injections (FaultSpec) and the per-call lookup the generator applies them with."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from processor.errors import ConfigError

FAULT_KINDS = ("latency_shift", "error_burst", "traffic_drop", "edge_failure")


@dataclass(frozen=True)
class FaultSpec:
    """One injected fault, active for calls starting in [start_ns, end_ns).

    `target` is a service (or database node) name, or an edge "client->server".
    `magnitude` is the own-work latency multiplier (latency_shift), the error probability
    (error_burst, edge_failure) or the fraction of calls dropped (traffic_drop).
    The spec doubles as the label an evaluation compares detections against.
    """

    kind: str
    target: str
    start_ns: int
    end_ns: int
    magnitude: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ConfigError(f"fault kind {self.kind!r}: expected one of {', '.join(FAULT_KINDS)}")
        if not self.target or self.target.count("->") > 1:
            raise ConfigError(f"fault target {self.target!r}: expected 'service' or 'client->server'")
        if self.kind == "edge_failure" and not self.is_edge:
            raise ConfigError(f"fault target {self.target!r}: edge_failure needs 'client->server'")
        if self.end_ns <= self.start_ns:
            raise ConfigError(f"fault {self.kind} on {self.target}: end_ns must be after start_ns")
        if self.kind == "latency_shift":
            if self.magnitude <= 0:
                raise ConfigError(f"fault magnitude {self.magnitude}: latency multiplier must be > 0")
        elif not 0.0 <= self.magnitude <= 1.0:
            raise ConfigError(f"fault magnitude {self.magnitude}: {self.kind} needs a probability in [0, 1]")

    @property
    def is_edge(self) -> bool:
        return "->" in self.target

    @property
    def edge(self) -> tuple[str, str]:
        """(client, server) of an edge target."""
        client, _, server = self.target.partition("->")
        return client.strip(), server.strip()

    def active(self, t_ns: int) -> bool:
        return self.start_ns <= t_ns < self.end_ns

    def windows(self, window_ns: int) -> list[int]:
        """Start times of the windows this fault overlaps (what a detector should flag)."""
        first = self.start_ns - self.start_ns % window_ns
        return list(range(first, self.end_ns, window_ns))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], base_ns: int = 0) -> FaultSpec:
        """From start_ns/end_ns, or start_s/end_s (or start_s/duration_s) relative to base_ns."""
        try:
            if "start_ns" in d:
                start, end = int(d["start_ns"]), int(d["end_ns"])
            else:
                start = base_ns + int(float(d["start_s"]) * 1e9)
                end = (start + int(float(d["duration_s"]) * 1e9) if "duration_s" in d
                       else base_ns + int(float(d["end_s"]) * 1e9))
            return cls(str(d["kind"]), str(d["target"]), start, end, float(d.get("magnitude", 1.0)))
        except KeyError as e:
            raise ConfigError(f"fault {d!r}: missing key {e.args[0]!r}") from None


class FaultIndex:
    """Answers "what applies to this call at time t" with a few dict lookups per call.

    Overlapping faults combine: latency multipliers multiply, error probabilities take the
    max, drop fractions compose as independent drops.
    """

    def __init__(self, faults: list[FaultSpec]) -> None:
        self.faults = list(faults)
        self._by: dict[tuple[str, str], list[FaultSpec]] = {}
        for f in self.faults:
            target = "->".join(f.edge) if f.is_edge else f.target
            self._by.setdefault((f.kind, target), []).append(f)

    def __bool__(self) -> bool:
        return bool(self.faults)

    def _active(self, kind: str, target: str, t_ns: int) -> list[FaultSpec]:
        fs = self._by.get((kind, target))
        return [f for f in fs if f.active(t_ns)] if fs else []

    def latency_factor(self, service: str, edge: str, t_ns: int) -> float:
        factor = 1.0
        for f in self._active("latency_shift", service, t_ns) + self._active("latency_shift", edge, t_ns):
            factor *= f.magnitude
        return factor

    def error_p(self, service: str, edge: str, t_ns: int, base: float) -> float:
        """Error probability of the server side: an active error_burst replaces the base rate."""
        active = self._active("error_burst", service, t_ns) + self._active("error_burst", edge, t_ns)
        return max(f.magnitude for f in active) if active else base

    def drop_p(self, service: str, edge: str, t_ns: int) -> float:
        keep = 1.0
        for f in self._active("traffic_drop", service, t_ns) + self._active("traffic_drop", edge, t_ns):
            keep *= 1.0 - f.magnitude
        return 1.0 - keep

    def edge_failure_p(self, edge: str, t_ns: int) -> float:
        active = self._active("edge_failure", edge, t_ns)
        return max(f.magnitude for f in active) if active else 0.0
