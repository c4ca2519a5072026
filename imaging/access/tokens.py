"""API bearer tokens: created at random, stored as SHA-256 only, verified to a Principal.

A verified token is remembered by the process for TOKEN_CACHE_SECONDS (per index database): a viewer sends
dozens of requests a second and each would otherwise cost an index round trip before any work. Expiry is
still checked on every request; a token revoked in the database (or its role changed) stops working in a
running server within TOKEN_CACHE_SECONDS. Unknown, revoked and expired tokens are never remembered.
The CLI and the admin API create tokens through the same function, so both validate alike.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
import weakref

from sqlalchemy import bindparam, select

from imaging.access.principal import ROLES, Principal, Role
from imaging.errors import InvalidRequest, NotAuthenticated
from imaging.index.db import Database
from imaging.index.schema import ApiToken, utcnow

__all__ = ["ROLES", "TOKEN_CACHE_SECONDS", "create_token", "forget_tokens", "verify"]

_T = ApiToken.__table__
_TOKEN_LOOKUP = select(_T.c.token_pk, _T.c.role, _T.c.project, _T.c.expires_at, _T.c.revoked).where(
    _T.c.token_hash == bindparam("digest")
)

TOKEN_CACHE_SECONDS = 2.0
_CACHE_SIZE = 1024
_clock = time.monotonic
# Per index database: token digest -> (monotonic time verified, principal, expires_at).
_verified: weakref.WeakKeyDictionary[Database, dict[str, tuple[float, Principal, dt.datetime | None]]] = (
    weakref.WeakKeyDictionary()
)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def create_token(
    db: Database,
    *,
    role: str,
    project: str = "",
    description: str = "",
    expires_at: dt.datetime | None = None,
) -> str:
    """A new token (returned once, never stored); only its hash goes to the index."""
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}")
    if role == Role.RESEARCHER and not project:
        raise InvalidRequest("a researcher token needs a project")
    token = secrets.token_urlsafe(32)
    with db.write() as session:
        session.add(
            ApiToken(
                token_hash=digest(token),
                role=role,
                project=project,
                description=description,
                expires_at=expires_at,
            )
        )
    return token


def remembered(db: Database, token: str) -> Principal | None:
    """The token's principal when it was verified less than TOKEN_CACHE_SECONDS ago, else None (then
    `verify` asks the index). No I/O: callable on an event loop."""
    entry = _verified.get(db, {}).get(digest(token))
    if entry is None or _clock() - entry[0] > TOKEN_CACHE_SECONDS:
        return None
    if is_expired(entry[2]):
        raise NotAuthenticated("token expired")
    return entry[1]


def verify(db: Database, token: str) -> Principal:
    """The token's principal; NotAuthenticated for an unknown, revoked or expired token."""
    principal = remembered(db, token)
    if principal is not None:
        return principal
    key = digest(token)
    with db.read() as session:
        # One indexed lookup (unique hash), without building an ORM object.
        row = session.connection().execute(_TOKEN_LOOKUP, {"digest": key}).first()
    if row is None or row.revoked:
        raise NotAuthenticated("invalid or revoked token")
    if is_expired(row.expires_at):
        raise NotAuthenticated("token expired")
    principal = Principal(row.role, row.project or "", row.token_pk)
    verified = _verified.setdefault(db, {})
    if len(verified) >= _CACHE_SIZE:
        verified.clear()
    verified[key] = (_clock(), principal, row.expires_at)
    return principal


def forget_tokens() -> None:
    """Drop every remembered token verification (e.g. after revoking tokens in this process)."""
    _verified.clear()


def is_expired(expires_at: dt.datetime | None) -> bool:
    return expires_at is not None and expires_at <= utcnow()
