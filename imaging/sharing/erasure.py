"""Erasure at the peers on a withdrawal of consent (GDPR Art. 17): every peer that received the patient's
instances is asked to delete them, through the durable outbox, and what each peer confirmed is recorded.

On ConsentWithdrawn (in the withdrawal's transaction) the handler records the `peers` step and queues the
job `share.erase-plan`, which finds every outbox row that left our site for this patient (sent, verified, or
failed after being sent), groups them per peer x project x study as the peer knows them (de-identified UIDs
for a project's copy), and queues one `share.erase` job per group (a PeerErasure row). That job asks the
peer to delete (imaging.sharing.peers: DICOMweb DELETE, Orthanc REST DELETE, an IOCM rejection note over
DIMSE), then looks: the erasure is confirmed only when the peer no longer holds any of the instances.
Until then it is retried with backoff, like a delivery, and after `share_max_attempts` it is `failed`
(an administrator sees it in the request's steps). Each confirmation is audited as Study Deleted at the
peer; the outbox rows become `erased`, so nothing sends them again.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from imaging import audit
from imaging.archive import Archive
from imaging.consent import ErasureRequest, record_step
from imaging.errors import ArchiveError
from imaging.events import ConsentWithdrawn
from imaging.index.schema import Patient, utcnow
from imaging.jobs.runner import enqueue
from imaging.partition import CLINICAL
from imaging.sharing.models import ErasureStatus, OutboxRow, OutboxStatus, Peer, PeerErasure
from imaging.sharing.outbox import deidentifier
from imaging.sharing.peers import PeerError, client_for

PLAN_KIND = "share.erase-plan"
JOB_KIND = "share.erase"
STEP = "peers"


class ErasureIncomplete(ArchiveError):
    """The peer still holds some of the instances (or could not be asked): the job is retried."""


def on_consent_withdrawn(session: Session, event: ConsentWithdrawn) -> None:
    """Subscribed at the composition root."""
    record_step(session, event.request_pk, STEP, "pending", "finding what peers received")
    enqueue(session, PLAN_KIND, f"plan:{event.request_pk}", {"request": event.request_pk})


def plan_erasure(archive: Archive, payload: dict[str, Any]) -> dict[str, Any]:
    """The `share.erase-plan` job: one PeerErasure row and `share.erase` job per peer x project x study."""
    request_pk = int(payload["request"])

    def work(session: Session) -> dict[str, Any]:
        request = session.get(ErasureRequest, request_pk)
        if request is None:
            return {"skipped": "no such request"}
        patients = list(
            session.scalars(
                select(Patient.patient_pk).where(
                    Patient.partition == CLINICAL,
                    Patient.PatientID == request.PatientID,
                    Patient.IssuerOfPatientID == request.IssuerOfPatientID,
                )
            )
        )
        mine = (OutboxRow.PatientID == request.PatientID) & (
            OutboxRow.IssuerOfPatientID == request.IssuerOfPatientID
        )
        left = (OutboxRow.sent_at.is_not(None)) | OutboxRow.status.in_(
            (OutboxStatus.SENT.value, OutboxStatus.VERIFIED.value)
        )
        rows = session.scalars(
            select(OutboxRow).where(or_(mine, OutboxRow.patient_pk.in_(patients or [-1])), left)
        ).all()
        groups: dict[tuple[str, str, str], list[OutboxRow]] = defaultdict(list)
        for row in rows:
            if row.status != OutboxStatus.ERASED:
                groups[(row.peer, row.project, row.peer_StudyInstanceUID)].append(row)
        peers: dict[str, int] = defaultdict(int)
        for (peer, project, study), group in groups.items():
            deid = deidentifier(archive, project) if project else None
            instances = sorted(
                {
                    (
                        deid.uid_for(r.SeriesInstanceUID) if deid else r.SeriesInstanceUID,
                        r.peer_SOPInstanceUID,
                    )
                    for r in group
                }
            )
            erasure = session.scalar(
                select(PeerErasure).where(
                    PeerErasure.request_pk == request_pk,
                    PeerErasure.peer == peer,
                    PeerErasure.project == project,
                    PeerErasure.peer_StudyInstanceUID == study,
                )
            )
            if erasure is None:
                erasure = PeerErasure(
                    request_pk=request_pk, peer=peer, project=project, peer_StudyInstanceUID=study
                )
                session.add(erasure)
            erasure.instances = [list(i) for i in instances]
            erasure.remaining = len(instances)
            session.flush()
            enqueue(session, JOB_KIND, f"erase:{erasure.erasure_pk}", {"erasure": erasure.erasure_pk})
            peers[peer] += len(instances)
            record_step(session, request_pk, f"peer:{peer}", "pending", f"{peers[peer]} instances to delete")
        summary = ", ".join(f"{n} instances at {p}" for p, n in sorted(peers.items())) or "nothing was shared"
        record_step(session, request_pk, STEP, "done", f"delete requests queued: {summary}")
        return {"groups": len(groups)}

    return archive.db.transaction(work, attempts=1)


def erase_group(archive: Archive, payload: dict[str, Any]) -> dict[str, Any]:
    """The `share.erase` job: ask the peer to delete one study's instances, then verify they are gone."""
    erasure_pk = int(payload["erasure"])
    with archive.db.read() as session:
        erasure = session.get(PeerErasure, erasure_pk)
        if erasure is None or erasure.status == ErasureStatus.CONFIRMED:
            return {"skipped": "confirmed already"}
        peer = session.scalar(select(Peer).where(Peer.name == erasure.peer))
    instances = [(series, sop) for series, sop in erasure.instances]
    sops = {sop for _, sop in instances}
    if peer is None:
        _record(archive, erasure_pk, None, "the peer was removed from the configuration", final=True)
        return {"failed": "peer removed"}
    client = client_for(archive, peer)
    try:
        client.delete(erasure.peer_StudyInstanceUID, instances)
        remaining = client.verify(erasure.peer_StudyInstanceUID, sops)
    except PeerError as exc:
        _record(archive, erasure_pk, None, str(exc))
        raise ErasureIncomplete(str(exc)) from exc
    finally:
        client.close()
    if remaining:
        _record(archive, erasure_pk, len(remaining), f"the peer still holds {len(remaining)} instances")
        raise ErasureIncomplete(f"{len(remaining)} of {len(sops)} instances still at the peer")
    _record(archive, erasure_pk, 0, "")
    return {"confirmed": len(sops)}


def _record(
    archive: Archive, erasure_pk: int, remaining: int | None, error: str, *, final: bool = False
) -> None:
    """One attempt's outcome: the PeerErasure row, the outbox rows, the audit trail, the request's step."""
    max_attempts = archive.settings.share_max_attempts

    def work(session: Session) -> None:
        erasure = session.get(PeerErasure, erasure_pk)
        if erasure is None:
            return
        now = utcnow()
        erasure.attempts += 1
        erasure.updated_at = now
        if remaining is not None:
            erasure.remaining = remaining
        if remaining == 0:
            erasure.status, erasure.last_error, erasure.confirmed_at = ErasureStatus.CONFIRMED.value, "", now
            sops = [sop for _, sop in erasure.instances]
            for row in session.scalars(
                select(OutboxRow).where(
                    OutboxRow.peer == erasure.peer,
                    OutboxRow.project == erasure.project,
                    OutboxRow.peer_SOPInstanceUID.in_(sops),
                )
            ):
                row.status, row.updated_at = OutboxStatus.ERASED.value, now
        else:
            erasure.last_error = error[:2000]
            if final or erasure.attempts >= max_attempts:
                erasure.status = ErasureStatus.FAILED.value
        audit.record(
            session,
            audit.AuditEvent.STUDY_DELETED,
            user="system",
            action="D",
            outcome=audit.Outcome.SUCCESS if remaining == 0 else audit.Outcome.MINOR_FAILURE,
            source=f"peer:{erasure.peer}",
            partition=erasure.project or CLINICAL,
            study_uid=erasure.peer_StudyInstanceUID,
            patient_ref=f"erasure:{erasure.request_pk}",
            detail=(
                f"deleted at the peer, confirmed: {len(erasure.instances)} instances"
                if remaining == 0
                else f"delete request to the peer, attempt {erasure.attempts}: {error}"
            )[:4000],
        )
        _update_step(session, erasure.request_pk, erasure.peer)

    archive.db.transaction(work)


def _update_step(session: Session, request_pk: int, peer: str) -> None:
    rows = session.scalars(
        select(PeerErasure).where(PeerErasure.request_pk == request_pk, PeerErasure.peer == peer)
    ).all()
    confirmed = sum(len(r.instances) for r in rows if r.status == ErasureStatus.CONFIRMED)
    total = sum(len(r.instances) for r in rows)
    if any(r.status == ErasureStatus.FAILED for r in rows):
        status, detail = "failed", next(r.last_error for r in rows if r.status == ErasureStatus.FAILED)
    elif all(r.status == ErasureStatus.CONFIRMED for r in rows):
        status, detail = "done", ""
    else:
        status, detail = "pending", next((r.last_error for r in rows if r.last_error), "")
    summary = f"peer confirmed {confirmed} of {total} instances deleted"
    record_step(session, request_pk, f"peer:{peer}", status, summary + (f"; {detail}" if detail else ""))
