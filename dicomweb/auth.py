"""Bearer tokens → principals, and what each role may do.

Tokens are looked up by SHA-256 in the ApiToken table (revoked or expired tokens are refused). Roles:
* `admin`: everything, every partition;
* `clinician`: read and store in the clinical partition;
* `ingest`: store only (clinical partition and project STOW roots), no read;
* `researcher`: read their own project's partition (`/projects/{project}/dicomweb`) and nothing else.
`dev_mode` opens everything (as admin). Health needs no token.

A verified token is remembered by the process for TOKEN_CACHE_SECONDS (per index database): a viewer sends
dozens of requests a second and each would otherwise cost an index round trip before any work. Expiry is
still checked on every request; a token revoked in the database (or its role changed) stops working in a
running server within TOKEN_CACHE_SECONDS. Unknown, revoked and expired tokens are never remembered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import weakref
from dataclasses import dataclass
from enum import StrEnum

from fastapi import HTTPException, Request
from sqlalchemy import bindparam, select

from imaging.archive import Archive
from imaging.index.db import Database
from imaging.index.schema import CLINICAL, ApiToken, utcnow


class Action(StrEnum):
    READ = "read"
    STORE = "store"


@dataclass(frozen=True)
class Principal:
    role: str
    project: str = ""
    token_pk: int | None = None


DEV = Principal("admin")
_T = ApiToken.__table__
_TOKEN_LOOKUP = select(_T.c.token_pk, _T.c.role, _T.c.project, _T.c.expires_at, _T.c.revoked).where(
    _T.c.token_hash == bindparam("digest")
)
_PERMISSIONS: dict[str, set[Action]] = {
    "admin": {Action.READ, Action.STORE},
    "clinician": {Action.READ, Action.STORE},
    "ingest": {Action.STORE},
    "researcher": {Action.READ},
}


TOKEN_CACHE_SECONDS = 2.0
_CACHE_SIZE = 1024
_clock = time.monotonic
# Per index database: token digest -> (monotonic time verified, principal, expires_at).
_verified: weakref.WeakKeyDictionary[Database, dict[str, tuple[float, Principal, dt.datetime | None]]] = (
    weakref.WeakKeyDictionary()
)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": 'Bearer realm="dicomweb"'})


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _digest(request: Request) -> str:
    token = bearer_token(request)
    if token is None:
        raise _unauthorized("a bearer token is required")
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def cached_principal(archive: Archive, request: Request) -> Principal | None:
    """The principal of the request's token when it was verified less than TOKEN_CACHE_SECONDS ago, else
    None (then `authenticate` asks the index). No I/O: callable on the event loop."""
    if archive.settings.dev_mode:
        return DEV
    entry = _verified.get(archive.db, {}).get(_digest(request))
    if entry is None or _clock() - entry[0] > TOKEN_CACHE_SECONDS:
        return None
    if is_expired(entry[2]):
        raise _unauthorized("token expired")
    return entry[1]


def authenticate(archive: Archive, request: Request) -> Principal:
    principal = cached_principal(archive, request)
    if principal is not None:
        return principal
    digest = _digest(request)
    with archive.db.read() as session:
        row = (
            session.connection()
            .execute(_TOKEN_LOOKUP, {"digest": digest})
            .first()  # one indexed lookup (unique hash), without building an ORM object
        )
    if row is None or row.revoked:
        raise _unauthorized("invalid or revoked token")
    if is_expired(row.expires_at):
        raise _unauthorized("token expired")
    principal = Principal(row.role, row.project or "", row.token_pk)
    verified = _verified.setdefault(archive.db, {})
    if len(verified) >= _CACHE_SIZE:
        verified.clear()
    verified[digest] = (_clock(), principal, row.expires_at)
    return principal


def forget_tokens() -> None:
    """Drop every remembered token verification (e.g. after revoking tokens in this process)."""
    _verified.clear()


def authorize(principal: Principal, partition: str, action: Action) -> None:
    allowed = _PERMISSIONS.get(principal.role, set())
    if action not in allowed:
        raise HTTPException(403, f"role {principal.role} may not {action} here")
    if principal.role == "researcher" and (partition == CLINICAL or partition != principal.project):
        raise HTTPException(403, "this token opens only its own research project")
    if principal.role == "clinician" and partition != CLINICAL:
        raise HTTPException(403, "research projects are open to their researchers only")


def is_expired(expires_at: dt.datetime | None) -> bool:
    return expires_at is not None and expires_at <= utcnow()
