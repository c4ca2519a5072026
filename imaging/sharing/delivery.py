"""Delivery of the outbox: one `share.deliver` job per peer x project x study.

A run of the job:
1. re-checks consent (an opt-out since queueing cancels the rows) and that the peer is enabled;
2. asks the peer which instances it already holds when an earlier attempt may have reached it (a lost
   answer): those are not sent again — verify, don't trust;
3. de-identifies each pending instance at delivery time with the project's profile and key (the output is
   deterministic, so a resend is the same object under the same UIDs) and sends it, in a thread pool of
   `share_concurrency`; a quarantined instance is never sent, its row says why; the first "peer
   unavailable" stops the batch (no hammering a peer that is down);
4. verifies what was sent with a query at the peer (QIDO-RS / C-FIND / Orthanc REST);
5. records the audit trail (110102 begin, 110112 the verification query, 110104 the outcome);
6. raises `DeliveryIncomplete` while rows remain pending, so the job runner retries the job with
   exponential backoff and jitter; after `share_max_attempts` the remaining rows become `failed`.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging import audit
from imaging.archive import Archive
from imaging.consent import is_opted_out
from imaging.errors import ArchiveError
from imaging.events import ChangeKind
from imaging.index.schema import ChangeLog, Job, Patient, utcnow
from imaging.jobs.runner import JobKind, JobRunner
from imaging.partition import CLINICAL
from imaging.sharing.erasure import JOB_KIND as ERASE_KIND
from imaging.sharing.erasure import PLAN_KIND as ERASE_PLAN_KIND
from imaging.sharing.erasure import erase_group, plan_erasure
from imaging.sharing.models import OutboxRow, OutboxStatus, Peer
from imaging.sharing.outbox import JOB_KIND, cancel_for_patient, deidentifier
from imaging.sharing.peers import PeerError, PeerUnavailable, client_for
from imaging.sharing.policies import jobs_for_study

log = logging.getLogger(__name__)


class DeliveryIncomplete(ArchiveError):
    """Some instances of the group are still to deliver: the job is retried later."""


@dataclass
class _Outcome:
    status: str  # sent | quarantined | error | skipped
    message: str = ""
    peer_uid: str = ""


def _encode(ds: Any) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _query_audit(
    session: Session, peer: str, rows: list[OutboxRow], found: int, asked: int, why: str
) -> None:
    audit.record(
        session,
        audit.AuditEvent.QUERY,
        user="system",
        action="E",
        source=f"peer:{peer}",
        partition=rows[0].project or rows[0].partition,
        study_uid=rows[0].peer_StudyInstanceUID,
        patient_ref=rows[0].patient_ref,
        detail=f"{why}: {found} of {asked} instances present at the peer",
    )


def deliver_group(archive: Archive, payload: dict[str, Any]) -> dict[str, Any]:
    """The `share.deliver` job function (idempotent: run it as often as you like)."""
    peer_name, project, study_uid = payload["peer"], payload["project"], payload["study_uid"]
    settings = archive.settings
    with archive.db.read() as session:
        rows = list(
            session.scalars(
                select(OutboxRow)
                .where(
                    OutboxRow.peer == peer_name,
                    OutboxRow.project == project,
                    OutboxRow.StudyInstanceUID == study_uid,
                    OutboxRow.status == OutboxStatus.PENDING,
                )
                .order_by(OutboxRow.outbox_pk)
            )
        )
        if not rows:
            return {"pending": 0}
        peer = session.scalar(select(Peer).where(Peer.name == peer_name))
        patient = session.get(Patient, rows[0].patient_pk)
        opted_out = patient is not None and is_opted_out(
            session, patient.PatientID, patient.IssuerOfPatientID
        )
        job_key = payload.get("job_key", f"{peer_name}|{project}|{study_uid}")
        job_attempts = (
            session.scalar(select(Job.attempts).where(Job.kind == JOB_KIND, Job.key == job_key)) or 0
        )
    if opted_out and patient is not None:
        archive.db.transaction(lambda s: cancel_for_patient(s, patient.PatientID, patient.IssuerOfPatientID))
        return {"cancelled": len(rows)}
    if peer is None:
        _finish(
            archive, rows, {r.outbox_pk: _Outcome("error", "peer removed") for r in rows}, set(), None, True
        )
        return {"failed": len(rows)}
    if not peer.enabled:
        raise DeliveryIncomplete(f"peer {peer_name} is disabled")

    deid = deidentifier(archive, project) if project else None
    client = client_for(archive, peer)
    outcomes: dict[int, _Outcome] = {}
    verified: set[str] = set()
    verify_error: str | None = None
    try:
        # Instances an earlier attempt may have delivered (its answer lost): look before resending.
        maybe = [r for r in rows if r.attempts > 0]
        if maybe:
            try:
                already = client.verify(rows[0].peer_StudyInstanceUID, {r.peer_SOPInstanceUID for r in maybe})
            except PeerUnavailable as exc:
                _finish(
                    archive,
                    rows,
                    {r.outbox_pk: _Outcome("error", str(exc)) for r in rows},
                    set(),
                    None,
                    _last_attempt(job_attempts, settings.share_max_attempts),
                )
                raise DeliveryIncomplete(str(exc)) from exc
            except PeerError:
                already = set()
            archive.db.transaction(
                lambda s: _query_audit(s, peer_name, rows, len(already), len(maybe), "check before resend")
            )
            for row in maybe:
                if row.peer_SOPInstanceUID in already:
                    outcomes[row.outbox_pk] = _Outcome("sent", "", row.peer_SOPInstanceUID)
                    verified.add(row.peer_SOPInstanceUID)
        to_send = [r for r in rows if r.outbox_pk not in outcomes]
        if to_send:
            archive.db.transaction(
                lambda s: audit.record(
                    s,
                    audit.AuditEvent.BEGIN_TRANSFERRING,
                    user="system",
                    action="E",
                    source=f"peer:{peer_name}",
                    partition=project or CLINICAL,
                    study_uid=rows[0].peer_StudyInstanceUID,
                    patient_ref=rows[0].patient_ref,
                    detail=f"sending {len(to_send)} instances to {peer.kind} peer {peer_name}"
                    + (f", de-identified with project {project}" if project else ", identified"),
                )
            )
        unavailable = threading.Event()

        def send_one(row: OutboxRow) -> _Outcome:
            if unavailable.is_set():
                return _Outcome("error", "peer unavailable (batch stopped)")
            with archive.db.read() as s:
                if (
                    s.scalar(select(OutboxRow.status).where(OutboxRow.outbox_pk == row.outbox_pk))
                    != "pending"
                ):
                    return _Outcome("skipped")  # cancelled since the batch started (opt-out)
            try:
                data = archive.store.read(row.object_key)
                peer_uid = row.SOPInstanceUID
                if deid is not None:
                    result = deid.deidentify(dcmread(BytesIO(data)))
                    if result.quarantined or result.dataset is None:
                        return _Outcome("quarantined", "; ".join(result.reasons)[:2000] or "quarantined")
                    peer_uid = str(result.dataset.SOPInstanceUID)
                    data = _encode(result.dataset)
                client.send(data)
                return _Outcome("sent", "", peer_uid)
            except PeerUnavailable as exc:
                unavailable.set()
                return _Outcome("error", str(exc))
            except PeerError as exc:
                return _Outcome("error", str(exc))
            except Exception as exc:  # never PHI in the message: the type only
                # The type only: a traceback could carry values read from the instance (PHI).
                log.warning("delivery of outbox row %d failed: %s", row.outbox_pk, type(exc).__name__)
                return _Outcome("error", f"internal error ({type(exc).__name__})")

        with ThreadPoolExecutor(max_workers=settings.share_concurrency, thread_name_prefix="share") as pool:
            for row, outcome in zip(to_send, pool.map(send_one, to_send), strict=True):
                outcomes[row.outbox_pk] = outcome
        sent = {o.peer_uid for o in outcomes.values() if o.status == "sent"} - verified
        if sent:
            try:
                verified |= client.verify(rows[0].peer_StudyInstanceUID, sent)
                archive.db.transaction(
                    lambda s: _query_audit(
                        s, peer_name, rows, len(verified & sent), len(sent), "verify delivery"
                    )
                )
            except PeerError as exc:
                verify_error = f"not verified: {exc}"
    finally:
        client.close()
    last = _last_attempt(job_attempts, settings.share_max_attempts)
    remaining = _finish(archive, rows, outcomes, verified, verify_error, last)
    counts = {s: sum(1 for o in outcomes.values() if o.status == s) for s in ("sent", "quarantined", "error")}
    result = {"verified": len(verified), **counts, "remaining": remaining}
    if remaining:
        raise DeliveryIncomplete(f"{remaining} of {len(rows)} instances not delivered yet")
    return result


def _last_attempt(job_attempts: int, max_attempts: int) -> bool:
    return job_attempts >= max_attempts


def _finish(
    archive: Archive,
    rows: list[OutboxRow],
    outcomes: dict[int, _Outcome],
    verified: set[str],
    verify_error: str | None,
    last_attempt: bool,
) -> int:
    """Write each row's new state and the 110104 audit record; returns rows still pending."""
    max_attempts = archive.settings.share_max_attempts

    def work(session: Session) -> int:
        now = utcnow()
        remaining = done = quarantined = failed = 0
        for old in rows:
            row = session.get(OutboxRow, old.outbox_pk)
            if row is None:
                continue
            outcome = outcomes.get(row.outbox_pk, _Outcome("error", "not attempted"))
            if outcome.status == "skipped":
                continue
            if row.status != OutboxStatus.PENDING and outcome.status != "sent":
                continue  # cancelled meanwhile, and nothing left our site
            row.updated_at = now
            if outcome.status == "quarantined":
                row.status, row.last_error = OutboxStatus.QUARANTINED.value, outcome.message
                quarantined += 1
                continue
            if outcome.status == "sent":
                row.peer_SOPInstanceUID = outcome.peer_uid or row.peer_SOPInstanceUID
                row.sent_at = row.sent_at or now
                if row.peer_SOPInstanceUID in verified:
                    row.status, row.verified_at, row.last_error = OutboxStatus.VERIFIED.value, now, ""
                    done += 1
                    continue
                message = verify_error or "not found at the peer after sending"
            else:
                message = outcome.message
            row.attempts += 1
            row.last_error = message[:2000]
            if row.attempts >= max_attempts or last_attempt:
                row.status = OutboxStatus.FAILED.value
                failed += 1
            else:
                row.status = OutboxStatus.PENDING.value
                remaining += 1
        first = rows[0]
        if done + remaining + failed + quarantined:
            outcome_code = (
                audit.Outcome.SUCCESS
                if not (remaining or failed or quarantined)
                else audit.Outcome.SERIOUS_FAILURE
                if not done
                else audit.Outcome.MINOR_FAILURE
            )
            errors = sorted({o.message for o in outcomes.values() if o.status == "error" and o.message})
            audit.record(
                session,
                audit.AuditEvent.INSTANCES_TRANSFERRED,
                user="system",
                action="R",
                outcome=outcome_code,
                source=f"peer:{first.peer}",
                partition=first.project or first.partition,
                study_uid=first.peer_StudyInstanceUID,
                patient_ref=first.patient_ref,
                detail=(
                    f"delivered and verified {done}, pending {remaining}, failed {failed}, "
                    f"quarantined (never sent) {quarantined}"
                    + (f"; errors: {'; '.join(errors)[:500]}" if errors else "")
                ),
            )
        return remaining

    return archive.db.transaction(work)


# ------------------------------------------------------------------------------------ wiring
class SharingConsumer:
    """StudyStable and StudyPriority events of clinical studies → policy evaluation → outbox rows + jobs."""

    name = "sharing"
    kinds = frozenset({ChangeKind.STUDY_STABLE.value, ChangeKind.STUDY_PRIORITY.value})  # all it acts on

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def __call__(self, session: Session, change: ChangeLog) -> list[tuple[str, str, dict[str, Any]]]:
        if change.partition != CLINICAL or change.kind not in (
            ChangeKind.STUDY_STABLE,
            ChangeKind.STUDY_PRIORITY,
        ):
            return []
        return jobs_for_study(self.archive, session, change.StudyInstanceUID, trigger=f"seq-{change.seq}")


def register(runner: JobRunner, archive: Archive) -> None:
    settings = archive.settings
    runner.register(
        SharingConsumer(archive),
        **{
            JOB_KIND: JobKind(
                deliver_group,
                max_attempts=settings.share_max_attempts,
                base_delay=settings.share_retry_base_seconds,
            ),
            ERASE_PLAN_KIND: JobKind(
                plan_erasure, max_attempts=10, base_delay=settings.share_retry_base_seconds
            ),
            ERASE_KIND: JobKind(
                erase_group,
                max_attempts=settings.share_max_attempts,
                base_delay=settings.share_retry_base_seconds,
            ),
        },
    )
