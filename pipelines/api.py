"""The worker's HTTP surface on the prometheus endpoint: /metrics, /healthz, /readyz and the query API.

`/metrics`, `/healthz` (the process answers) and `/readyz` (pipelines/ready.py; 503 with the
problems by component until ready) are open (scrapers and probes). `/api/query/<name>` runs a query
of the catalogue (processor.storage.catalogue_sql) with typed, bounded parameters, behind
the optional bearer token of `exporters.prometheus.api.auth`. A bad parameter is a 400 before anything reaches
ClickHouse; a ClickHouse failure is a 503 (transient) or 500 for this client only, never
retried and never a reason to stop the worker. faust's own pages are turned off in app.py.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from processor.auth import BearerAuth
from processor.config.components import PrometheusExporter
from processor.errors import ParamError, StorageError
from processor.storage.catalogue_sql import CATALOGUE
from processor.storage.queries import request_params, rows_to_jsonable
from processor.telemetry import Metrics, Namespaced

if TYPE_CHECKING:  # `otel-insights query` imports api_auth without the worker's imports
    import faust

    from pipelines.store_io import StoreIO

# aiohttp refuses a charset inside content_type, so drop it from the exposition type.
_EXPOSITION_TYPE = ";".join(p for p in CONTENT_TYPE_LATEST.split(";") if "charset" not in p)

def api_auth(prometheus: PrometheusExporter | None) -> BearerAuth:
    """The query API's token check; ConfigError when its token variable is named but unset
    (checked first thing at start, so nothing else is opened before the one error line)."""
    if prometheus is None:
        return BearerAuth()
    return BearerAuth.from_config(prometheus.api.auth, "exporters.prometheus.api.auth")


def install_pages(app: faust.App, prometheus: PrometheusExporter, auth: BearerAuth, io: StoreIO,
                  metrics: Metrics, health: Callable[[], dict[str, Any]],
                  ready: Callable[[], Awaitable[dict[str, str]]]) -> None:
    """Add the pages to ``app``; ``ready`` gives the problems that keep it from being ready."""
    api = prometheus.api
    exposed = Namespaced(metrics.registry, prometheus.namespace)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(exposed), content_type=_EXPOSITION_TYPE)  # type: ignore[arg-type]

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", **health(), "time": time.time()})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        problems = await ready()
        return web.json({"status": "not ready" if problems else "ready", "problems": problems, **health()},
                        status=503 if problems else 200)

    if not api.enabled:
        return

    @app.page("/api/query/{name}")
    async def query(web: Any, request: Any, name: str) -> Any:
        if not auth.allows(request.headers.get("Authorization")):
            return web.json({"error": "missing or wrong bearer token"}, status=401,
                            headers={"WWW-Authenticate": 'Bearer realm="otel-insights"'})
        if name not in CATALOGUE:
            return web.json({"error": f"unknown query {name[:40]!r}; one of {sorted(CATALOGUE)}"}, status=404)
        try:
            args = request_params(name, request.query.items())
        except ParamError as exc:
            return web.json({"error": str(exc)}, status=400)
        try:
            rows = await io.query(functools.partial(io.store.catalogue, name, args))
        except StorageError as exc:
            return web.json({"error": str(exc)}, status=503 if exc.transient else 500)
        return web.bytes(json.dumps(rows_to_jsonable(rows)).encode(), content_type="application/json")

