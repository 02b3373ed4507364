"""Operations routes: ``/healthz`` and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chat.metrics import held_notifications
from chat.app import App


async def metrics(request: Request) -> Response:
    """Prometheus text format for this process."""
    service: App = request.app.state.service
    service.metrics.held.set(await held_notifications(service.sessions))
    return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")


async def healthz(request: Request) -> Response:
    service: App = request.app.state.service
    async with service.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return JSONResponse({"status": "ok", "connections": service.hub.connection_count()})
