"""OTLP gateway: gRPC/HTTP trace receivers -> one Kafka record per trace, acked once Kafka acks."""

from processor.ingest.gateway import Gateway, run_gateway
from processor.ingest.stats import GatewayStats

__all__ = ["Gateway", "GatewayStats", "run_gateway"]
