"""The OTLP gateway against a real broker: OTel SDK exporters in, one Kafka record per trace out."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import grpc
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry import trace as otel_trace
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from processor.config import OtlpReceiver
from processor.ingest import Gateway, run_gateway
from processor.localstack import LocalBroker, free_port
from processor.otlp.parse_json import parse_otlp_json

pytestmark = pytest.mark.integration

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PARTITIONS = 3
# Low producer timeouts keep the Kafka-down cases to seconds.
FAST: dict[str, Any] = {"retry_after": "7s", "shutdown_timeout": "10s", "producer": {
    "timeout": "2s", "reconnect": {"initial_interval": "100ms", "max_interval": "500ms"}}}

Expected = dict[int, dict[int, str]]  # trace id -> span id -> service.name


# -- helpers ---------------------------------------------------------------------------


def sdk_spans(n_traces: int, tag: str) -> list[ReadableSpan]:
    """Traces of 5 spans each across two services (so a trace spans two resources)."""
    exporter = InMemorySpanExporter()
    providers = []
    for service in (f"front-{tag}", f"back-{tag}"):
        p = TracerProvider(resource=Resource.create({"service.name": service}))
        p.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(p)
    front, back = (p.get_tracer("test") for p in providers)
    for i in range(n_traces):
        with front.start_as_current_span(f"GET /{i}", kind=otel_trace.SpanKind.SERVER):
            with front.start_as_current_span("call back", kind=otel_trace.SpanKind.CLIENT):
                with back.start_as_current_span("handle", kind=otel_trace.SpanKind.SERVER):
                    with back.start_as_current_span("SELECT", kind=otel_trace.SpanKind.CLIENT):
                        pass
            with front.start_as_current_span("render"):
                pass
    for p in providers:
        p.shutdown()
    spans = list(exporter.get_finished_spans())
    assert len(spans) == 5 * n_traces
    return spans


def expected_of(spans: list[ReadableSpan]) -> Expected:
    out: Expected = {}
    for s in spans:
        assert s.context is not None
        out.setdefault(s.context.trace_id, {})[s.context.span_id] = str(
            s.resource.attributes["service.name"])
    return out


def spans_of(traces: TracesData) -> Expected:
    out: Expected = {}
    for rs in traces.resource_spans:
        service = next(a.value.string_value for a in rs.resource.attributes
                       if a.key == "service.name")
        for ss in rs.scope_spans:
            for span in ss.spans:
                tid = int.from_bytes(span.trace_id, "big")
                out.setdefault(tid, {})[int.from_bytes(span.span_id, "big")] = service
    return out


async def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    """Every record on the topic: the end offsets say how many there are, so no idle wait."""
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await c.start()
    try:
        c.assign(parts)
        await c.seek_to_beginning(*parts)
        total = sum((await c.end_offsets(parts)).values())
        out: list[tuple[bytes, bytes]] = []
        while len(out) < total:
            batch = await c.getmany(timeout_ms=5000)
            assert batch, f"only {len(out)} of {total} records readable"
            out += [(m.key, m.value) for msgs in batch.values() for m in msgs]
        return out
    finally:
        await c.stop()


def check_records(records: list[tuple[bytes, bytes]], expected: Expected,
                  decode: Callable[[bytes], TracesData]) -> None:
    """One record per trace, keyed by hex trace id, holding exactly that trace's spans."""
    keys = [k for k, _ in records]
    assert sorted(keys) == sorted(f"{t:032x}".encode() for t in expected)
    for key, value in records:
        got = spans_of(decode(value))
        tid = int(key, 16)
        assert got == {tid: expected[tid]}


async def post(port: int | None, body: bytes, content_type: str = "application/x-protobuf",
               path: str = "/v1/traces", method: str = "POST",
               headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    assert port is not None
    async with aiohttp.ClientSession() as s, s.request(
            method, f"http://127.0.0.1:{port}{path}", data=body,
            headers={"Content-Type": content_type, **(headers or {})}) as r:
        return r.status, await r.read(), r.headers


async def grpc_export(port: int | None, body: bytes) -> tuple[grpc.StatusCode, Any]:
    assert port is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            await ch.unary_unary(EXPORT_METHOD)(body, timeout=20)
        except grpc.aio.AioRpcError as e:
            return e.code(), e.trailing_metadata()
        return grpc.StatusCode.OK, ()


def retry_delay_s(trailers: Any) -> int:
    raw = dict(trailers)["google.rpc.retryinfo-bin"]
    return RetryInfo.FromString(raw).retry_delay.seconds


def request_bytes(spans: list[ReadableSpan]) -> bytes:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return encode_spans(spans).SerializeToString()


def run(gateway: Gateway, body: Callable[[Gateway], Awaitable[None]]) -> None:
    """Runs `body` against the gateway served by run_gateway, then stops it."""

    async def go() -> None:
        stop = asyncio.Event()
        serving = asyncio.create_task(run_gateway(gateway, stop))
        while gateway.http_port is None or gateway.grpc_port is None:
            if serving.done():
                serving.result()  # raises why the gateway did not start
            await asyncio.sleep(0.01)
        try:
            await body(gateway)
        finally:
            stop.set()
            await serving

    asyncio.run(go())


def new_gateway(brokers: list[str], topic: str, encoding: str = "otlp_proto", **kw: Any) -> Gateway:
    """A gateway on free ports; ``kw`` are receivers.otlp settings over FAST."""
    protocols = {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}}
    cfg = OtlpReceiver.model_validate({"protocols": protocols, "topic": topic, "encoding": encoding,
                                       **FAST, **kw})
    return Gateway(cfg, brokers)


# -- tests -----------------------------------------------------------------------------


def test_sdk_grpc_and_http_exporters_one_record_per_trace(broker, new_topic) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    topic = new_topic("gw-sdk", PARTITIONS)
    via_grpc, via_http = sdk_spans(4, "g"), sdk_spans(3, "h")
    gw = new_gateway([broker.bootstrap], topic)

    async def body(gw: Gateway) -> None:
        assert await gw.wait_for_kafka(10)
        grpc_exp = GrpcExporter(endpoint=f"127.0.0.1:{gw.grpc_port}", insecure=True,
                                compression=grpc.Compression.Gzip, timeout=10)
        http_exp = HttpExporter(endpoint=f"http://127.0.0.1:{gw.http_port}/v1/traces",
                                compression=HttpCompression.Gzip, timeout=10)
        # The SDK exporters block, so they run in threads while the loop serves them.
        results = await asyncio.gather(asyncio.to_thread(grpc_exp.export, via_grpc),
                                       asyncio.to_thread(http_exp.export, via_http))
        grpc_exp.shutdown()
        http_exp.shutdown()
        assert results == [SpanExportResult.SUCCESS, SpanExportResult.SUCCESS]
        check_records(await read_topic(broker.bootstrap, topic),
                      expected_of(via_grpc + via_http), TracesData.FromString)

    run(gw, body)
    assert gw.stats.count("ok", "grpc") == 1 and gw.stats.count("ok", "http/protobuf") == 1
    assert (gw.stats.spans, gw.stats.records) == (35, 7)
    reg = gw.stats.registry
    assert reg is not None
    assert reg.get_sample_value("otel_insights_gateway_requests_total",
                                {"protocol": "grpc", "outcome": "ok"}) == 1
    assert reg.get_sample_value("otel_insights_gateway_spans_total") == 35
    assert reg.get_sample_value("otel_insights_gateway_records_total") == 7


def otlp_json_body(traces: dict[str, list[tuple[str, str]]]) -> dict[str, Any]:
    """Hand-written OTLP/JSON: trace hex id -> [(span hex id, parent hex id)]."""
    spans = [{"traceId": tid, "spanId": sid, "parentSpanId": parent, "name": f"op-{sid}",
              "kind": 2, "startTimeUnixNano": "1700000000000000000",
              "endTimeUnixNano": "1700000000500000000", "status": {"code": 2},
              "links": [{"traceId": "ab" * 16, "spanId": "cd" * 8}],
              "attributes": [{"key": "http.route", "value": {"stringValue": "/x"}}],
              "someFutureField": True}
             for tid, ss in traces.items() for sid, parent in ss]
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name",
                                     "value": {"stringValue": "json-svc"}}]},
        "scopeSpans": [{"scope": {"name": "hand"}, "spans": spans}]}]}


def test_http_json_gzip_and_otlp_json_records(broker, new_topic) -> None:
    topic = new_topic("gw-json", PARTITIONS)
    t1, t2, t3 = "0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736", "00" * 15 + "01"
    doc = otlp_json_body({t1: [("b7ad6b7169203331", ""), ("00f067aa0ba902b7", "b7ad6b7169203331")],
                          t2: [("53995c3f42cd8ad8", "")]})
    doc3 = otlp_json_body({t3: [("1111111111111111", "")]})
    gw = new_gateway([broker.bootstrap], topic, encoding="otlp_json")

    async def body(gw: Gateway) -> None:
        assert await gw.wait_for_kafka(10)
        status, resp, _ = await post(gw.http_port, json.dumps(doc).encode(), "application/json")
        assert (status, json.loads(resp)) == (200, {})
        status, _, _ = await post(gw.http_port, gzip.compress(json.dumps(doc3).encode()),
                                  "application/json; charset=utf-8",
                                  headers={"Content-Encoding": "gzip"})
        assert status == 200
        records = dict(await read_topic(broker.bootstrap, topic))
        assert sorted(records) == sorted(t.encode() for t in (t1, t2, t3))
        # Records are OTLP/JSON with hex ids, holding exactly their trace's spans.
        rec1 = json.loads(records[t1.encode()])
        first = rec1["resourceSpans"][0]["scopeSpans"][0]["spans"]
        assert {s["spanId"] for s in first} == {"b7ad6b7169203331", "00f067aa0ba902b7"}
        assert {s["traceId"] for s in first} == {t1}
        assert first[0]["links"][0]["traceId"] == "ab" * 16
        parsed = parse_otlp_json(records[t1.encode()])
        child = next(s for s in parsed.resource_spans[0].scope_spans[0].spans
                     if s.span_id.hex() == "00f067aa0ba902b7")
        assert child.parent_span_id.hex() == "b7ad6b7169203331"
        assert child.status.code == 2 and child.end_time_unix_nano == 1700000000500000000
        assert spans_of(parse_otlp_json(records[t2.encode()])) == {
            int(t2, 16): {int("53995c3f42cd8ad8", 16): "json-svc"}}
        assert spans_of(parse_otlp_json(records[t3.encode()])) == {
            1: {int("11" * 8, 16): "json-svc"}}

    run(gw, body)
    assert gw.stats.count("ok", "http/json") == 2


def test_undecodable_payloads_are_rejected_and_nothing_is_produced(broker, new_topic) -> None:
    topic = new_topic("gw-bad", PARTITIONS)
    good = sdk_spans(1, "ok")
    garbage = b"\xff\xff\xff\xff\x0fnot a protobuf"
    gw = new_gateway([broker.bootstrap], topic)

    async def body(gw: Gateway) -> None:
        assert await gw.wait_for_kafka(10)
        port = gw.http_port
        status, resp, _ = await post(port, garbage)
        assert status == 400 and Status.FromString(resp).code == 3  # INVALID_ARGUMENT
        status, resp, _ = await post(port, b'{"resourceSpans": [', "application/json")
        assert status == 400 and json.loads(resp)["code"] == 3
        bad_id = otlp_json_body({"zz" * 16: [("00" * 8, "")]})
        assert (await post(port, json.dumps(bad_id).encode(), "application/json"))[0] == 400
        short_id = otlp_json_body({"abcd": [("01" * 8, "")]})
        assert (await post(port, json.dumps(short_id).encode(), "application/json"))[0] == 400
        assert (await post(port, b"\x1f\x8b\x08garbage", headers={"Content-Encoding": "gzip"}))[0] == 400
        assert (await grpc_export(gw.grpc_port, garbage))[0] == grpc.StatusCode.INVALID_ARGUMENT
        short_trace = TracesData()
        short_trace.resource_spans.add().scope_spans.add().spans.add(
            trace_id=b"\x01" * 8, span_id=b"\x02" * 8, name="bad id")
        status, resp, _ = await post(port, short_trace.SerializeToString())
        assert status == 400 and "16 bytes" in Status.FromString(resp).message
        # Protocol errors of the HTTP surface.
        assert (await post(port, request_bytes(good), "text/plain"))[0] == 415
        assert (await post(port, request_bytes(good), headers={"Content-Encoding": "snappy"}))[0] == 415
        assert (await post(port, request_bytes(good), path="/v1/metrics"))[0] == 404
        assert (await post(port, b"", method="GET"))[0] == 405
        # Still serving: the next good request on either protocol goes through.
        status, resp, _ = await post(port, request_bytes(good))
        assert status == 200 and resp == b""
        assert (await grpc_export(gw.grpc_port, request_bytes(good)))[0] == grpc.StatusCode.OK
        records = await read_topic(broker.bootstrap, topic)
        # Two copies of the one good trace, and nothing from the refused requests.
        assert [k for k, _ in records] == [f"{good[0].context.trace_id:032x}".encode()] * 2

    run(gw, body)
    assert gw.stats.count("invalid") == 7 and gw.stats.count("unsupported") == 2


def test_oversize_requests_are_refused(broker, new_topic) -> None:
    topic = new_topic("gw-big", PARTITIONS)
    spans = sdk_spans(40, "big")
    big = request_bytes(spans)
    limit = 4096
    assert len(big) > limit
    gw = new_gateway([broker.bootstrap], topic, max_request_size=limit)

    async def body(gw: Gateway) -> None:
        assert await gw.wait_for_kafka(10)
        status, resp, _ = await post(gw.http_port, big)
        assert status == 413 and Status.FromString(resp).code == 8
        # Small on the wire, too big once inflated: the limit applies to the decoded body.
        zipped = gzip.compress(b"\0" * (10 * limit))
        assert len(zipped) < limit
        status, _, _ = await post(gw.http_port, zipped, headers={"Content-Encoding": "gzip"})
        assert status == 413
        assert (await grpc_export(gw.grpc_port, big))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        small = request_bytes(spans[:5])
        assert len(small) < limit
        assert (await post(gw.http_port, small))[0] == 200
        assert len(await read_topic(broker.bootstrap, topic)) == 1

    run(gw, body)
    assert gw.stats.count("too_large") == 2


def test_kafka_unreachable_gives_retryable_errors() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    good = request_bytes(sdk_spans(1, "down"))
    gw = new_gateway([nobody], "otlp_spans")

    async def body(gw: Gateway) -> None:
        assert not gw.kafka_ready
        status, resp, headers = await post(gw.http_port, good)
        assert status == 503 and headers["Retry-After"] == "7"
        assert Status.FromString(resp).code == 14  # UNAVAILABLE
        status, resp, headers = await post(gw.http_port, json.dumps(
            otlp_json_body({"01" * 16: [("02" * 8, "")]})).encode(), "application/json")
        assert status == 503 and json.loads(resp)["code"] == 14
        code, trailers = await grpc_export(gw.grpc_port, good)
        assert code == grpc.StatusCode.UNAVAILABLE and retry_delay_s(trailers) == 7

    run(gw, body)
    assert gw.stats.count("unavailable") == 3 and gw.stats.records == 0


def test_reconnect_buffer_full_and_ack_failure() -> None:
    """Kafka comes up late, then goes away while a request waits for its acks."""
    port = free_port()
    gw = new_gateway([f"127.0.0.1:{port}"], "late", max_buffered_requests=1)
    good = request_bytes(sdk_spans(2, "late"))
    local = LocalBroker(port=port)

    async def body(gw: Gateway) -> None:
        assert (await post(gw.http_port, good))[0] == 503
        await asyncio.to_thread(local.start)
        await asyncio.to_thread(local.create_topic, "late", PARTITIONS)
        assert await gw.wait_for_kafka(20), "producer did not reconnect"
        assert (await post(gw.http_port, good))[0] == 200
        assert len(await read_topic(local.bootstrap, "late")) == 2

        await asyncio.to_thread(local.stop)
        waiting = asyncio.create_task(post(gw.http_port, good))
        while gw.buffered_requests < 1:  # the first request now holds the only slot
            assert not waiting.done()
            await asyncio.sleep(0.01)
        status, _, headers = await post(gw.http_port, good)
        assert status == 429 and headers["Retry-After"] == "7"
        code, trailers = await grpc_export(gw.grpc_port, good)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_delay_s(trailers) == 7
        # No ack ever comes, so the waiting request fails as retryable, not as success.
        status, _, headers = await waiting
        assert status == 503 and "Retry-After" in headers
        assert gw.buffered_requests == 0

    try:
        run(gw, body)
    finally:
        local.stop()
    assert gw.stats.count("buffer_full") == 2
    assert gw.stats.count("ok") == 1 and gw.stats.count("unavailable") == 2


def test_stop_waits_for_in_flight_produce(broker, new_topic) -> None:
    topic = new_topic("gw-stop", PARTITIONS)
    spans = sdk_spans(1, "stop")
    # A long linger keeps the request waiting for its ack while stop() begins.
    gw = new_gateway([broker.bootstrap], topic, producer={**FAST["producer"], "linger": "1500ms"})

    async def go() -> None:
        await gw.start()
        assert await gw.wait_for_kafka(10)
        waiting = asyncio.create_task(post(gw.http_port, request_bytes(spans)))
        while gw.buffered_requests < 1:
            assert not waiting.done()
            await asyncio.sleep(0.01)
        await gw.stop()
        assert (await waiting)[0] == 200
        assert len(await read_topic(broker.bootstrap, topic)) == 1

    asyncio.run(go())
