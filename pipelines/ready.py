"""What the worker's /readyz checks: Kafka joined, ClickHouse reachable and migrated, not stopping.

A worker is ready once stage 1's consumer has joined its group and received its share of
the input partitions (possibly none: with more workers than partitions an idle member is
still a healthy one, and a rolling update that surges a pod must not wait on it forever),
the ClickHouse schema is fully migrated, and, when it runs the OTLP gateway, the gateway's
producer is connected. Problems are reported by component, one line each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pipelines.intake import Intake
from pipelines.store_io import StoreIO

CLICKHOUSE_CHECK_S = 3.0  # the store thread may be busy with a batch; a probe waits this long


class WorkerReadiness:
    """``failed``: whether the worker is stopping; ``gateway``: the attached gateway, if any."""

    def __init__(self, io: StoreIO, intake: Intake, failed: Callable[[], bool],
                 gateway: Callable[[], Any] = lambda: None) -> None:
        self.io, self.intake, self.failed, self.gateway = io, intake, failed, gateway

    async def problems(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        if self.failed():
            problems["worker"] = "stopping after an error (see the log)"
        if not self.intake.joined:
            brokers = ",".join(self.intake.kafka.brokers)
            problems["kafka"] = f"{brokers}: waiting to join consumer group {self.intake.kafka.group_id!r}"
        endpoint = self.io.store.backend.endpoint
        try:
            if not await asyncio.wait_for(self.io.schema_current(), CLICKHOUSE_CHECK_S):
                problems["clickhouse"] = f"{endpoint}: the schema is not migrated (run `otel-insights migrate`)"
        except TimeoutError:
            problems["clickhouse"] = f"{endpoint}: no answer within {CLICKHOUSE_CHECK_S:.0f}s"
        except Exception as exc:  # unreachable, refused: the probe says why, the worker goes on
            problems["clickhouse"] = f"{endpoint}: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}"
        gw = self.gateway()
        if gw is not None and not gw.kafka_ready:
            problems["gateway"] = f"{','.join(gw.brokers)}: the OTLP gateway's producer is not connected yet"
        return problems
