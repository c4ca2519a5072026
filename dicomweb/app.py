"""The DICOMweb application: `create_app(archive)`.

Service roots: `/dicomweb` (the clinical partition) and `/projects/{project}/dicomweb` (a research
project's partition; the project name is the partition name). Also `/health` (no token), `/viewer`
(OHIF, when fetched), `/docs` and `/openapi.json`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomweb import viewer
from dicomweb.capabilities import router as capabilities_router
from dicomweb.routes import qido, rendered, stow, wado
from imaging.archive import Archive
from imaging.errors import ArchiveError

log = logging.getLogger(__name__)
CLINICAL_ROOT = "/dicomweb"
PROJECT_ROOT = "/projects/{project}/dicomweb"
SHARE_ROOT = "/shares/{share_token}/dicomweb"


class SecurityHeaders:
    """Cross-Origin-Resource-Policy on every answer (viewers on another origin run cross-origin
    isolated for MPR); the built-in viewer's pages are themselves cross-origin isolated."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_viewer = scope.get("path", "").startswith(viewer.BASE)

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"cross-origin-resource-policy", b"cross-origin"))
                headers.append((b"x-content-type-options", b"nosniff"))
                if is_viewer:
                    headers.append((b"cross-origin-opener-policy", b"same-origin"))
                    headers.append((b"cross-origin-embedder-policy", b"require-corp"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, wrapped)


def _project(project: str = Path(description="research project (= partition) name")) -> str:
    return project


def _share_token(share_token: str = Path(description="share link token")) -> str:
    return share_token


def create_app(archive: Archive) -> FastAPI:
    settings = archive.settings
    app = FastAPI(
        title="Imaging archive — DICOMweb",
        version="0.1.0",
        description=(
            "QIDO-RS, WADO-RS (instances, metadata, frames, bulk data, rendered, thumbnails) and STOW-RS "
            "per DICOM PS3.18. Every route except /health needs `Authorization: Bearer <token>` "
            "(tokens: `imaging token create`)."
        ),
    )
    app.state.archive = archive

    @app.exception_handler(ArchiveError)
    async def archive_error(request: Request, exc: ArchiveError) -> JSONResponse:
        return JSONResponse({"detail": str(exc) or type(exc).__name__}, status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": "invalid request parameters"}, status_code=400)

    for module in (qido, wado, rendered):
        app.include_router(module.router, prefix=CLINICAL_ROOT)
        app.include_router(module.router, prefix=PROJECT_ROOT, dependencies=[Depends(_project)])
    app.include_router(stow.router, prefix=CLINICAL_ROOT)
    app.include_router(stow.router, prefix=PROJECT_ROOT, dependencies=[Depends(_project)])
    app.include_router(capabilities_router, prefix=CLINICAL_ROOT)
    app.include_router(capabilities_router, prefix=PROJECT_ROOT, dependencies=[Depends(_project)])
    # A share link is a read-only DICOMweb root over the studies it names (like a Kheops album token).
    for module in (qido, wado, rendered):
        app.include_router(module.router, prefix=SHARE_ROOT, dependencies=[Depends(_share_token)])
    from dicomweb.routes import research, shares  # REST: sharing, consent, audit, worklist, projects, cohorts

    app.include_router(shares.router)
    app.include_router(research.router)

    @app.get("/health", tags=["Health"], summary="Liveness and index reachability (no token)")
    def health() -> JSONResponse:
        try:
            with archive.db.read() as session:
                session.execute(text("SELECT 1"))
        except Exception:
            log.exception("health check: index unreachable")
            return JSONResponse({"status": "error", "index": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    app.include_router(viewer.router(settings))

    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Accept", "Content-Type", "Range"],
        expose_headers=["Warning", "Content-Range", "Content-Location", "Content-Type", "Content-Length"],
        allow_credentials=False,
        max_age=600,
    )
    app.add_middleware(SecurityHeaders)
    return app


def _unused(*_: Any) -> None:  # keeps type checkers quiet about re-exported names
    return None
