"""Which versions a topic already holds, read from the tail of its partitions.

Stage 3 stores a version unmarked, sends it, then marks it. After a crash, an unmarked
version may or may not be on the topic: only this stage writes the topic, and an unmarked
version is at most the last few records, so the tail tells.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

TAIL_RECORDS = 500  # records per partition read back


async def sent_versions(brokers: list[str], topic: str, wanted: set[tuple[str, int]],
                        id_field: str, security: Mapping[str, Any] | None = None) -> set[tuple[str, int]]:
    """Which of ``wanted`` ((id, version) pairs; the id is the JSON field ``id_field``) the
    tail of ``topic`` holds. ``security``: receivers.kafka's tls and auth.sasl (client_options)."""
    c = AIOKafkaConsumer(bootstrap_servers=brokers, enable_auto_commit=False, **(security or {}))
    await c.start()
    found: set[tuple[str, int]] = set()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        if not tps:
            return found
        c.assign(tps)
        ends = await c.end_offsets(tps)
        starts = await c.beginning_offsets(tps)
        for tp in tps:
            c.seek(tp, max(starts[tp], ends[tp] - TAIL_RECORDS))
        remaining = {tp for tp in tps if ends[tp] > starts[tp]}
        while remaining:
            batch = await c.getmany(*remaining, timeout_ms=2000)
            if not batch:
                break
            for tp, records in batch.items():
                for r in records:
                    try:
                        body = json.loads(r.value)
                        found.add((str(body[id_field]), int(body["version"])))
                    except (ValueError, KeyError, TypeError):
                        pass
                    if r.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        return found & wanted
    finally:
        await c.stop()
