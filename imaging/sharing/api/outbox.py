"""`/api/shares` and `/api/outbox`: queue a stable clinical study for peers now, see deliveries per peer and
study, re-arm failed ones."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from imaging.access import Permission
from imaging.access.http import Caller, Require
from imaging.sharing import outbox

router = APIRouter(prefix="/api", tags=["Sharing: outbox"])
Sharer = Annotated[Caller, Depends(Require(Permission.SHARE))]


class ShareIn(BaseModel):
    study_uid: str = Field(pattern=r"^[0-9.]{1,64}$")
    peers: list[str] = Field(min_length=1)
    project: str = ""
    identified: bool = False


@router.post("/shares", status_code=202, summary="Share a stable clinical study with peers now")
def share(body: ShareIn, caller: Sharer) -> dict[str, Any]:
    queued = outbox.share_study(
        caller.archive,
        body.study_uid,
        body.peers,
        project=body.project,
        identified=body.identified,
        user=caller.user,
    )
    return {"queued": queued}


@router.get("/outbox", summary="Delivery status per peer and study")
def outbox_status(
    caller: Sharer,
    peer: str | None = None,
    study_uid: str | None = None,
    status: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
) -> dict[str, Any]:
    with caller.archive.db.read() as session:
        summary = outbox.summary(session)
        groups = outbox.groups(session, peer=peer, study_uid=study_uid, status=status, limit=limit)
    return {
        "summary": summary,
        "deliveries": [
            {
                "peer": g.peer,
                "project": g.project,
                "StudyInstanceUID": g.StudyInstanceUID,
                "peer_StudyInstanceUID": g.peer_StudyInstanceUID,
                "counts": g.counts,
                "last_error": g.last_error,
                "attempts": g.attempts,
                "next_attempt_at": g.next_attempt_at.isoformat() + "Z" if g.next_attempt_at else None,
                "updated_at": g.updated_at.isoformat() + "Z" if g.updated_at else None,
            }
            for g in groups
        ],
    }


class RetryIn(BaseModel):
    peer: str | None = None
    study_uid: str | None = None


@router.post("/outbox/retry", summary="Re-arm failed deliveries")
def outbox_retry(
    body: RetryIn, caller: Annotated[Caller, Depends(Require(Permission.MANAGE_SHARING))]
) -> dict[str, int]:
    with caller.archive.db.write() as session:
        return {"rearmed": outbox.retry(session, peer=body.peer, study_uid=body.study_uid)}
