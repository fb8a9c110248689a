"""OTel SDK -> otel-insights gateway (gRPC, HTTP) -> Kafka -> pipeline -> ClickHouse rows."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace.export import SpanExporter

from tests.e2e.procs import GatewayProcess
from tests.e2e.sdk_traffic import assert_final_rows, send_requests
from tests.integration.harness import make_pipeline

pytestmark = pytest.mark.e2e

N = 40
ERRORS = {3, 11, 12, 30}
DB_ERRORS = {5, 17}


def exporter_factory(protocol: str, gw: GatewayProcess) -> Callable[[], SpanExporter]:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return lambda: GrpcExporter(endpoint=f"127.0.0.1:{gw.grpc_port}", insecure=True, timeout=10)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return lambda: HttpExporter(endpoint=f"http://127.0.0.1:{gw.http_port}/v1/traces", timeout=10)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_sdk_through_gateway_gives_exact_edges_and_health(broker, new_topic, unique_name, tmp_path,
                                                         protocol) -> None:
    topic = new_topic("e2e-gw")
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("gw"), encoding="otlp_proto",
                      window="2s", rekey="auto").start()
    try:
        with GatewayProcess(p.config_path, tmp_path) as gw:
            want = send_requests(exporter_factory(protocol, gw), N, ERRORS, DB_ERRORS)
            assert_final_rows(p, want)
            gw.check_alive()
        assert p.metric("otel_insights_spans_total") == want.spans
        # The gateway keys records by trace id, so nothing needed re-keying or dead-lettering.
        assert p.metric("otel_insights_rekeyed_records_total") == 0
        assert p.metric("otel_insights_dlq_records_total") == 0
        assert p.metric("otel_insights_late_spans_total") == 0
    finally:
        p.stop()
