"""The HTTP side of access control: every route of every router (DICOMweb, REST, features) takes its
caller through `Require(permission)`, or declares itself `PUBLIC`, and nothing else authenticates.

    @router.get("/api/peers")
    def list_peers(caller: Annotated[Caller, Depends(Require(Permission.MANAGE_SHARING))]) -> ...

Credentials, in this order:
* `Authorization: Bearer <token>`: a JWT access token from the hospital's OpenID Provider (when
  `oidc_issuer` is set; imaging.access.oidc), else an API token (imaging.access.tokens);
* the browser session cookie set by a login (dicomweb.login): it holds the same kind of token, HttpOnly,
  never in a URL. A request authenticated by the cookie that changes something (any method but GET, HEAD,
  OPTIONS) must come from this server's own pages (its Origin), so another site cannot ride the cookie;
* development mode: no credential, every request is admin (the server warns at start-up).

Partition-scoped permissions are checked against the URL's partition: `/projects/{project}/...` names a
research project, any other path the clinical partition. Refusals are domain errors (NotAuthenticated → 401
with a WWW-Authenticate challenge, NotAuthorized → 403), turned into responses by the application's one
ArchiveError handler. A refused credential is audited (User Authentication, failure; at most one record per
client address a minute). The dependency objects carry their permission, so a test can walk the route
table and find the permission of every route.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from imaging import audit
from imaging.access.oidc import OpenIDProvider, looks_like_jwt
from imaging.access.principal import DEV, PARTITION_SCOPED, Permission, Principal, authorize
from imaging.access.tokens import remembered, verify
from imaging.archive import Archive
from imaging.errors import NotAuthenticated, NotAuthorized, NotFound
from imaging.partition import CLINICAL, is_project_name
from imaging.web import audit_writer, client_address, get_archive, public_root

SESSION_COOKIE = "imaging_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FAILURE_AUDIT_INTERVAL = 60.0


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


def identity_provider(request: Request) -> OpenIDProvider | None:
    provider: OpenIDProvider | None = getattr(request.app.state, "oidc", None)
    return provider


async def principal_of(request: Request, token: str) -> Principal:
    """The principal a token stands for: a JWT from the OpenID Provider, or an API token. A token verified
    moments ago costs no I/O; anything else (index lookup, JWKS fetch) runs on a worker thread."""
    archive = get_archive(request)
    provider = identity_provider(request)
    if provider is not None and looks_like_jwt(token):
        principal = provider.remembered(token)
        return principal if principal is not None else await run_in_threadpool(provider.verify, token)
    principal = remembered(archive.db, token)
    return principal if principal is not None else await run_in_threadpool(verify, archive.db, token)


def own_origin(request: Request) -> str:
    """This server's origin (scheme://host[:port]) as its clients reach it."""
    scheme, _, rest = public_root(request).partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _check_same_origin(request: Request) -> None:
    """A cookie-authenticated request that changes something must come from this server's own pages."""
    if request.method in SAFE_METHODS:
        return
    if request.headers.get("origin", "").rstrip("/") != own_origin(request):
        raise NotAuthorized("a request with the session cookie must come from this server's pages")


async def authenticate(request: Request) -> Principal:
    """The request's principal (see the module docstring)."""
    if get_archive(request).settings.dev_mode:
        return DEV
    token = bearer_token(request)
    from_cookie = token is None
    if token is None:
        token = request.cookies.get(SESSION_COOKIE)
    if token is None:
        raise NotAuthenticated("a bearer token is required")
    try:
        principal = await principal_of(request, token)
    except NotAuthenticated as refused:
        _audit_failure(request, str(refused))
        raise
    if from_cookie:
        _check_same_origin(request)
    return principal


def _audit_failure(request: Request, reason: str) -> None:
    # Per application: client address -> when its last refused credential was recorded.
    recorded: dict[str, float] | None = getattr(request.app.state, "auth_failures", None)
    if recorded is None:
        recorded = request.app.state.auth_failures = {}
    address = client_address(request)
    now = time.monotonic()
    if now - recorded.get(address, -_FAILURE_AUDIT_INTERVAL) < _FAILURE_AUDIT_INTERVAL:
        return
    if len(recorded) > 10000:
        recorded.clear()
    recorded[address] = now
    audit_writer(request).submit(
        audit.AuditEvent.USER_AUTHENTICATION,
        user="unknown",
        action="E",
        outcome=audit.Outcome.MINOR_FAILURE,
        event_type="110122",
        access_point=address,
        detail=f"110122 Login refused: {reason} ({request.method} {request.url.path[:200]})",
    )


@dataclass(frozen=True)
class Caller:
    archive: Archive
    principal: Principal
    partition: str  # the URL's partition
    address: str = ""  # the client's network address (behind trusted proxies, the one they forwarded)

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
        return Caller(get_archive(request), principal, partition, client_address(request))

    def __repr__(self) -> str:
        return f"Require({self.permission.value})"


class Public:
    """Dependency of a route that needs no credential (health, login, the viewer's static files);
    declared, so the route table says so."""

    permission = None

    async def __call__(self) -> None:
        return None


PUBLIC = Public()
