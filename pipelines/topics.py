"""Topic checks and creation before the worker starts (Tansu needs explicit creation)."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from processor.config import Config
from processor.errors import OtelInsightsError


async def _partitions(bootstrap: list[str], topics: list[str]) -> dict[str, int]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)  # our one error line says it; no client noise
    try:
        await c.start()
    except Exception as exc:
        await c.stop()
        raise OtelInsightsError(f"cannot reach Kafka at {','.join(bootstrap)}: {exc}") from exc
    finally:
        client_log.setLevel(level)
    try:
        out = {}
        all_topics = await c.topics()
        for t in topics:
            ps = c.partitions_for_topic(t) if t in all_topics else None
            out[t] = len(ps) if ps else 0
        return out
    finally:
        await c.stop()


async def _create(bootstrap: list[str], topics: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    except Exception as exc:
        if "exist" not in str(exc).lower():
            raise OtelInsightsError(f"cannot create topics {topics}: {exc}") from exc
    finally:
        await admin.close()
    await asyncio.sleep(0.5)


def separate_dlq(cfg: Config) -> bool:
    """Whether the dead-letter topic lives on other brokers than the input (kafka/dlq.brokers)."""
    return cfg.kafka is not None and set(cfg.dlq.brokers) != set(cfg.kafka.brokers)


async def ensure_topics(cfg: Config, create_input: bool = False) -> dict[str, int]:
    """Create the internal topics if missing; return partition counts of every topic used."""
    kafka = cfg.kafka
    if kafka is None:
        raise OtelInsightsError("the traces pipeline has no kafka receiver")
    internal = [kafka.rekey_topic, kafka.partials_topic]
    if not separate_dlq(cfg):
        internal.append(cfg.dlq.topic)
    if cfg.anomaly is not None:
        internal.append(cfg.anomaly.topic)
    if cfg.narrator is not None:
        internal.append(cfg.narrator.topic)
    if cfg.dashboards is not None:
        internal.append(cfg.dashboards.topic)
    names = [kafka.traces.topic, *internal]
    counts = await _partitions(list(kafka.brokers), names)
    missing = [t for t in internal if counts[t] == 0]
    if create_input and counts[kafka.traces.topic] == 0:
        missing.append(kafka.traces.topic)
    if missing:
        await _create(list(kafka.brokers), missing, kafka.partitions)
        counts = await _partitions(list(kafka.brokers), names)
    if counts[kafka.traces.topic] == 0:
        raise OtelInsightsError(
            f"input topic {kafka.traces.topic!r} does not exist on {','.join(kafka.brokers)}: "
            "create it, or point receivers.kafka.traces.topic at your collectors' topic")
    if separate_dlq(cfg):
        dlq = await _partitions(list(cfg.dlq.brokers), [cfg.dlq.topic])
        if not dlq[cfg.dlq.topic]:
            await _create(list(cfg.dlq.brokers), [cfg.dlq.topic], kafka.partitions)
    return counts
