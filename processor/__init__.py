"""otel-insights: the pure library (decode, pair, window, store); no Kafka or faust imports."""

__version__ = "0.1.0"
