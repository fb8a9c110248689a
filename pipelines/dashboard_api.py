"""HTTP routes of dashboard specs on the worker's web server: list, show, export, generate.

Reads go through catalogue queries (`dashboards`, `dashboard`); parameters are checked before
the ClickHouse thread sees them, so a bad one is one 400. `POST .../generate` makes a service
or overview dashboard on demand (what `otel-insights dashboards generate` asks a running
worker for, since only one process may open an embedded store).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import faust

from pipelines.dashboards import DashboardPublisher
from pipelines.store_io import StoreIO
from processor.auth import BearerAuth
from processor.dashboards import grafana
from processor.errors import ParamError, StorageError
from processor.storage.queries import request_params, rows_to_jsonable

AUDIENCES = ("sre", "developer", "manager")


def add_routes(app: faust.App, io: StoreIO, publisher: DashboardPublisher, auth: BearerAuth) -> None:
    """Behind the query API's bearer token; a ClickHouse failure is this client's 503/500."""

    def refused(view: faust.web.View, request: Any) -> Any:
        if auth.allows(request.headers.get("Authorization")):
            return None
        return view.json({"error": "missing or wrong bearer token"}, status=401,
                         headers={"WWW-Authenticate": 'Bearer realm="otel-insights"'})

    async def read(view: faust.web.View, name: str, params: dict[str, Any]) -> Any:
        try:
            return await io.query(functools.partial(io.store.catalogue, name, params))
        except StorageError as exc:
            return view.json({"error": str(exc)}, status=503 if exc.transient else 500)

    async def found(view: faust.web.View, request: Any, dashboard_id: str, render: Any) -> Any:
        if (no := refused(view, request)) is not None:
            return no
        try:
            params = request_params("dashboard", {"dashboard_id": dashboard_id, "since_ms": "0"})
        except ParamError as exc:
            return view.json({"error": str(exc)}, status=400)
        rows = await read(view, "dashboard", params)
        if not isinstance(rows, list):
            return rows  # the error response
        if not rows:
            return view.json({"error": f"no dashboard {dashboard_id!r}"}, status=404)
        return view.json(render(json.loads(rows[0]["spec"])))

    @app.page("/api/dashboards")
    class Dashboards(faust.web.View):
        async def get(self, request: Any) -> Any:
            if (no := refused(self, request)) is not None:
                return no
            args = list(request.query.items())
            try:
                params = request_params("dashboards", args if any(k in ("since", "since_ms") for k, _ in args)
                                        else [("since", "720h"), *args])
            except ParamError as exc:
                return self.json({"error": str(exc)}, status=400)
            rows = await read(self, "dashboards", params)
            return self.json(rows_to_jsonable(rows)) if isinstance(rows, list) else rows

    @app.page("/api/dashboards/generate")
    class Generate(faust.web.View):
        async def post(self, request: Any) -> Any:
            if (no := refused(self, request)) is not None:
                return no
            q = request.query
            audience = q.get("audience", "sre")
            service = q.get("service", "")
            if audience not in AUDIENCES or len(service) > 512 or set(q) - {"audience", "service"}:
                return self.json({"error": f"take service (a name, or none for the overview) and audience "
                                           f"({', '.join(AUDIENCES)})"}, status=400)
            try:
                spec = await publisher.generate("service" if service else "overview", audience, service)
            except ValueError as exc:
                return self.json({"error": str(exc)}, status=422)
            except StorageError as exc:
                return self.json({"error": str(exc)}, status=503 if exc.transient else 500)
            return self.json(spec)

    @app.page("/api/dashboards/{dashboard_id}")
    class Show(faust.web.View):
        async def get(self, request: Any, dashboard_id: str) -> Any:
            return await found(self, request, dashboard_id, lambda spec: spec)

    @app.page("/api/dashboards/{dashboard_id}/grafana")
    class Export(faust.web.View):
        async def get(self, request: Any, dashboard_id: str) -> Any:
            return await found(self, request, dashboard_id, lambda spec: grafana.export(spec, io.store.context))
