"""Errors raised while loading or scoring a NAB-style corpus."""

from __future__ import annotations

from processor.errors import OtelInsightsError


class NabDataError(OtelInsightsError):
    """A data directory, windows file or detector output that cannot be scored; says what to fix."""
