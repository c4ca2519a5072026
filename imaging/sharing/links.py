"""Share links: a bearer token that opens one study, or a fixed set of studies (a cohort snapshot), as a
read-only DICOMweb root — like a Kheops album token. Every link expires (at most
`Settings.share_link_max_days` ahead) and can be revoked; revocation takes effect on the next request.
Only the SHA-256 of the token is stored; the token itself is shown once, at creation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging import audit
from imaging.archive import Archive
from imaging.errors import InvalidRequest, NotFound
from imaging.index.schema import Study, utcnow
from imaging.partition import CLINICAL
from imaging.research.cohorts import manifest
from imaging.sharing.models import ShareLink

TOKEN_PREFIX = "shl_"


@dataclass(frozen=True)
class ShareScope:
    """What a link opens: these studies of this partition, until `expires_at` (UTC, naive)."""

    study_uids: frozenset[str]
    expires_at: dt.datetime
    partition: str = CLINICAL
    link_pk: int = 0

    def allows(self, study_uid: str) -> bool:
        return study_uid in self.study_uids


def expires_in_days(days: float) -> dt.timedelta:
    """A link lifetime from a number of days; InvalidRequest for one that is not a finite number of days
    within a century (what the CLI and the API take, checked before any date arithmetic can overflow)."""
    if not math.isfinite(days) or not 0 < days <= 36500:
        raise InvalidRequest("a share link expires after more than 0 and at most 36500 days")
    return dt.timedelta(days=days)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_link(
    archive: Archive,
    *,
    study_uids: list[str] | None = None,
    cohort: tuple[str, str] | None = None,
    partition: str = CLINICAL,
    expires_in: dt.timedelta = dt.timedelta(days=7),
    created_by: str = "system",
    description: str = "",
) -> tuple[str, ShareLink]:
    """A new link for `study_uids` of `partition`, or for the studies of `cohort` = (project, name) as they
    are now. Returns (token, row); the token is not stored and cannot be shown again."""
    max_days = archive.settings.share_link_max_days
    if expires_in <= dt.timedelta(0) or expires_in > dt.timedelta(days=max_days):
        raise InvalidRequest(f"a share link expires after more than 0 and at most {max_days} days")
    cohort_name = ""
    if cohort is not None:
        project, cohort_name = cohort
        partition = project
        uids = sorted({s.StudyInstanceUID for s in manifest(archive, project, cohort_name).series})
    else:
        uids = sorted(set(study_uids or []))
    if not uids:
        raise InvalidRequest("a share link needs at least one study")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with archive.db.write() as session:
        known = set(
            session.scalars(
                select(Study.StudyInstanceUID).where(
                    Study.partition == partition, Study.StudyInstanceUID.in_(uids)
                )
            )
        )
        if missing := len(set(uids) - known):
            raise NotFound(f"{missing} of the studies are not in partition {partition}")
        link = ShareLink(
            token_hash=_hash(token),
            partition=partition,
            study_uids=uids,
            cohort=cohort_name,
            description=description,
            created_by=created_by,
            expires_at=utcnow() + expires_in,
        )
        session.add(link)
        session.flush()
        _audit(session, link, created_by, "created")
    return token, link


def _audit(session: Session, link: ShareLink, user: str, what: str) -> None:
    # PS3.15 A.5.3.11 Security Alert, type 110135 "Object Security Attributes Changed".
    audit.record(
        session,
        audit.AuditEvent.SECURITY_ALERT,
        user=user,
        action="U" if what == "revoked" else "C",
        source=f"share-link:{link.link_pk}",
        partition=link.partition,
        study_uid=link.study_uids[0] if len(link.study_uids) == 1 else "",
        detail=f"110135 Object Security Attributes Changed: share link {link.link_pk} {what} for "
        f"{len(link.study_uids)} studies, expires {link.expires_at.isoformat()}Z",
    )


def resolve(session: Session, token: str, *, now: dt.datetime | None = None) -> ShareScope | None:
    """The scope of a valid link; None when unknown, revoked or expired (the caller answers 401/404)."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    link = session.scalar(select(ShareLink).where(ShareLink.token_hash == _hash(token)))
    if link is None or link.revoked_at is not None or link.expires_at <= (now or utcnow()):
        return None
    return ShareScope(frozenset(link.study_uids), link.expires_at, link.partition, link.link_pk)


def revoke(session: Session, link_pk: int, *, user: str = "system") -> bool:
    """Revoke a link at once; False if it was already revoked."""
    link = session.get(ShareLink, link_pk)
    if link is None:
        raise NotFound("no such share link")
    if link.revoked_at is not None:
        return False
    link.revoked_at = utcnow()
    _audit(session, link, user, "revoked")
    return True


def list_links(session: Session, *, include_inactive: bool = False) -> list[ShareLink]:
    stmt = select(ShareLink).order_by(ShareLink.link_pk)
    if not include_inactive:
        stmt = stmt.where(ShareLink.revoked_at.is_(None), ShareLink.expires_at > utcnow())
    return list(session.scalars(stmt))


def link_info(link: ShareLink) -> dict[str, object]:
    return {
        "id": link.link_pk,
        "partition": link.partition,
        "study_uids": list(link.study_uids),
        "cohort": link.cohort,
        "description": link.description,
        "created_by": link.created_by,
        "created_at": link.created_at.isoformat() + "Z",
        "expires_at": link.expires_at.isoformat() + "Z",
        "revoked_at": link.revoked_at.isoformat() + "Z" if link.revoked_at else None,
    }


def record_access(
    session: Session, scope: ShareScope, study_uid: str, *, what: str, client: str = "", query: bool = False
) -> None:
    """Audit a request made with a link (for the `/shares/{token}/dicomweb` routes): 110112 for a query,
    110103 for a retrieval. Never the token itself."""
    audit.record(
        session,
        audit.AuditEvent.QUERY if query else audit.AuditEvent.INSTANCES_ACCESSED,
        user=f"share-link:{scope.link_pk}",
        action="E" if query else "R",
        source=client,
        partition=scope.partition,
        study_uid=study_uid,
        detail=what[:4000],
    )
