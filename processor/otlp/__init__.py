"""OTLP traces: decoding Kafka records / requests into columnar SpanBatch, and encoding."""
