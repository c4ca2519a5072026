"""Consent registry: patients who opted out of secondary use, and withdrawals with erasure.

* An opt-out (`opt_out`) stops future use: the patient is never published to a research project nor shared
  again, and deliveries already queued stop (through PatientOptedOut). Copies already made stay.
* A withdrawal with erasure (`withdraw_consent`, GDPR Art. 17) is an opt-out and more: the copies already
  made for secondary use go too. It records an ErasureRequest and publishes ConsentWithdrawn, on which the
  features act (imaging.retention erases the de-identified copies in every project and cohort,
  imaging.sharing asks every peer that received them to delete them); each records its steps and their
  outcome as ErasureStep rows of the request. The clinical record is not a secondary-use copy and stays.
* `revoke_opt_out` takes an opt-out back (the patient consents again). It was called `withdraw_opt_out`,
  which read like a withdrawal of consent: the old name remains as an alias.

Patients are keyed by (PatientID, IssuerOfPatientID) of the clinical partition; the registry lives in the
index beside the clinical data it governs."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Integer, String, Text, UniqueConstraint, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from imaging import audit
from imaging.errors import NotFound
from imaging.events import ConsentWithdrawn, PatientOptedOut, publish
from imaging.orm import Base, utcnow


class ConsentOptOut(Base):
    __tablename__ = "consent_opt_out"
    optout_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    PatientID: Mapped[str] = mapped_column(String(64))
    IssuerOfPatientID: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(64), default="")  # api | cli | csv:<file name>
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    __table_args__ = (UniqueConstraint("PatientID", "IssuerOfPatientID", name="uq_consent_patient"),)


class ErasureRequest(Base):
    """A withdrawal of consent with erasure: who asked, when; its steps say what each feature did."""

    __tablename__ = "erasure_request"
    request_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    PatientID: Mapped[str] = mapped_column(String(64))
    IssuerOfPatientID: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(64), default="")  # api | cli
    requested_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ErasureStep(Base):
    """One step of an erasure, recorded by the feature that does it: `projects` (local de-identified
    copies), `peer:<name>` (what a peer received). Status: pending | done | failed."""

    __tablename__ = "erasure_step"
    step_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_pk: Mapped[int] = mapped_column(Integer, index=True)
    step: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    detail: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    __table_args__ = (UniqueConstraint("request_pk", "step", name="uq_erasure_step"),)


def record_step(session: Session, request_pk: int, step: str, status: str, detail: str = "") -> None:
    """Create or update one step of an erasure request."""
    row = session.scalar(
        select(ErasureStep).where(ErasureStep.request_pk == request_pk, ErasureStep.step == step)
    )
    if row is None:
        row = ErasureStep(request_pk=request_pk, step=step[:80])
        session.add(row)
    row.status, row.detail, row.updated_at = status, detail[:4000], utcnow()
    session.flush()


def erasure_status(session: Session, request_pk: int) -> dict[str, object]:
    """The request and its steps (no patient identifier: the request is named by its number)."""
    request = session.get(ErasureRequest, request_pk)
    if request is None:
        raise NotFound("no such erasure request")
    steps = session.scalars(
        select(ErasureStep).where(ErasureStep.request_pk == request_pk).order_by(ErasureStep.step_pk)
    ).all()
    done = bool(steps) and all(step.status == "done" for step in steps)
    failed = any(step.status == "failed" for step in steps)
    return {
        "id": request.request_pk,
        "requested_at": request.created_at.isoformat() + "Z",
        "status": "failed" if failed else "done" if done else "pending",
        "steps": [
            {
                "step": s.step,
                "status": s.status,
                "detail": s.detail,
                "updated_at": s.updated_at.isoformat() + "Z",
            }
            for s in steps
        ],
    }


def withdraw_consent(
    session: Session, patient_id: str, issuer: str = "", *, source: str = "api", user: str = "system"
) -> ErasureRequest:
    """A withdrawal of consent with erasure (GDPR Art. 17): an opt-out (no future use) plus the erasure of
    the copies already made, which the features carry out on ConsentWithdrawn. Audited; returns the
    request, whose steps record the outcome."""
    opt_out(session, patient_id, issuer, source=source, user=user)
    request = ErasureRequest(PatientID=patient_id, IssuerOfPatientID=issuer, source=source, requested_by=user)
    session.add(request)
    session.flush()
    audit.record(
        session,
        audit.AuditEvent.PATIENT_RECORD,
        user=user,
        action="D",
        source=source,
        patient_ref=f"erasure:{request.request_pk}",
        detail="consent withdrawn with erasure (GDPR Art. 17): secondary-use copies to be erased",
    )
    publish(session, ConsentWithdrawn(patient_id, issuer, user, request.request_pk))
    return request


def opt_out(
    session: Session, patient_id: str, issuer: str = "", *, source: str = "api", user: str = "system"
) -> bool:
    """Record an opt-out (audited) and publish PatientOptedOut, on which subscribers cancel queued work
    (imaging.sharing cancels deliveries); False if it was already recorded (subscribers run all the same)."""
    new = not is_opted_out(session, patient_id, issuer)
    if new:
        row = ConsentOptOut(PatientID=patient_id, IssuerOfPatientID=issuer, source=source)
        session.add(row)
        session.flush()
        _audit(session, row, user, "opt-out recorded")
    publish(session, PatientOptedOut(patient_id, issuer, user))
    return new


def revoke_opt_out(session: Session, patient_id: str, issuer: str = "", *, user: str = "system") -> bool:
    """Take an opt-out back: the patient consents to secondary use again (nothing erased is restored)."""
    row = session.scalar(
        select(ConsentOptOut).where(
            ConsentOptOut.PatientID == patient_id, ConsentOptOut.IssuerOfPatientID == issuer
        )
    )
    if row is None:
        return False
    _audit(session, row, user, "opt-out revoked (consent given again)")
    session.execute(delete(ConsentOptOut).where(ConsentOptOut.optout_pk == row.optout_pk))
    return True


withdraw_opt_out = revoke_opt_out  # the former, ambiguous name (it never erased anything)


def _audit(session: Session, row: ConsentOptOut, user: str, what: str) -> None:
    """PS3.15 A.5.3.9 Patient Record (110110), action U; the patient by registry key, never by id or name."""
    audit.record(
        session,
        audit.AuditEvent.PATIENT_RECORD,
        user=user,
        action="U",
        source=row.source,
        patient_ref=f"consent:{row.optout_pk}",
        detail=f"consent registry: {what}",
    )


def is_opted_out(session: Session, patient_id: str, issuer: str = "") -> bool:
    return (
        session.scalar(
            select(ConsentOptOut.optout_pk).where(
                ConsentOptOut.PatientID == patient_id, ConsentOptOut.IssuerOfPatientID == issuer
            )
        )
        is not None
    )


def import_csv(session: Session, path: Path, *, user: str = "system") -> int:
    """Rows `PatientID[,IssuerOfPatientID]` (a header row naming PatientID is skipped); returns new opt-outs."""
    added = 0
    with path.open(newline="", encoding="utf-8") as f:
        rows: Iterable[list[str]] = csv.reader(f)
        for row in rows:
            if not row or not row[0].strip() or row[0].strip() == "PatientID":
                continue
            issuer = row[1].strip() if len(row) > 1 else ""
            added += opt_out(session, row[0].strip(), issuer, source=f"csv:{path.name}", user=user)
    return added


def opt_out_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(ConsentOptOut)) or 0)


def recent_erasures(session: Session, limit: int = 20) -> list[dict[str, object]]:
    """The newest erasure requests with their status and steps (by number: no patient identifier)."""
    newest = session.scalars(
        select(ErasureRequest.request_pk).order_by(ErasureRequest.request_pk.desc()).limit(limit)
    ).all()
    return [erasure_status(session, pk) for pk in newest]
