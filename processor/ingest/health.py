"""The standalone gateway's own HTTP port: /metrics, /healthz (alive) and /readyz (Kafka producer connected).

`otel-insights gateway` serves it on the prometheus exporter's endpoint, as the worker
does, so every process of a deployment is probed and scraped the same way. The OTLP
ports stay for OTLP only.
"""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from processor.errors import OtelInsightsError
from processor.ingest.gateway import Gateway
from processor.telemetry import Namespaced

# aiohttp refuses a charset inside content_type (as pipelines/api.py does for the worker).
EXPOSITION_TYPE = ";".join(p for p in CONTENT_TYPE_LATEST.split(";") if "charset" not in p)


def readiness(gateway: Gateway) -> dict[str, str]:
    """Problems by component; empty when ready. Requests are refused with 503 until then."""
    if gateway.kafka_ready:
        return {}
    return {"kafka": f"{','.join(gateway.brokers)}: the producer is not connected yet"}


class HealthServer:
    """Serves the three pages for ``gateway`` on host:port (port 0 picks a free one)."""

    def __init__(self, gateway: Gateway, registry: CollectorRegistry, namespace: str = "") -> None:
        self.gateway = gateway
        self.exposed = Namespaced(registry, namespace)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.exposed),  # type: ignore[arg-type]
                                content_type=EXPOSITION_TYPE)

        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok", "time": time.time()})

        async def readyz(request: web.Request) -> web.Response:
            problems = readiness(self.gateway)
            return web.json_response({"status": "not ready" if problems else "ready", "problems": problems},
                                     status=503 if problems else 200)

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        return app

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as e:
            await self.stop()
            raise OtelInsightsError(f"cannot serve /metrics, /healthz and /readyz on {host}:{port} "
                                    f"(exporters.prometheus.endpoint): {e}") from None
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
