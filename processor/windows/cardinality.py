"""The per-window cardinality limit: past it, new entities are counted under one overflow entity.

A window of one input partition keeps its own row for at most `cardinality_limit` distinct
services and as many distinct edges; an entity first seen after that is counted under the
overflow entity (`otel.metric.overflow`, as the OpenTelemetry SDK's cardinality limit does),
so a flood of made-up service names costs a bounded amount of memory, keys and rows, and
every call is still counted once, in totals.

Which entities keep their own row is decided by arrival: the first ones seen, in record
order. Spans arrive in record order whatever the batch boundaries, so the same records give
the same services. Edges complete when their second span arrives or when they expire, and
expiry runs once per batch, so past the limit a replay after a crash with other batch
boundaries can choose other edges (see the README's known limits).
"""

from __future__ import annotations

import numpy as np

# The overflow entity's name: a service, both ends of an edge, every label of a series.
OVERFLOW = "otel.metric.overflow"


def admit(admitted: np.ndarray, ids: np.ndarray, limit: int, overflow: int
          ) -> tuple[np.ndarray, np.ndarray, int]:
    """Map the ids past the limit to ``overflow``.

    ``admitted``: the window's ids so far (sorted int64); ``ids``: new contributions in
    arrival order. New distinct ids are admitted in order of first appearance while fewer
    than ``limit`` are admitted. Returns (ids with the rest mapped to ``overflow``, the
    admitted ids after this call, how many contributions went to the overflow entity).
    """
    wide = ids.astype(np.int64)
    known = np.isin(wide, admitted) | (wide == overflow)
    if known.all():
        return ids, admitted, 0
    new, first = np.unique(wide[~known], return_index=True)
    room = max(limit - admitted.size, 0)
    if new.size > room:
        new = np.sort(new[np.argsort(first, kind="stable")[:room]])
    admitted = np.union1d(admitted, new)
    ok = known | np.isin(wide, new)
    if ok.all():
        return ids, admitted, 0
    return np.where(ok, ids, overflow).astype(ids.dtype), admitted, int((~ok).sum())
