"""Errors of the detect package."""

from processor.errors import OtelInsightsError


class ModelFormatError(OtelInsightsError):
    """Stored model bytes that this version cannot read; retrain the model or upgrade."""
