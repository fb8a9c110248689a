"""Named crash points for kill tests: the process SIGKILLs itself the n-th time one is reached.

Exactness has to hold when a worker dies between any two steps of a hand-over, and a
SIGKILL sent from outside lands wherever the worker happens to be. Like etcd's gofail and
TiKV's fail-rs, the steps that matter are named here, and a test arms one through the
environment of the process it starts:

    OTEL_INSIGHTS_FAILPOINTS="stage1.keys_announced=3"   # die at its 3rd hit

Unarmed (always, outside tests) a point costs one dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

ENV = "OTEL_INSIGHTS_FAILPOINTS"

POINTS = {
    "stage1.partials_written": "partial rows are in ClickHouse, their keys not yet announced to stage 2",
    "stage1.keys_announced": "keys are on the partials topic, the partition's watermark not yet stored",
    "stage1.watermark_saved": "the watermark is stored, not yet advertised nor the offsets committed",
    "stage1.rekeyed": "re-keyed records are on the re-key topic, their input offsets not committed",
    "stage1.origins_stored": "what re-key partitions applied is stored, their offsets not yet committed",
    "stage2.final_written": "final rows are written, the partials records not yet acknowledged",
}

log = logging.getLogger("otel_insights.failpoints")


def parse(spec: str) -> dict[str, int]:
    """``name=n,name2`` -> {name: n, name2: 1}; an unknown name or a bad count is an error."""
    armed: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, count = item.partition("=")
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown failpoint {name!r}; one of {sorted(POINTS)}")
        if count and (not count.isdigit() or int(count) < 1):
            raise ValueError(f"{ENV}: {item!r}: the count must be a positive integer")
        armed[name] = int(count or 1)
    return armed


_armed = parse(os.environ.get(ENV, ""))
_hits: dict[str, int] = {}


def reach(name: str) -> None:
    """Mark that ``name`` was reached; dies here if it is armed for this hit."""
    if name not in _armed:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == _armed[name]:
        log.critical("failpoint %s reached (hit %d): SIGKILL", name, _hits[name])
        for h in logging.getLogger().handlers:
            h.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
