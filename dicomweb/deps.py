"""Per-request context of the DICOMweb routes: the archive, the partition the URL names, the service root for
URLs in answers, and the caller, who holds the route's permission (imaging.access.http). Every request that
gets a context is noted for the audit trail (dicomweb.auditing).

A share link (`/shares/{token}/dicomweb/...`) is its own credential: read-only, limited to its studies. It is
resolved on a read transaction (an unknown token takes no lock at all), and its use is recorded through the
audit writer's queue, so concurrent share-link readers are never serialised on the index's write lock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from dicomweb import auditing
from imaging.access import Permission, Principal
from imaging.access.http import Require
from imaging.access.principal import Via
from imaging.archive import Archive
from imaging.errors import NotAuthorized, NotFound
from imaging.sharing.links import ShareScope, resolve
from imaging.web import client_address, get_archive, public_root, service_root


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


def _share_scope(archive: Archive, token: str) -> ShareScope | None:
    with archive.db.read() as session:
        return resolve(session, token)


async def _share_context(request: Request, token: str) -> Context:
    archive = get_archive(request)
    scope = await run_in_threadpool(_share_scope, archive, token)
    if scope is None:
        raise NotFound("no such share link, or it expired or was revoked")
    study = request.path_params.get("study")
    if study is not None and not scope.allows(str(study)):
        raise NotFound("no such study")
    principal = Principal("share", via=Via.SHARE, subject=str(scope.link_pk))
    auditing.note(request, user=principal.user, partition=scope.partition, address=client_address(request))
    root = f"{public_root(request)}/shares/{token}/dicomweb"
    return Context(archive, scope.partition, root, principal, scope.study_uids)


class DicomwebAccess(Require):
    """The caller of a DICOMweb route, as a Context: a token holding READ or STORE in the URL's partition,
    or (read-only) a share link."""

    async def __call__(self, request: Request) -> Context:  # type: ignore[override]
        token = request.path_params.get("share_token")
        if token is not None:
            if self.permission is not Permission.READ:
                raise NotAuthorized("share links are read-only")
            return await _share_context(request, str(token))
        caller = await super().__call__(request)
        auditing.note(request, user=caller.user, partition=caller.partition, address=caller.address)
        return Context(
            caller.archive, caller.partition, service_root(request, caller.partition), caller.principal
        )


ReadContext = Annotated[Context, Depends(DicomwebAccess(Permission.READ))]
StoreContext = Annotated[Context, Depends(DicomwebAccess(Permission.STORE))]
