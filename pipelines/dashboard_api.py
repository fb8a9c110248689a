"""HTTP routes of dashboard specs on the worker's web server: list, show, export, generate.

Reads go through catalogue queries (`dashboards`, `dashboard`); parameters are checked before
the ClickHouse thread sees them, so a bad one is one 400. `POST .../generate` makes a service
or overview dashboard on demand (what `otel-insights dashboards generate` asks a running
worker for, since only one process may open an embedded store).
"""

from __future__ import annotations

import json
from typing import Any

import faust

from pipelines.dashboards import DashboardPublisher
from pipelines.store_io import StoreIO
from processor.dashboards import grafana
from processor.storage.catalogue import ParamError
from processor.storage.queries import request_params, rows_to_jsonable

AUDIENCES = ("sre", "developer", "manager")


def add_routes(app: faust.App, io: StoreIO, publisher: DashboardPublisher) -> None:
    async def one(dashboard_id: str) -> dict[str, Any] | None:
        params = request_params("dashboard", {"dashboard_id": dashboard_id, "since_ms": "0"})
        rows = await io.call(io.store.catalogue, "dashboard", params)
        return json.loads(rows[0]["spec"]) if rows else None

    @app.page("/api/dashboards")
    class Dashboards(faust.web.View):
        async def get(self, request: Any) -> Any:
            try:
                params = request_params("dashboards", {"since": "720h", **request.query})
            except ParamError as exc:
                return self.json({"error": str(exc)}, status=400)
            rows = await io.call(io.store.catalogue, "dashboards", params)
            return self.json(rows_to_jsonable(rows))

    @app.page("/api/dashboards/generate")
    class Generate(faust.web.View):
        async def post(self, request: Any) -> Any:
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
            return self.json(spec)

    async def found(self: faust.web.View, dashboard_id: str, render: Any) -> Any:
        try:
            spec = await one(dashboard_id)
        except ParamError as exc:
            return self.json({"error": str(exc)}, status=400)
        if spec is None:
            return self.json({"error": f"no dashboard {dashboard_id!r}"}, status=404)
        return self.json(render(spec))

    @app.page("/api/dashboards/{dashboard_id}")
    class Show(faust.web.View):
        async def get(self, request: Any, dashboard_id: str) -> Any:
            return await found(self, dashboard_id, lambda spec: spec)

    @app.page("/api/dashboards/{dashboard_id}/grafana")
    class Export(faust.web.View):
        async def get(self, request: Any, dashboard_id: str) -> Any:
            return await found(self, dashboard_id, lambda spec: grafana.export(spec, io.store.context))
