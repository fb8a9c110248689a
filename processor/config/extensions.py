"""`extensions:` components (the collector's section for what is not a pipeline stage): the web UI.

Like the collector's extensions, one runs only when `service.extensions` lists it.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from processor.config.components import (
    Frozen,
    HostPort,
    HttpAuth,
    PositiveDuration,
    split_host_port,
)
from processor.config.duration import Duration


class UiTls(Frozen):
    """HTTPS for the UI (the collector's `tls` keys): both files, or neither for plain HTTP."""

    cert_file: str = ""
    key_file: str = ""

    @model_validator(mode="after")
    def _both(self) -> UiTls:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


class UiCors(Frozen):
    """Cross-origin requests: none unless their origins are listed (the page needs none)."""

    allowed_origins: tuple[str, ...] = ()


class UiConfig(Frozen):
    """`extensions.ui`: the web UI (service map, insights feed, dashboards). `run` serves it
    when `service.extensions` lists it (the only way with an embedded chdb store, which one
    process holds); `otel-insights ui --config` serves it alone against a ClickHouse server."""

    endpoint: HostPort = "127.0.0.1:8080"
    auth: HttpAuth = HttpAuth()  # bearer token for /api/*, from the environment variable named
    tls: UiTls = UiTls()
    cors: UiCors = UiCors()
    # Insights and dashboard specs replayed from their topics at start: what the feed shows
    # before anything new arrives.
    history: PositiveDuration = Duration.parse("24h")
    max_insights: int = Field(default=500, ge=1, le=10_000)  # newest kept in memory (and shown)
    max_dashboards: int = Field(default=500, ge=1, le=10_000)

    @property
    def host_port(self) -> tuple[str, int]:
        return split_host_port(self.endpoint)


EXTENSIONS: dict[str, type[Frozen]] = {"ui": UiConfig}
