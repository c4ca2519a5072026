"""API bearer tokens (machine tokens for PACS and scripts): created at random, stored as SHA-256 only,
verified to a Principal, listed and revoked — by `imaging token ...` and `/api/tokens` alike, through the
functions here, which validate and audit (PS3.15 A.5.3.11 Security Alert, 110137 User Security Attributes
Changed).

A token names what it opens when it is created, and that is checked then and on every use:
* a researcher token needs an existing research project, never the clinical partition;
* a token opens a project only if the project existed when the token was made: a project created later
  under that name (or deleted and created again) does not silently open to an old token.
Every token expires (at most MAX_DAYS ahead) unless `never` is chosen explicitly at creation.

A verified token is remembered by the process for TOKEN_CACHE_SECONDS (per index database): a viewer sends
dozens of requests a second and each would otherwise cost an index round trip before any work. Expiry is
still checked on every request; a token revoked by another process stops working within
TOKEN_CACHE_SECONDS (at once in the process that revoked it). Unknown, revoked and expired tokens are never
remembered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import time
import weakref
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from imaging import audit
from imaging.access.principal import ROLES, Principal, Role, Via
from imaging.errors import InvalidRequest, NotAuthenticated, NotFound
from imaging.index.db import Database
from imaging.index.schema import ApiToken, utcnow
from imaging.ingest.partitions import Project
from imaging.partition import is_project_name

__all__ = [
    "MAX_DAYS",
    "ROLES",
    "TOKEN_CACHE_SECONDS",
    "create_token",
    "forget_tokens",
    "list_tokens",
    "parse_expiry",
    "revoke_token",
    "token_info",
    "verify",
]

_T = ApiToken.__table__
_P = Project.__table__
# One indexed lookup (unique hash) with the token's project, if any, and when that project was created.
_TOKEN_LOOKUP = (
    select(
        _T.c.token_pk,
        _T.c.role,
        _T.c.project,
        _T.c.created_at,
        _T.c.expires_at,
        _T.c.revoked,
        _P.c.created_at.label("project_created_at"),
    )
    .select_from(_T.outerjoin(_P, _P.c.name == _T.c.project))
    .where(_T.c.token_hash == bindparam("digest"))
)

TOKEN_CACHE_SECONDS = 2.0
MAX_DAYS = 3650  # ten years: the furthest expiry a token may have (besides `never`)
_CACHE_SIZE = 1024
_clock = time.monotonic
# Per index database: token digest -> (monotonic time verified, principal, expires_at).
_verified: weakref.WeakKeyDictionary[Database, dict[str, tuple[float, Principal, dt.datetime | None]]] = (
    weakref.WeakKeyDictionary()
)
_DURATION = re.compile(r"^(\d{1,6})\s*([dhm])$")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def parse_expiry(text: str, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """An expiry from `90d`, `12h`, `30m`, an ISO date or date-time (UTC), or `never` (None)."""
    now = now or utcnow()
    value = text.strip().lower()
    if value == "never":
        return None
    if match := _DURATION.match(value):
        amount, unit = int(match.group(1)), match.group(2)
        delta = {"d": dt.timedelta(days=amount), "h": dt.timedelta(hours=amount)}.get(
            unit, dt.timedelta(minutes=amount)
        )
        if delta > dt.timedelta(days=MAX_DAYS):
            raise InvalidRequest(f"a token expires at most {MAX_DAYS} days ahead (or never)")
        return now + delta
    try:
        when = dt.datetime.fromisoformat(value.upper() if "t" in value else value)
    except ValueError:
        raise InvalidRequest("expiry: a duration (90d, 12h, 30m), an ISO date, or never") from None
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return when


def create_token(
    db: Database,
    *,
    role: str,
    project: str = "",
    description: str = "",
    expires_at: dt.datetime | None = None,
    created_by: str = "system",
) -> tuple[str, ApiToken]:
    """A new token (returned once, never stored) and its row; only its hash goes to the index."""
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}")
    if role == Role.RESEARCHER and not project:
        raise InvalidRequest("a researcher token needs a project")
    if project and role != Role.RESEARCHER:
        raise InvalidRequest("only researcher tokens name a project")
    if project and not is_project_name(project):
        raise InvalidRequest("a researcher token opens a research project, never the clinical partition")
    if len(description) > 256:
        raise InvalidRequest("description: at most 256 characters")
    now = utcnow()
    if expires_at is not None and not now < expires_at <= now + dt.timedelta(days=MAX_DAYS):
        raise InvalidRequest(f"a token expires in the future, at most {MAX_DAYS} days ahead (or never)")
    token = secrets.token_urlsafe(32)
    with db.write() as session:
        if project and session.scalar(select(Project.project_pk).where(Project.name == project)) is None:
            raise InvalidRequest("no such research project: create the project first")
        row = ApiToken(
            token_hash=digest(token),
            role=role,
            project=project,
            description=description,
            created_at=now,
            expires_at=expires_at,
            created_by=created_by,
        )
        session.add(row)
        session.flush()
        _audit(session, row, created_by, "created")
    return token, row


def list_tokens(session: Session, *, include_inactive: bool = False) -> list[ApiToken]:
    """Tokens in order of creation; by default only those still usable (neither revoked nor expired)."""
    stmt = select(ApiToken).order_by(ApiToken.token_pk)
    if not include_inactive:
        stmt = stmt.where(
            ApiToken.revoked.is_(False),
            (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > utcnow()),
        )
    return list(session.scalars(stmt))


def revoke_token(db: Database, token_pk: int, *, user: str = "system") -> bool:
    """Revoke a token at once (in this process; within TOKEN_CACHE_SECONDS in others). False when it was
    already revoked; NotFound for an unknown id."""
    with db.write() as session:
        row = session.get(ApiToken, token_pk)
        if row is None:
            raise NotFound("no such token")
        if row.revoked:
            return False
        row.revoked = True
        row.revoked_at = utcnow()
        _audit(session, row, user, "revoked")
    forget_tokens()
    return True


def token_info(row: ApiToken) -> dict[str, Any]:
    """What the CLI and the API show of a token (never its hash)."""

    def when(value: dt.datetime | None) -> str | None:
        return value.isoformat() + "Z" if value is not None else None

    return {
        "id": row.token_pk,
        "role": row.role,
        "project": row.project,
        "description": row.description,
        "created_by": row.created_by,
        "created_at": when(row.created_at),
        "expires_at": when(row.expires_at),
        "revoked_at": when(row.revoked_at) if row.revoked else None,
        "active": not row.revoked and not is_expired(row.expires_at),
    }


def _audit(session: Session, row: ApiToken, user: str, what: str) -> None:
    audit.record(
        session,
        audit.AuditEvent.SECURITY_ALERT,
        user=user,
        action="U" if what == "revoked" else "C",
        source=f"token:{row.token_pk}",
        partition=row.project,
        detail=f"110137 User Security Attributes Changed: API token {row.token_pk} ({row.role}) {what}"
        + (f", expires {row.expires_at.isoformat()}Z" if row.expires_at and what == "created" else ""),
    )


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
    """The token's principal; NotAuthenticated for an unknown, revoked or expired token, and for a researcher
    token whose project does not exist, or was created after the token."""
    principal = remembered(db, token)
    if principal is not None:
        return principal
    key = digest(token)
    with db.read() as session:
        # Core, not the ORM: no object built on the hot path.
        row = session.connection().execute(_TOKEN_LOOKUP, {"digest": key}).first()
    if row is None or row.revoked:
        raise NotAuthenticated("invalid or revoked token")
    if is_expired(row.expires_at):
        raise NotAuthenticated("token expired")
    if row.project and (row.project_created_at is None or row.project_created_at > row.created_at):
        raise NotAuthenticated("the token's research project does not exist (any more)")
    projects = frozenset({row.project}) if row.project else frozenset()
    principal = Principal(row.role, projects, row.token_pk, Via.TOKEN)
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
