"""Consent registry: patients who opted out of secondary use. An opted-out patient is never published to
a research project nor shared, and an opt-out stops deliveries already queued (through PatientOptedOut).

Patients are keyed by (PatientID, IssuerOfPatientID) of the clinical partition; the registry lives in the
index beside the clinical data it governs."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Integer, String, UniqueConstraint, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from imaging import audit
from imaging.events import PatientOptedOut, publish
from imaging.orm import Base, utcnow


class ConsentOptOut(Base):
    __tablename__ = "consent_opt_out"
    optout_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    PatientID: Mapped[str] = mapped_column(String(64))
    IssuerOfPatientID: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(64), default="")  # api | cli | csv:<file name>
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    __table_args__ = (UniqueConstraint("PatientID", "IssuerOfPatientID", name="uq_consent_patient"),)


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


def withdraw_opt_out(session: Session, patient_id: str, issuer: str = "", *, user: str = "system") -> bool:
    row = session.scalar(
        select(ConsentOptOut).where(
            ConsentOptOut.PatientID == patient_id, ConsentOptOut.IssuerOfPatientID == issuer
        )
    )
    if row is None:
        return False
    _audit(session, row, user, "opt-out withdrawn")
    session.execute(delete(ConsentOptOut).where(ConsentOptOut.optout_pk == row.optout_pk))
    return True


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
