"""The HTTP side of access control: every route of every router (DICOMweb, REST, features) takes its
caller through `Require(permission)`, or declares itself `Public`, and nothing else authenticates.

    @router.get("/api/peers")
    def list_peers(caller: Annotated[Caller, Depends(Require(Permission.MANAGE_SHARING))]) -> ...

Partition-scoped permissions are checked against the URL's partition: `/projects/{project}/...` names a
research project, any other path the clinical partition. Refusals are domain errors (NotAuthenticated → 401
with a WWW-Authenticate challenge, NotAuthorized → 403), turned into responses by the application's one
ArchiveError handler. The dependency objects carry their permission, so a test can walk the route table and
find the permission of every route.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from imaging.access.principal import DEV, PARTITION_SCOPED, Permission, Principal, authorize
from imaging.access.tokens import remembered, verify
from imaging.archive import Archive
from imaging.errors import NotAuthenticated, NotFound
from imaging.partition import CLINICAL, is_project_name
from imaging.web import get_archive


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def url_partition(request: Request) -> str:
    """The partition a URL names: `/projects/{project}/...` a research project, else the clinical one."""
    project = request.path_params.get("project")
    if project is None:
        return CLINICAL
    if not is_project_name(str(project)):
        raise NotFound("no such project")
    return str(project)


async def authenticate(request: Request) -> Principal:
    """The request's principal. A token verified moments ago costs no I/O (imaging.access.tokens' cache), so
    only a token to look up in the index takes a worker thread."""
    archive = get_archive(request)
    if archive.settings.dev_mode:
        return DEV
    token = bearer_token(request)
    if token is None:
        raise NotAuthenticated("a bearer token is required")
    principal = remembered(archive.db, token)
    if principal is None:
        principal = await run_in_threadpool(verify, archive.db, token)
    return principal


@dataclass(frozen=True)
class Caller:
    archive: Archive
    principal: Principal
    partition: str  # the URL's partition

    @property
    def user(self) -> str:
        return self.principal.user


class Require:
    """Dependency: the authenticated caller, who holds `permission` — in the URL's partition when the
    permission is partition-scoped, unless `url_scoped=False` (the route then checks the partition its body
    names with `authorize`)."""

    def __init__(self, permission: Permission, *, url_scoped: bool = True) -> None:
        self.permission = permission
        self.url_scoped = url_scoped and permission in PARTITION_SCOPED

    async def __call__(self, request: Request) -> Caller:
        partition = url_partition(request)
        principal = await authenticate(request)
        authorize(principal, self.permission, partition if self.url_scoped else None)
        return Caller(get_archive(request), principal, partition)

    def __repr__(self) -> str:
        return f"Require({self.permission.value})"


class Public:
    """Dependency of a route that needs no credential (health); declared, so the route table says so."""

    permission = None

    async def __call__(self) -> None:
        return None


PUBLIC = Public()
