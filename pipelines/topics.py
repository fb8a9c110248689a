"""Topic checks and creation before the worker starts (Tansu needs explicit creation)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from processor.config import Config
from processor.errors import OtelInsightsError


async def _partitions(bootstrap: list[str], topics: list[str], security: dict[str, Any]
                      ) -> dict[str, int]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10000, **security)
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


async def _create(bootstrap: list[str], topics: list[str], partitions: int,
                  security: dict[str, Any]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security)
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
    """Whether the dead-letter topic lives on other brokers than the input (kafka/dlq.brokers).
    Those are reached without receivers.kafka's tls and auth: its credentials are not sent
    to another cluster (the kafka exporter's own tls/auth keys are not supported yet)."""
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
    inputs = list(kafka.traces.topics)
    names = [*inputs, *internal]
    security = kafka.client_options()
    counts = await _partitions(list(kafka.brokers), names, security)
    missing = [t for t in internal if counts[t] == 0]
    if create_input:
        missing += [t for t in inputs if counts[t] == 0]
    if missing:
        await _create(list(kafka.brokers), missing, kafka.partitions, security)
        counts = await _partitions(list(kafka.brokers), names, security)
    absent = [t for t in inputs if counts[t] == 0]
    if absent:
        raise OtelInsightsError(
            f"input topic(s) {absent} do not exist on {','.join(kafka.brokers)}: "
            "create them, or point receivers.kafka.traces.topics at your collectors' topics")
    if separate_dlq(cfg):
        plain: dict[str, Any] = {}
        dlq = await _partitions(list(cfg.dlq.brokers), [cfg.dlq.topic], plain)
        if not dlq[cfg.dlq.topic]:
            await _create(list(cfg.dlq.brokers), [cfg.dlq.topic], kafka.partitions, plain)
    return counts
