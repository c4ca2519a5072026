"""The durable sharing outbox: one row per instance x peer x project, in the index.

Rows are added in the same transaction as the job that will deliver them (`share.deliver`, one per
peer x project x study), so a crash loses nothing: the job runner re-dispatches pending jobs and the job
picks up every pending row of its group. A row is unique per (peer, project, SOP Instance): re-evaluating
a policy, a second StudyStable, or a repeated manual share never queues an instance twice.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imaging import audit
from imaging.archive import Archive
from imaging.consent import is_opted_out
from imaging.deid import Deidentifier
from imaging.errors import Conflict, InvalidRequest, NotFound
from imaging.events import InstancesRemoved, PatientOptedOut
from imaging.index.schema import Instance, Patient, Series, Study, utcnow
from imaging.index.schema import Job as JobRow
from imaging.ingest.partitions import deidentifier_for, get_project
from imaging.jobs.runner import enqueue
from imaging.partition import CLINICAL
from imaging.sharing.models import OutboxRow, OutboxStatus, Peer

JOB_KIND = "share.deliver"
Job = tuple[str, str, dict[str, Any]]


class NotShareable(Conflict):
    """The study cannot be shared now (not stable yet, patient opted out)."""


def deidentifier(archive: Archive, project: str) -> Deidentifier:
    return deidentifier_for(archive.db, archive.settings.keys_path, project)


# ------------------------------------------------------------------------------------ queueing
def job_for(peer: str, project: str, study_uid: str, trigger: str, *, unique: bool = False) -> Job:
    """The delivery job of one group. A re-armed job keeps its key; `unique` gives a job of its own (a
    manual share or retry from another thread must not depend on a job that may be running)."""
    key = f"{peer}|{project}|{study_uid}"
    if unique:
        key += f"|{trigger}"
    key = key[:256]
    payload = {"peer": peer, "project": project, "study_uid": study_uid, "trigger": trigger, "job_key": key}
    return JOB_KIND, key, payload


def enqueue_study(
    archive: Archive,
    session: Session,
    study: Study,
    peer: str,
    project: str,
    *,
    origin: str,
    rearm: bool = False,
) -> int:
    """Add a pending row for every instance of `study` not yet queued for (peer, project); returns how many
    rows became pending. `rearm` also re-queues rows that failed or were cancelled (manual share/retry)."""
    patient = session.get(Patient, study.patient_pk)
    assert patient is not None
    if is_opted_out(session, patient.PatientID, patient.IssuerOfPatientID):
        return 0
    deid = deidentifier(archive, project) if project else None
    peer_study = deid.uid_for(study.StudyInstanceUID) if deid else study.StudyInstanceUID
    patient_ref = (
        deid.pseudonym_for(patient.PatientID, patient.IssuerOfPatientID)
        if deid
        else f"patient_pk:{patient.patient_pk}"
    )
    existing = {
        row.SOPInstanceUID: row
        for row in session.scalars(
            select(OutboxRow).where(
                OutboxRow.peer == peer,
                OutboxRow.project == project,
                OutboxRow.partition == study.partition,
                OutboxRow.StudyInstanceUID == study.StudyInstanceUID,
            )
        )
    }
    instances = session.execute(
        select(Instance.SOPInstanceUID, Instance.object_key, Series.SeriesInstanceUID)
        .join(Series, Series.series_pk == Instance.series_pk)
        .where(Series.study_pk == study.study_pk)
        .order_by(Series.series_pk, Instance.InstanceNumber, Instance.instance_pk)
    ).all()
    added = 0
    now = utcnow()
    for sop_uid, object_key, series_uid in instances:
        row = existing.get(sop_uid)
        if row is None:
            session.add(
                OutboxRow(
                    peer=peer,
                    project=project,
                    origin=origin[:128],
                    partition=study.partition,
                    patient_pk=patient.patient_pk,
                    PatientID=patient.PatientID,
                    IssuerOfPatientID=patient.IssuerOfPatientID,
                    StudyInstanceUID=study.StudyInstanceUID,
                    SeriesInstanceUID=series_uid,
                    SOPInstanceUID=sop_uid,
                    object_key=object_key,
                    peer_StudyInstanceUID=peer_study,
                    peer_SOPInstanceUID=deid.uid_for(sop_uid) if deid else sop_uid,
                    patient_ref=patient_ref,
                    created_at=now,
                    updated_at=now,
                )
            )
            added += 1
        elif row.object_key != object_key and row.status != OutboxStatus.QUARANTINED:
            # Overwritten at our side since it was queued: deliver the new object.
            row.object_key, row.status, row.attempts, row.updated_at = (
                object_key,
                OutboxStatus.PENDING,
                0,
                now,
            )
            added += 1
        elif rearm and row.status in (OutboxStatus.FAILED, OutboxStatus.CANCELLED):
            row.status, row.attempts, row.last_error, row.updated_at = OutboxStatus.PENDING, 0, "", now
            row.origin = origin[:128]
            added += 1
    session.flush()
    return added


def share_study(
    archive: Archive,
    study_uid: str,
    peers: list[str],
    *,
    project: str = "",
    identified: bool = False,
    user: str = "system",
) -> dict[str, int]:
    """Manual share (admin or clinician): queue a stable clinical study for `peers`, de-identified with
    `project`'s profile and key (or, explicitly, identified). Returns instances queued per peer."""
    if bool(project) == bool(identified):
        raise InvalidRequest("name a research project to de-identify with, or share identified explicitly")
    queued: dict[str, int] = {}
    nonce = f"manual-{secrets.token_hex(6)}"

    def work(session: Session) -> None:
        study = session.scalar(
            select(Study).where(Study.partition == CLINICAL, Study.StudyInstanceUID == study_uid)
        )
        if study is None:
            raise NotFound("no such study")
        if not study.stable:
            raise NotShareable("the study is still receiving instances; it is shared once stable")
        patient = session.get(Patient, study.patient_pk)
        assert patient is not None
        if is_opted_out(session, patient.PatientID, patient.IssuerOfPatientID):
            raise NotShareable("the patient opted out of sharing")
        if project:
            get_project(session, project)
        for name in peers:
            if session.scalar(select(Peer.peer_pk).where(Peer.name == name)) is None:
                raise NotFound(f"no such peer: {name}")
            queued[name] = enqueue_study(
                archive, session, study, name, project, origin=f"manual:{user}", rearm=True
            )
            enqueue(session, *job_for(name, project, study_uid, nonce, unique=True))
        audit.record(
            session,
            audit.AuditEvent.BEGIN_TRANSFERRING,
            user=user,
            action="E",
            source=",".join(f"peer:{p}" for p in peers),
            partition=project or CLINICAL,
            study_uid=study_uid,
            patient_ref=f"patient_pk:{patient.patient_pk}",
            detail=f"manual share queued: {sum(queued.values())} instances; "
            + (f"de-identified with project {project}" if project else "identified"),
        )

    archive.db.transaction(work, attempts=1)
    return queued


# ------------------------------------------------------------------------------------ consent
def cancel_for_patient(
    session: Session,
    patient_id: str,
    issuer: str = "",
    *,
    user: str = "system",
    reason: str = "patient opted out",
) -> int:
    """Cancel every pending delivery of the patient's clinical studies (status `cancelled`, one audit
    record per study and peer). Returns how many rows were cancelled."""
    patient_pks = list(
        session.scalars(
            select(Patient.patient_pk).where(
                Patient.partition == CLINICAL,
                Patient.PatientID == patient_id,
                Patient.IssuerOfPatientID == issuer,
            )
        )
    )
    if not patient_pks:
        return 0
    rows = session.scalars(
        select(OutboxRow).where(
            OutboxRow.patient_pk.in_(patient_pks), OutboxRow.status == OutboxStatus.PENDING
        )
    ).all()
    groups: dict[tuple[str, str, str], list[OutboxRow]] = defaultdict(list)
    now = utcnow()
    for row in rows:
        row.status, row.last_error, row.updated_at = OutboxStatus.CANCELLED.value, reason, now
        groups[(row.peer, row.project, row.StudyInstanceUID)].append(row)
    for (peer, project, study_uid), group in groups.items():
        audit.record(
            session,
            audit.AuditEvent.INSTANCES_TRANSFERRED,
            user=user,
            action="D",
            outcome=audit.Outcome.MINOR_FAILURE,
            source=f"peer:{peer}",
            partition=project or CLINICAL,
            study_uid=study_uid,
            patient_ref=group[0].patient_ref,
            detail=f"cancelled {len(group)} queued instances: {reason}",
        )
    session.flush()
    return len(rows)


def on_patient_opted_out(session: Session, event: PatientOptedOut) -> None:
    """Subscribed to consent at the composition root: an opt-out cancels the patient's queued deliveries."""
    cancel_for_patient(session, event.PatientID, event.IssuerOfPatientID, user=event.user)


def on_instances_removed(session: Session, event: InstancesRemoved) -> None:
    """Subscribed at the composition root: instances deleted, rejected or erased here are never sent."""
    uids = list(event.SOPInstanceUIDs)
    now = utcnow()
    for start in range(0, len(uids), 500):
        for row in session.scalars(
            select(OutboxRow).where(
                OutboxRow.partition == event.partition,
                OutboxRow.SOPInstanceUID.in_(uids[start : start + 500]),
                OutboxRow.status == OutboxStatus.PENDING,
            )
        ):
            row.status, row.last_error, row.updated_at = (
                OutboxStatus.CANCELLED.value,
                f"removed here before delivery ({event.reason})"[:2000],
                now,
            )


# ------------------------------------------------------------------------------------ status & retry
@dataclass
class GroupStatus:
    peer: str
    project: str
    StudyInstanceUID: str
    peer_StudyInstanceUID: str
    counts: dict[str, int]
    last_error: str = ""
    updated_at: dt.datetime | None = None
    attempts: int = 0  # most attempts of a row still pending
    next_attempt_at: dt.datetime | None = None  # when the delivery job runs next (pending rows only)


def summary(session: Session) -> dict[str, dict[str, int]]:
    """Rows per peer and status."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for peer, status, count in session.execute(
        select(OutboxRow.peer, OutboxRow.status, func.count()).group_by(OutboxRow.peer, OutboxRow.status)
    ):
        out[peer][status] = int(count)
    return dict(out)


def groups(
    session: Session,
    *,
    peer: str | None = None,
    study_uid: str | None = None,
    status: str | None = None,
    limit: int = 200,
) -> list[GroupStatus]:
    """Deliveries per peer x project x study, newest first, with counts per status."""
    stmt = select(OutboxRow).order_by(OutboxRow.outbox_pk.desc())
    if peer:
        stmt = stmt.where(OutboxRow.peer == peer)
    if study_uid:
        stmt = stmt.where(
            (OutboxRow.StudyInstanceUID == study_uid) | (OutboxRow.peer_StudyInstanceUID == study_uid)
        )
    found: dict[tuple[str, str, str], GroupStatus] = {}
    counters: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
    for row in session.scalars(stmt.limit(100_000)):
        key = (row.peer, row.project, row.StudyInstanceUID)
        if key not in found:
            if len(found) >= limit:
                continue
            found[key] = GroupStatus(
                row.peer, row.project, row.StudyInstanceUID, row.peer_StudyInstanceUID, {}
            )
        counters[key][row.status] += 1
        group = found[key]
        if row.last_error and not group.last_error and row.status not in (OutboxStatus.VERIFIED,):
            group.last_error = row.last_error
        if group.updated_at is None or row.updated_at > group.updated_at:
            group.updated_at = row.updated_at
        if row.status == OutboxStatus.PENDING:
            group.attempts = max(group.attempts, row.attempts)
    result = []
    for key, group in found.items():
        group.counts = dict(counters[key])
        if status is not None and status not in group.counts:
            continue
        if group.counts.get(OutboxStatus.PENDING.value):
            group.next_attempt_at = session.scalar(
                select(func.min(JobRow.next_attempt_at)).where(
                    JobRow.kind == JOB_KIND,
                    JobRow.key.startswith("|".join(key), autoescape=True),
                    JobRow.status.in_(("pending", "running")),
                )
            )
        result.append(group)
    return result


def retry(session: Session, *, peer: str | None = None, study_uid: str | None = None) -> int:
    """Re-arm failed rows (attempts reset) and queue their delivery jobs; returns how many rows."""
    stmt = select(OutboxRow).where(OutboxRow.status == OutboxStatus.FAILED)
    if peer:
        stmt = stmt.where(OutboxRow.peer == peer)
    if study_uid:
        stmt = stmt.where(OutboxRow.StudyInstanceUID == study_uid)
    rows = session.scalars(stmt).all()
    nonce = f"retry-{secrets.token_hex(6)}"
    seen = set()
    for row in rows:
        row.status, row.attempts, row.updated_at = OutboxStatus.PENDING.value, 0, utcnow()
        key = (row.peer, row.project, row.StudyInstanceUID)
        if key not in seen:
            seen.add(key)
            enqueue(session, *job_for(*key, nonce, unique=True))
    return len(rows)
