"""Event-time tumbling windows: window arithmetic, per-partition accumulators, latency sketch."""
