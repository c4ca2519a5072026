"""Health and metrics, without a token (for orchestrators and Prometheus; no PHI in either):

* `GET /health/live`  — liveness: the process answers (restart it if not);
* `GET /health` (= `/health/ready`) — readiness, component by component (imaging.observability.health):
  200 when all are ready, else 503 with the ones that are not (take it out of service, do not restart it);
* `GET /metrics` — Prometheus text exposition (imaging.metrics, imaging.observability.collectors).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from imaging.access.http import PUBLIC
from imaging.observability.collectors import ArchiveCollector, exposition
from imaging.observability.health import Readiness

router = APIRouter(tags=["Health"])
Public = Annotated[None, Depends(PUBLIC)]


@router.get("/health/live", summary="Liveness (no token)")
def live(_: Public) -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/health", summary="Readiness of each component (no token)")
@router.get("/health/ready", summary="Readiness of each component (no token)")
def ready(request: Request, _: Public) -> JSONResponse:
    readiness: Readiness = request.app.state.readiness
    ok, components = readiness.check()
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "components": components}, status_code=200 if ok else 503
    )


@router.get("/metrics", summary="Prometheus metrics (no token)")
def metrics(request: Request, _: Public) -> Response:
    collector: ArchiveCollector = request.app.state.metrics
    return Response(exposition(collector), media_type=CONTENT_TYPE_LATEST)
