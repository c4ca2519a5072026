"""Audit records: one per access, query, de-identification, publication, export and transfer,
after DICOM PS3.15 A.5 (IHE ATNA) event codes. Stored in the index; exportable as DICOM audit XML.
Records name studies by UID and patients by pseudonym or internal key, never by name."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from enum import StrEnum
from typing import Any
from xml.etree import ElementTree as ET

from sqlalchemy import Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from imaging.orm import Base, utcnow


class AuditEvent(StrEnum):
    """EventID codes (DCM) of PS3.15 A.5.3."""

    BEGIN_TRANSFERRING = "110102"  # Begin Transferring DICOM Instances
    INSTANCES_TRANSFERRED = "110104"  # DICOM Instances Transferred
    INSTANCES_ACCESSED = "110103"  # DICOM Instances Accessed (incl. de-identification, publication)
    QUERY = "110112"  # Query
    EXPORT = "110106"  # Export
    PATIENT_RECORD = "110110"  # Patient Record (e.g. a consent change)
    SECURITY_ALERT = "110113"  # Security Alert


EVENT_NAMES = {
    AuditEvent.BEGIN_TRANSFERRING: "Begin Transferring DICOM Instances",
    AuditEvent.INSTANCES_TRANSFERRED: "DICOM Instances Transferred",
    AuditEvent.INSTANCES_ACCESSED: "DICOM Instances Accessed",
    AuditEvent.QUERY: "Query",
    AuditEvent.EXPORT: "Export",
    AuditEvent.PATIENT_RECORD: "Patient Record",
    AuditEvent.SECURITY_ALERT: "Security Alert",
}


class Outcome(StrEnum):
    SUCCESS = "0"
    MINOR_FAILURE = "4"
    SERIOUS_FAILURE = "8"
    MAJOR_FAILURE = "12"


class AuditRecord(Base):
    __tablename__ = "audit_record"
    audit_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(16), index=True)
    action: Mapped[str] = mapped_column(String(1))  # C R U D E (PS3.15 EventActionCode)
    outcome: Mapped[str] = mapped_column(String(2))
    user: Mapped[str] = mapped_column(String(128))  # token description/role, AE title, or "system"
    source: Mapped[str] = mapped_column(String(128), default="")  # where it came from / went to
    partition: Mapped[str] = mapped_column(String(64), default="")
    StudyInstanceUID: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_ref: Mapped[str] = mapped_column(
        String(128), default=""
    )  # pseudonym or internal key, never a name
    detail: Mapped[str] = mapped_column(Text, default="")  # what: profile, table edition, query keys...
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


def record(
    session: Session,
    event: AuditEvent,
    *,
    user: str,
    action: str = "R",
    outcome: Outcome = Outcome.SUCCESS,
    source: str = "",
    partition: str = "",
    study_uid: str = "",
    patient_ref: str = "",
    detail: str = "",
) -> AuditRecord:
    row = AuditRecord(
        event_id=event.value,
        action=action,
        outcome=outcome.value,
        user=user,
        source=source,
        partition=partition,
        StudyInstanceUID=study_uid,
        patient_ref=patient_ref,
        detail=detail[:4000],
    )
    session.add(row)
    return row


def query(
    session: Session,
    *,
    event: AuditEvent | str | None = None,
    study_uid: str | None = None,
    user: str | None = None,
    source: str | None = None,
    partition: str | None = None,
    patient_ref: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    after_pk: int = 0,
    limit: int = 1000,
) -> list[AuditRecord]:
    """Records in order of creation; every filter is exact (times: UTC, `since` inclusive, `until`
    exclusive); page with `after_pk` = the last `audit_pk` seen."""
    stmt = select(AuditRecord).order_by(AuditRecord.audit_pk)
    if event is not None:
        stmt = stmt.where(AuditRecord.event_id == AuditEvent(event).value)
    if study_uid:
        stmt = stmt.where(AuditRecord.StudyInstanceUID == study_uid)
    if user:
        stmt = stmt.where(AuditRecord.user == user)
    if source:
        stmt = stmt.where(AuditRecord.source == source)
    if partition:
        stmt = stmt.where(AuditRecord.partition == partition)
    if patient_ref:
        stmt = stmt.where(AuditRecord.patient_ref == patient_ref)
    if since is not None:
        stmt = stmt.where(AuditRecord.created_at >= since)
    if until is not None:
        stmt = stmt.where(AuditRecord.created_at < until)
    if after_pk:
        stmt = stmt.where(AuditRecord.audit_pk > after_pk)
    return list(session.scalars(stmt.limit(limit)))


def to_dict(row: AuditRecord) -> dict[str, Any]:
    """The record as JSON-ready data (what the API and the JSON-lines export return)."""
    return {
        "id": row.audit_pk,
        "event_id": row.event_id,
        "event": EVENT_NAMES.get(AuditEvent(row.event_id), row.event_id),
        "action": row.action,
        "outcome": row.outcome,
        "user": row.user,
        "source": row.source,
        "partition": row.partition,
        "StudyInstanceUID": row.StudyInstanceUID,
        "patient_ref": row.patient_ref,
        "detail": row.detail,
        "created_at": row.created_at.isoformat() + "Z",
    }


def export(session: Session, fmt: str = "jsonl", *, batch: int = 1000, **filters: Any) -> Iterator[str]:
    """Every matching record, one line each: JSON lines (`jsonl`) or one DICOM audit message per line
    (`xml`). Reads in batches, so it streams a large trail."""
    if fmt not in ("jsonl", "xml"):
        raise ValueError("format is jsonl or xml")
    after = int(filters.pop("after_pk", 0) or 0)
    filters.pop("limit", None)
    while True:
        rows = query(session, after_pk=after, limit=batch, **filters)
        for row in rows:
            yield (json.dumps(to_dict(row)) if fmt == "jsonl" else to_xml(row)) + "\n"
        if len(rows) < batch:
            return
        after = rows[-1].audit_pk


def to_xml(row: AuditRecord) -> str:
    """The record as a DICOM audit message (PS3.15 A.5.1 schema)."""
    msg = ET.Element("AuditMessage")
    ev = ET.SubElement(
        msg,
        "EventIdentification",
        EventActionCode=row.action,
        EventDateTime=row.created_at.isoformat() + "Z",
        EventOutcomeIndicator=row.outcome,
    )
    name = EVENT_NAMES.get(AuditEvent(row.event_id), row.event_id)
    ET.SubElement(ev, "EventID", csd_code=row.event_id, codeSystemName="DCM", originalText=name)
    ET.SubElement(msg, "ActiveParticipant", UserID=row.user, UserIsRequestor="true")
    if row.source:
        ET.SubElement(msg, "ActiveParticipant", UserID=row.source, UserIsRequestor="false")
    ET.SubElement(msg, "AuditSourceIdentification", AuditSourceID="imaging-archive")
    if row.StudyInstanceUID:
        study = ET.SubElement(
            msg,
            "ParticipantObjectIdentification",
            ParticipantObjectID=row.StudyInstanceUID,
            ParticipantObjectTypeCode="2",
            ParticipantObjectTypeCodeRole="3",
        )
        ET.SubElement(
            study,
            "ParticipantObjectIDTypeCode",
            csd_code="110180",
            codeSystemName="DCM",
            originalText="Study Instance UID",
        )
        if row.detail:
            ET.SubElement(study, "ParticipantObjectDetail", type="detail", value=row.detail)
    if row.patient_ref:
        patient = ET.SubElement(
            msg,
            "ParticipantObjectIdentification",
            ParticipantObjectID=row.patient_ref,
            ParticipantObjectTypeCode="1",
            ParticipantObjectTypeCodeRole="1",
        )
        ET.SubElement(
            patient,
            "ParticipantObjectIDTypeCode",
            csd_code="2",
            codeSystemName="RFC-3881",
            originalText="Patient Number",
        )
    return ET.tostring(msg, encoding="unicode")
