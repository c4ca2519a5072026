"""Per-request context of the DICOMweb routes: the archive, the partition the URL names, the service root for
URLs in answers, and the caller, who holds the route's permission (imaging.access.http).

A share link (`/shares/{token}/dicomweb/...`) is its own credential: read-only, limited to its studies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from imaging.access import Permission, Principal
from imaging.access.http import Require
from imaging.archive import Archive
from imaging.errors import NotAuthorized, NotFound
from imaging.sharing.links import record_access, resolve
from imaging.web import get_archive, public_root, service_root


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


def _share_context(request: Request, token: str) -> Context:
    archive = get_archive(request)
    with archive.db.write() as session:
        scope = resolve(session, token)
        if scope is None:
            raise NotFound("no such share link, or it expired or was revoked")
        study = request.path_params.get("study")
        if study is not None and not scope.allows(str(study)):
            raise NotFound("no such study")
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


class DicomwebAccess(Require):
    """The caller of a DICOMweb route, as a Context: a token holding READ or STORE in the URL's partition,
    or (read-only) a share link."""

    async def __call__(self, request: Request) -> Context:  # type: ignore[override]
        token = request.path_params.get("share_token")
        if token is not None:
            if self.permission is not Permission.READ:
                raise NotAuthorized("share links are read-only")
            return await run_in_threadpool(_share_context, request, str(token))
        caller = await super().__call__(request)
        return Context(
            caller.archive, caller.partition, service_root(request, caller.partition), caller.principal
        )


ReadContext = Annotated[Context, Depends(DicomwebAccess(Permission.READ))]
StoreContext = Annotated[Context, Depends(DicomwebAccess(Permission.STORE))]
