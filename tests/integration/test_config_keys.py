"""Config keys that used to be accepted and ignored, each shown doing what it says in a
running worker (real broker, chdb): receivers.kafka.client_id, kafka/dlq.brokers and
service.telemetry.logs.level. (exporters.clickhouse.async_insert and cluster_name are in
test_storage.py, exporters.prometheus.namespace in test_metrics_port.py.)"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from processor.localstack import LocalBroker
from tests.integration.harness import Pipeline, make_pipeline, read_records, wait_until

pytestmark = pytest.mark.integration
BAD = b"\xff\x00not a protobuf"


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await prod.start()
    try:
        for i, v in enumerate(values):
            await prod.send_and_wait(topic, v, key=f"{i:032x}".encode())
    finally:
        await prod.stop()


async def _topics(bootstrap: str) -> set[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return set(await consumer.topics())
    finally:
        await consumer.stop()


async def _members(bootstrap: str, group: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [resp] = await admin.describe_consumer_groups([group])
        return [m[0] for g in resp.groups for m in g[5]]  # member ids
    finally:
        await admin.close()


def test_client_id_names_every_consumer_of_the_worker(broker, new_topic, unique_name, tmp_path) -> None:
    topic = new_topic("spans")
    group = unique_name("cid")
    client_id = unique_name("worker-a")
    p = make_pipeline(tmp_path, broker.bootstrap, topic, group, kafka_options=f"\n    client_id: {client_id}")
    try:
        p.start()
        wait_until(lambda: "stage 1 assignment: " in p.log(), 60, "stage 1's assignment", p)
        # Kafka names a member after the client id it joined with (<client_id>-<uuid>):
        # stage 1's consumer in group_id, faust's in <group_id>.partials.
        for g in (group, f"{group}.partials"):
            members = wait_until(lambda g=g: asyncio.run(_members(broker.bootstrap, g)), 30, f"members of {g}", p)
            assert members and all(m.startswith(f"{client_id}-") for m in members), (g, members)
    finally:
        p.stop()


def test_dlq_brokers_send_dead_letters_to_another_cluster(broker, new_topic, unique_name, tmp_path) -> None:
    topic = new_topic("spans")
    with LocalBroker(log_path=tmp_path / "dlq-broker.log") as other:
        p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("dlqb"),
                          dlq_options=f'brokers: ["{other.bootstrap}"]')
        try:
            p.start()
            asyncio.run(_produce(broker.bootstrap, topic, [BAD]))
            [dead] = asyncio.run(read_records(other.bootstrap, f"{topic}-dlq", 1))
            assert dead.value == BAD and dict(dead.headers)["otel-insights-reason"] == b"decode"
            # Not on the input cluster: the topic was created on the DLQ's brokers only.
            assert f"{topic}-dlq" not in asyncio.run(_topics(broker.bootstrap))
            assert p.metric("otel_insights_dlq_records_total", reason="decode") == 1
        finally:
            p.stop()


def test_logs_level_from_the_config_and_the_flag_over_it(broker, new_topic, unique_name, tmp_path) -> None:
    topic = new_topic("spans")
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("logs"), logs_level="WARN")
    try:
        p.start()
        asyncio.run(_produce(broker.bootstrap, topic, [BAD]))
        wait_until(lambda: "-> DLQ (decode)" in p.log(), 60, "the dead letter's warning", p)
        log = p.log()
        assert "[WARNING]" in log and "[INFO]" not in log, log
    finally:
        p.stop()
    # --log-level wins over the config.
    p2 = Pipeline(p.config_path, p.port, tmp_path / "info.log", log_level="info")
    try:
        p2.start()
        wait_until(lambda: "stage 1 assignment: " in p2.log(), 60, "an INFO line", p2)
    finally:
        p2.stop()
