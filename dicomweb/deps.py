"""Per-request context: the archive, the partition the URL names, the service root for URLs in answers,
and the authenticated principal (checked for the action)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import HTTPException, Request
from starlette.concurrency import run_in_threadpool

from dicomweb.auth import Action, Principal, authenticate, authorize, cached_principal
from imaging.archive import Archive
from imaging.index.schema import CLINICAL

_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_HOST = re.compile(r"^[A-Za-z0-9.\-_\[\]:]{1,255}$")


@dataclass(frozen=True)
class Context:
    archive: Archive
    partition: str
    root: str  # service root URL, e.g. https://host/dicomweb or https://host/projects/p/dicomweb
    principal: Principal
    # A share link's scope: only these studies answer (None: the whole partition).
    studies: frozenset[str] | None = None

    def study_url(self, study: str) -> str:
        return f"{self.root}/studies/{study}"

    def series_url(self, study: str, series: str) -> str:
        return f"{self.root}/studies/{study}/series/{series}"

    def instance_url(self, study: str, series: str, sop: str) -> str:
        return f"{self.root}/studies/{study}/series/{series}/instances/{sop}"


def get_archive(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive


def partition_of(request: Request) -> str:
    project = request.path_params.get("project")
    if project is None:
        return CLINICAL
    if not _PROJECT.match(project) or project == CLINICAL:
        raise HTTPException(404, "no such project")
    return str(project)


def _forwarded(request: Request) -> tuple[str | None, str | None]:
    """(proto, host) from RFC 7239 Forwarded (first hop) or X-Forwarded-*."""
    proto = host = None
    forwarded = request.headers.get("forwarded")
    if forwarded:
        first = forwarded.split(",")[0]
        for pair in first.split(";"):
            name, _, value = pair.strip().partition("=")
            value = value.strip().strip('"')
            if name.lower() == "proto":
                proto = value
            elif name.lower() == "host":
                host = value
    proto = proto or request.headers.get("x-forwarded-proto", "").split(",")[0].strip() or None
    host = host or request.headers.get("x-forwarded-host", "").split(",")[0].strip() or None
    return proto, host


def public_root(request: Request) -> str:
    """Scheme://host[/prefix] this server is reached at: Settings.public_url, else Forwarded/Host."""
    configured = get_archive(request).settings.public_url
    if configured:
        return configured.rstrip("/")
    proto, host = _forwarded(request)
    proto = proto if proto in ("http", "https") else request.url.scheme
    host = host or request.headers.get("host") or request.url.netloc
    if not _HOST.match(host):
        host = request.url.netloc
    return f"{proto}://{host}{request.scope.get('root_path', '').rstrip('/')}"


def service_root(request: Request, partition: str) -> str:
    base = public_root(request)
    if partition == CLINICAL:
        return f"{base}/dicomweb"
    return f"{base}/projects/{partition}/dicomweb"


def _share_context(request: Request, token: str, action: Action) -> Context:
    """`/shares/{token}/dicomweb/...`: the link is the credential; read-only, limited to its studies."""
    from imaging.sharing.links import record_access, resolve

    archive = get_archive(request)
    if action is not Action.READ:
        raise HTTPException(403, "share links are read-only")
    with archive.db.write() as session:
        scope = resolve(session, token)
        if scope is None:
            raise HTTPException(404, "no such share link, or it expired or was revoked")
        study = request.path_params.get("study")
        if study is not None and not scope.allows(str(study)):
            raise HTTPException(404, "no such study")
        record_access(
            session,
            scope,
            str(study or ""),
            what=f"{request.method} {request.url.path.split('/dicomweb', 1)[-1]}",
            client=request.client.host if request.client else "",
            query=study is None or request.url.path.endswith(("/series", "/instances")),
        )
    root = f"{public_root(request)}/shares/{token}/dicomweb"
    return Context(archive, scope.partition, root, Principal("share"), scope.study_uids)


async def _context(request: Request, action: Action) -> Context:
    """Runs on the event loop: a token verified moments ago needs no I/O (dicomweb.auth's cache), so only a
    share link or a token to look up in the index takes a worker thread."""
    token = request.path_params.get("share_token")
    if token is not None:
        return await run_in_threadpool(_share_context, request, str(token), action)
    archive = get_archive(request)
    partition = partition_of(request)
    principal = cached_principal(archive, request)
    if principal is None:
        principal = await run_in_threadpool(authenticate, archive, request)
    authorize(principal, partition, action)
    return Context(archive, partition, service_root(request, partition), principal)


async def reader(request: Request) -> Context:
    return await _context(request, Action.READ)


async def storer(request: Request) -> Context:
    return await _context(request, Action.STORE)
