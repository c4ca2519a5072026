"""Access requests at the requesting site: sent to a holding site on behalf of one of our research
projects, with the project's key check and profile signature (never the key), followed until delivered.

A request is stored before it is sent, under a fresh UUID that the holding site keys it by: a send whose
answer was lost is simply sent again (`refresh`), and the holding site recognises it. Its status is what
the holding site last said (pending, approved with the delivery's progress, rejected with a reason).
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging import audit
from imaging.archive import Archive
from imaging.errors import NotFound
from imaging.federation.client import call
from imaging.federation.criteria import CohortDefinition
from imaging.federation.keys import key_check
from imaging.federation.models import FederationPeer, OutgoingRequest, RequestStatus
from imaging.federation.peers import get_peer
from imaging.federation.permits import project_profile
from imaging.index.schema import utcnow
from imaging.ingest.partitions import get_project
from imaging.sharing.peers import PeerError


class RemoteDelivery(BaseModel):
    """A holding site's delivery report: numbers and a state, nothing else."""

    model_config = ConfigDict(extra="ignore")
    studies: int = Field(default=0, ge=0)
    instances: dict[Annotated[str, Field(max_length=16)], Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, max_length=16
    )
    state: str = Field(default="", max_length=16)


class RemoteStatus(BaseModel):
    """A holding site's answer about one request, as we accept it."""

    model_config = ConfigDict(extra="ignore")
    request_uid: str = Field(max_length=64)
    status: str = Field(pattern=r"^(pending|approved|rejected)$")
    reason: str = Field(default="", max_length=512)
    delivery: RemoteDelivery = Field(default_factory=RemoteDelivery)


def send(
    archive: Archive,
    peer_name: str,
    project: str,
    cohort: CohortDefinition,
    *,
    purpose: str = "",
    user: str = "system",
) -> dict[str, Any]:
    """Record and send an access request for `project` to the holding site `peer_name`."""
    with archive.db.read() as session:
        get_peer(session, peer_name)
        get_project(session, project)
    request_uid = str(uuid.uuid4())

    def work(session: Session) -> None:
        session.add(
            OutgoingRequest(
                request_uid=request_uid,
                peer=peer_name,
                project=project,
                definition=json.loads(cohort.canonical()),
                purpose=purpose[:4000],
                requested_by=user[:128],
                status=RequestStatus.UNSENT.value,
                reason="",
                delivery={},
                last_error="",
            )
        )
        audit.record(
            session,
            audit.AuditEvent.QUERY,
            user=user[:128],
            action="E",
            source=f"federation-peer:{peer_name}",
            partition=project,
            detail=f"access request {request_uid} for project {project} to {peer_name}: {cohort.canonical()}",
        )

    archive.db.transaction(work)
    return refresh(archive, request_uid)


def _payload(archive: Archive, row: OutgoingRequest) -> dict[str, Any]:
    return {
        "request_uid": row.request_uid,
        "project": row.project,
        "definition": row.definition,
        "purpose": row.purpose,
        "requested_by": row.requested_by,
        "key_check": key_check(archive.settings, row.project),
        "profile": project_profile(archive, row.project),
    }


def refresh(archive: Archive, request_uid: str) -> dict[str, Any]:
    """Ask the holding site (sending the request first if it never arrived); returns what we now know.
    A failed call is recorded in `last_error`, not raised: the request stays, to be refreshed again."""
    with archive.db.read() as session:
        row = get_request(session, request_uid)
        peer = session.scalar(select(FederationPeer).where(FederationPeer.name == row.peer))
    error = ""
    remote: RemoteStatus | None = None
    if peer is None:
        error = f"federation peer {row.peer} was removed"
    else:
        try:
            if row.status == RequestStatus.UNSENT:
                data = call(archive, peer, "POST", "/access-requests", _payload(archive, row))
            else:
                data = call(archive, peer, "GET", f"/access-requests/{row.request_uid}")
            remote = RemoteStatus.model_validate(data)
            if remote.request_uid != row.request_uid:
                remote, error = None, f"{peer.name}: answered about another request"
        except PeerError as exc:
            error = str(exc)
        except ValidationError:
            error = f"{peer.name}: unexpected answer"

    def work(session: Session) -> None:
        current = get_request(session, request_uid)
        current.updated_at = utcnow()
        current.last_error = error[:512]
        if remote is not None:
            current.status, current.reason = remote.status, remote.reason[:512]
            approved = remote.status == RequestStatus.APPROVED
            current.delivery = remote.delivery.model_dump() if approved else {}

    archive.db.transaction(work)
    with archive.db.read() as session:
        return info(get_request(session, request_uid))


def get_request(session: Session, request_uid: str) -> OutgoingRequest:
    row = session.scalar(select(OutgoingRequest).where(OutgoingRequest.request_uid == request_uid))
    if row is None:
        raise NotFound("no such access request")
    return row


def list_requests(session: Session, project: str | None = None) -> list[OutgoingRequest]:
    stmt = select(OutgoingRequest).order_by(OutgoingRequest.outgoing_pk.desc())
    if project:
        stmt = stmt.where(OutgoingRequest.project == project)
    return list(session.scalars(stmt.limit(1000)))


def info(row: OutgoingRequest) -> dict[str, Any]:
    return {
        "request_uid": row.request_uid,
        "peer": row.peer,
        "project": row.project,
        "definition": row.definition,
        "purpose": row.purpose,
        "requested_by": row.requested_by,
        "status": row.status,
        "reason": row.reason,
        "delivery": row.delivery,
        "last_error": row.last_error,
        "created_at": row.created_at.isoformat() + "Z",
        "updated_at": row.updated_at.isoformat() + "Z",
    }
