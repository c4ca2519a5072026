"""The HTTP application: `create_app(archive)`.

Service roots: `/dicomweb` (the clinical partition), `/projects/{project}/dicomweb` (a research project's
partition; the project name is the partition name) and `/shares/{token}/dicomweb` (a share link: read-only,
its studies only). Beside them the REST resources of the archive (consent, audit) and of every feature, as
the composition root (imaging.app) declares them; `/health`, `/health/live` and `/metrics` (no token),
`/viewer` (OHIF, when fetched), `/ui` (the web interface, dicomweb.ui), `/login` (browser login: OpenID
Connect code flow with PKCE, or an API token in a form), `/docs` and `/openapi.json`.

Every domain error (imaging.errors.ArchiveError) becomes its HTTP status here, in one handler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomweb import login, ui, viewer
from dicomweb.auditing import AuditMiddleware
from dicomweb.routes import audit, capabilities, consent, health, qido, rendered, stow, tokens, wado
from dicomweb.ui import errors as ui_errors
from dicomweb.ui import render as ui_render
from imaging import app as composition
from imaging.access.oidc import OpenIDProvider
from imaging.archive import Archive
from imaging.audit import AuditWriter
from imaging.errors import ArchiveError
from imaging.metrics import HTTP_LATENCY
from imaging.observability.collectors import ArchiveCollector
from imaging.observability.health import Readiness

log = logging.getLogger(__name__)

CLINICAL_ROOT = "/dicomweb"
PROJECT_ROOT = "/projects/{project}/dicomweb"
SHARE_ROOT = "/shares/{share_token}/dicomweb"
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="dicomweb"'}


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


async def archive_error(request: Request, exc: Exception) -> Response:
    """The one place a domain error becomes an HTTP answer (its message never holds PHI); the web pages
    get it as HTML when the browser asks for HTML (dicomweb.ui.errors)."""
    assert isinstance(exc, ArchiveError)
    if _ui_page(request):
        return ui_errors.html_error(request, exc.http_status, str(exc) or type(exc).__name__)
    headers = dict(getattr(exc, "headers", {}))
    if exc.http_status == 401:
        headers.update(BEARER_CHALLENGE)
    return JSONResponse(
        {"detail": str(exc) or type(exc).__name__}, status_code=exc.http_status, headers=headers or None
    )


async def invalid_request(request: Request, exc: Exception) -> Response:
    if _ui_page(request):
        return ui_errors.html_error(
            request, 400, "Some of what was sent is not valid; check the form and try again."
        )
    return JSONResponse({"detail": "invalid request parameters"}, status_code=400)


class Timing:
    """Latency of every HTTP request, by the route it matched (its template: no identifiers), method and
    status, into imaging_http_request_duration_seconds."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            HTTP_LATENCY.labels(route_template(scope), scope.get("method", ""), str(status[0])).observe(
                time.perf_counter() - started
            )


def route_template(scope: Scope) -> str:
    """The template of the route a request matched, prefix included ("/projects/{project}/dicomweb/studies"):
    a bounded label, never the identifiers in the path. The route in the scope may carry its path without
    the prefix of the router it was included with; the prefix is recovered from the request path, its
    parameter values put back as their names."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return "unmatched"
    params = {str(k): str(v) for k, v in (scope.get("path_params") or {}).items()}
    try:
        suffix = template.format(**params)
    except (KeyError, IndexError, ValueError):
        return template
    path = str(scope.get("path", ""))
    if not path.endswith(suffix):
        return template
    names = {value: name for name, value in params.items() if "{" + name + "}" not in template}
    prefix = "/".join(
        "{" + names[s] + "}" if s in names else s for s in path[: len(path) - len(suffix)].split("/")
    )
    return prefix + template


def _ui_page(request: Request) -> bool:
    return request.url.path.startswith(ui_render.BASE + "/") and ui_errors.wants_html(request)


def create_app(archive: Archive, readiness: Readiness | None = None) -> FastAPI:
    """`readiness`: the components to report at /health (imaging serve adds the DICOM listener, the
    workers and the broker); by default the index, the storage and what live workers report."""
    settings = archive.settings
    if settings.dev_mode:
        log.warning(
            "DEVELOPMENT MODE: every HTTP request is treated as admin, without a token. "
            "Never expose this server; never use it with real patient data."
        )
    audit_writer = AuditWriter(archive.db.write)
    provider = OpenIDProvider(settings) if settings.oidc_issuer else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        audit_writer.close()
        if provider is not None:
            provider.close()

    app = FastAPI(
        lifespan=lifespan,
        title="Imaging archive — DICOMweb",
        version="0.1.0",
        description=(
            "QIDO-RS, WADO-RS (instances, metadata, frames, bulk data, rendered, thumbnails) and STOW-RS "
            "per DICOM PS3.18. Every route except /health and the login needs `Authorization: Bearer "
            "<token>` (an API token from `imaging token create`, or an access token from the hospital's "
            "OpenID Provider) or the session cookie of a browser login."
        ),
    )
    app.state.archive = archive
    app.state.audit = audit_writer  # queued audit records of the hot paths (imaging.audit.writer)
    app.state.oidc = provider
    app.state.readiness = readiness or Readiness(archive)
    app.state.metrics = ArchiveCollector(archive, composition.metrics())
    app.add_exception_handler(ArchiveError, archive_error)
    app.add_exception_handler(RequestValidationError, invalid_request)

    for module in (qido, wado, rendered, stow, capabilities):
        app.include_router(module.router, prefix=CLINICAL_ROOT)
        app.include_router(module.router, prefix=PROJECT_ROOT)
    # A share link is a read-only DICOMweb root over the studies it names (like a Kheops album token).
    for module in (qido, wado, rendered):
        app.include_router(module.router, prefix=SHARE_ROOT)
    for module in (consent, audit, health, tokens):
        app.include_router(module.router)
    app.include_router(login.router())
    for router in composition.routers():
        app.include_router(router)
    app.include_router(viewer.router(settings))
    app.include_router(ui.router())

    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Accept", "Content-Type", "Range"],
        expose_headers=["Warning", "Content-Range", "Content-Location", "Content-Type", "Content-Length"],
        allow_credentials=False,
        max_age=600,
    )
    app.add_middleware(AuditMiddleware)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(Timing)
    return app
