"""The local broker starts, creates topics, and round-trips a record through aiokafka."""

import asyncio

import pytest

pytestmark = pytest.mark.integration


def test_produce_consume_roundtrip(broker, new_topic) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = new_topic("rt", partitions=2)

    async def go() -> list[tuple[bytes, bytes]]:
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await p.start()
        await p.send_and_wait(topic, b"v1", key=b"k1")
        await p.send_and_wait(topic, b"v2", key=b"k2")
        await p.stop()
        c = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
        await c.start()
        got: list[tuple[bytes, bytes]] = []
        try:
            while len(got) < 2:
                batch = await c.getmany(timeout_ms=5000)
                assert batch, "no records within 5s"
                for msgs in batch.values():
                    got += [(m.key, m.value) for m in msgs]
        finally:
            await c.stop()
        return got

    assert sorted(asyncio.run(go())) == [(b"k1", b"v1"), (b"k2", b"v2")]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_kafka_batch_compression_codecs_round_trip(broker, new_topic, codec: str) -> None:
    """The pipeline's Kafka client reads batches compressed with every codec collectors use."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = new_topic(f"z-{codec}", partitions=1)
    values = [bytes([i]) * 5000 for i in range(20)]

    async def go() -> list[bytes]:
        p = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, compression_type=codec, linger_ms=50)
        await p.start()
        futs = [await p.send(topic, v) for v in values]
        await asyncio.gather(*futs)
        await p.stop()
        c = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
        await c.start()
        got: list[bytes] = []
        try:
            while len(got) < len(values):
                batch = await c.getmany(timeout_ms=5000)
                assert batch, "no records within 5s"
                for msgs in batch.values():
                    got += [m.value for m in msgs]
        finally:
            await c.stop()
        return got

    assert asyncio.run(go()) == values
