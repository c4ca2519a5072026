"""Access requests at the holding site (a data permit, in EHDS terms): received from a peer site for one of
its research projects, decided by an administrator, delivered through the sharing outbox.

Approval binds the request to a local project holding the same key and de-identification profile as the
requester's (checked: `key_check` and the profile signature must match), and to a sharing peer — the
requesting project's STOW root (or a DIMSE node bound to it). The cohort is evaluated then, by the same
function the counts use (imaging.federation.criteria), and every matching study is queued in the outbox
(`imaging.sharing.outbox.enqueue_study`) with one delivery job per study: de-identified at delivery time
with the project's key, sent, verified at the peer, audited, retried — the existing sharing path.

Double de-identification: the requesting project's STOW root de-identifies what it receives. Our output
carries the engine's keyed seal (imaging.deid.engine), and sealed input is returned unchanged by a
Deidentifier with the same key and profile — which is why both must match: the copy that arrives keeps
exactly the pseudonyms a direct share under that key gives. With another profile it would be
de-identified a second time, under pseudonyms of pseudonyms.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imaging import audit
from imaging.archive import Archive
from imaging.errors import Conflict, InvalidRequest, NotAuthorized, NotFound
from imaging.federation.criteria import CohortDefinition, matching_studies
from imaging.federation.keys import key_check
from imaging.federation.models import FederationPeer, IncomingRequest, RequestStatus, RequestStudy
from imaging.index.schema import Study, utcnow
from imaging.ingest.partitions import deidentifier_for, get_project
from imaging.jobs.runner import enqueue
from imaging.partition import CLINICAL, PARTITION_PATTERN
from imaging.sharing.models import OutboxRow, OutboxStatus, Peer
from imaging.sharing.outbox import enqueue_study, job_for

REQUEST_UID = r"^[A-Za-z0-9][A-Za-z0-9-]{7,63}$"


class AccessRequestIn(BaseModel):
    """An access request as a peer sends it."""

    model_config = ConfigDict(extra="forbid")
    request_uid: str = Field(pattern=REQUEST_UID)
    project: str = Field(pattern=PARTITION_PATTERN)
    definition: CohortDefinition
    purpose: str = Field(default="", max_length=4000)
    requested_by: str = Field(default="", max_length=128)
    key_check: str = Field(pattern=r"^[0-9a-f]{64}$")
    profile: str = Field(max_length=128, pattern=r"^[0-9A-Za-z.+]{1,128}$")


def parse_request(data: Any) -> AccessRequestIn:
    try:
        return AccessRequestIn.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidRequest(f"invalid access request: {problems}"[:500]) from None


def project_profile(archive: Archive, project: str) -> str:
    """The signature of a local project's de-identification profile (part of the engine's seal)."""
    return deidentifier_for(archive.db, archive.settings.keys_path, project).profile.signature


def _audit(session: Session, user: str, source: str, detail: str, outcome: audit.Outcome) -> None:
    audit.record(
        session,
        audit.AuditEvent.QUERY,
        user=user[:128],
        action="E",
        outcome=outcome,
        source=source[:128],
        detail=detail,
    )


def receive(archive: Archive, peer: FederationPeer, request: AccessRequestIn) -> dict[str, Any]:
    """Store a peer's request (idempotent by its UUID: a resend after a lost answer changes nothing),
    audited as a query by that site; refused, and audited, when requests from it are switched off."""
    user, source = f"site:{peer.site_id}", f"federation-peer:{peer.name}"
    what = f"access request {request.request_uid} for project {request.project}: {request.definition.canonical()}"
    if not peer.requests:
        archive.db.transaction(
            lambda s: _audit(s, user, source, f"{what}: refused (requests off)", audit.Outcome.MINOR_FAILURE)
        )
        raise NotAuthorized("access requests from this site are switched off")

    def work(session: Session) -> IncomingRequest:
        row = session.scalar(
            select(IncomingRequest).where(IncomingRequest.request_uid == request.request_uid)
        )
        if row is not None:
            if row.site_id != peer.site_id:
                raise Conflict("request id already used")
            return row
        row = IncomingRequest(
            request_uid=request.request_uid,
            site_id=peer.site_id,
            peer=peer.name,
            project=request.project,
            definition=request.definition.model_dump(exclude_defaults=True),
            purpose=request.purpose,
            requested_by=request.requested_by,
            key_check=request.key_check,
            profile=request.profile,
            status=RequestStatus.PENDING.value,
            reason="",
            decided_by="",
            local_project="",
            deliver_to="",
        )
        session.add(row)
        _audit(session, user, source, f"{what}: received, pending approval", audit.Outcome.SUCCESS)
        session.flush()
        return row

    row = archive.db.transaction(work)
    with archive.db.read() as session:
        return status(session, row)


def get_request(session: Session, request_uid: str) -> IncomingRequest:
    row = session.scalar(select(IncomingRequest).where(IncomingRequest.request_uid == request_uid))
    if row is None:
        raise NotFound("no such access request")
    return row


def list_requests(session: Session, status_filter: str | None = None) -> list[IncomingRequest]:
    stmt = select(IncomingRequest).order_by(IncomingRequest.incoming_pk.desc())
    if status_filter:
        stmt = stmt.where(IncomingRequest.status == status_filter)
    return list(session.scalars(stmt.limit(1000)))


def approve(
    archive: Archive,
    request_uid: str,
    *,
    deliver_to: str = "",
    project: str = "",
    user: str = "system",
) -> dict[str, Any]:
    """Approve a pending request: check the key and profile, freeze the cohort, queue its delivery."""
    with archive.db.read() as session:
        row = get_request(session, request_uid)
        if row.status != RequestStatus.PENDING:
            raise Conflict(f"the request is {row.status} already")
        local = project or row.project
        get_project(session, local)
        target = deliver_to
        if not target:
            target = (
                session.scalar(
                    select(FederationPeer.delivery_peer).where(FederationPeer.site_id == row.site_id)
                )
                or ""
            )
        if not target:
            raise InvalidRequest("name the sharing peer to deliver to (the requesting project's STOW root)")
        if session.scalar(select(Peer.peer_pk).where(Peer.name == target)) is None:
            raise NotFound(f"no such sharing peer: {target}")
        cohort = CohortDefinition.model_validate(row.definition)
    if key_check(archive.settings, local) != row.key_check:
        raise Conflict(
            f"project {local} holds another key than the requesting project: pseudonyms would differ"
        )
    if project_profile(archive, local) != row.profile:
        raise Conflict(
            f"project {local} de-identifies with another profile than the requesting project "
            "(its copy would be de-identified twice)"
        )

    def work(session: Session) -> int:
        current = get_request(session, request_uid)
        if current.status != RequestStatus.PENDING:
            raise Conflict(f"the request is {current.status} already")
        members = matching_studies(session, cohort)
        queued = 0
        for member in members:
            study = session.get(Study, member.study_pk)
            assert study is not None
            queued += enqueue_study(
                archive, session, study, target, local, origin=f"permit:{request_uid}", rearm=True
            )
            enqueue(
                session, *job_for(target, local, study.StudyInstanceUID, f"permit-{request_uid}", unique=True)
            )
            session.add(
                RequestStudy(incoming_pk=current.incoming_pk, StudyInstanceUID=study.StudyInstanceUID)
            )
            audit.record(
                session,
                audit.AuditEvent.BEGIN_TRANSFERRING,
                user=user,
                action="E",
                source=f"peer:{target}",
                partition=local,
                study_uid=study.StudyInstanceUID,
                patient_ref=f"patient_pk:{member.patient_pk}",
                detail=f"access request {request_uid} approved: queued for {current.site_id}, "
                f"de-identified with project {local}",
            )
        current.status, current.decided_by, current.decided_at = RequestStatus.APPROVED.value, user, utcnow()
        current.local_project, current.deliver_to = local, target
        _decision_audit(session, current, user, f"approved: {len(members)} studies to peer {target}")
        return queued

    archive.db.transaction(work, attempts=1)
    with archive.db.read() as session:
        return status(session, get_request(session, request_uid))


def reject(archive: Archive, request_uid: str, *, reason: str = "", user: str = "system") -> dict[str, Any]:
    """Reject a pending request; `reason` is told to the requester (write no patient detail in it)."""

    def work(session: Session) -> None:
        row = get_request(session, request_uid)
        if row.status != RequestStatus.PENDING:
            raise Conflict(f"the request is {row.status} already")
        row.status, row.reason = RequestStatus.REJECTED.value, reason[:512]
        row.decided_by, row.decided_at = user, utcnow()
        _decision_audit(session, row, user, "rejected")

    archive.db.transaction(work, attempts=1)
    with archive.db.read() as session:
        return status(session, get_request(session, request_uid))


def _decision_audit(session: Session, row: IncomingRequest, user: str, what: str) -> None:
    """PS3.15 Security Alert, 110135 Object Security Attributes Changed: what may leave, to whom."""
    audit.record(
        session,
        audit.AuditEvent.SECURITY_ALERT,
        user=user,
        action="U",
        source=f"federation-peer:{row.peer}",
        partition=row.local_project,
        detail=f"110135 Object Security Attributes Changed: access request {row.request_uid} of "
        f"{row.site_id} for project {row.project} {what}",
    )


def delivery(session: Session, row: IncomingRequest) -> dict[str, Any]:
    """How far an approved request's delivery is: studies, instances per outbox status, a summary."""
    if row.status != RequestStatus.APPROVED:
        return {}
    studies = select(RequestStudy.StudyInstanceUID).where(RequestStudy.incoming_pk == row.incoming_pk)
    counts = Counter(
        {
            status_: int(n)
            for status_, n in session.execute(
                select(OutboxRow.status, func.count())
                .where(
                    OutboxRow.peer == row.deliver_to,
                    OutboxRow.project == row.local_project,
                    OutboxRow.partition == CLINICAL,
                    OutboxRow.StudyInstanceUID.in_(studies),
                )
                .group_by(OutboxRow.status)
            )
        }
    )
    n_studies = int(session.scalar(select(func.count()).select_from(studies.subquery())) or 0)
    done = counts[OutboxStatus.VERIFIED.value]
    if counts[OutboxStatus.PENDING.value] or counts[OutboxStatus.SENT.value]:
        state = "delivering"
    elif done == sum(counts.values()):
        state = "delivered"
    else:
        state = "incomplete"  # failed (an admin can retry), quarantined or cancelled instances
    return {"studies": n_studies, "instances": dict(counts), "state": state}


def status(session: Session, row: IncomingRequest) -> dict[str, Any]:
    """What the requester is told (and the admin sees): decision, reason, delivery progress."""
    return {
        "request_uid": row.request_uid,
        "status": row.status,
        "reason": row.reason,
        "decided_at": row.decided_at.isoformat() + "Z" if row.decided_at else None,
        "delivery": delivery(session, row),
    }


def info(session: Session, row: IncomingRequest) -> dict[str, Any]:
    """The whole request, for the holding site's administrators."""
    return {
        **status(session, row),
        "site_id": row.site_id,
        "peer": row.peer,
        "project": row.project,
        "definition": row.definition,
        "purpose": row.purpose,
        "requested_by": row.requested_by,
        "created_at": row.created_at.isoformat() + "Z",
        "decided_by": row.decided_by,
        "local_project": row.local_project,
        "deliver_to": row.deliver_to,
    }
