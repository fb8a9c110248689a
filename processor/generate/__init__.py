"""Synthetic OTLP traffic shaped like the OpenTelemetry demo shop, with labelled faults and an independent ground truth."""

from processor.generate.faults import FAULT_KINDS, FaultSpec
from processor.generate.output import paced, to_records
from processor.generate.shop import GeneratedTrace, ShopGenerator
from processor.generate.truth import Call, GroundTruth

__all__ = [
    "FAULT_KINDS", "Call", "FaultSpec", "GeneratedTrace", "GroundTruth",
    "ShopGenerator", "paced", "to_records",
]
