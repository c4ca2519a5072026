"""Audit trail: one record per access, query, de-identification, publication, export and transfer,
after DICOM PS3.15 A.5 (IHE ATNA) event codes. Stored in the index; exportable as DICOM audit XML.
Records name studies by UID and patients by pseudonym or internal key, never by name."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from xml.etree import ElementTree as ET

from sqlalchemy import Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from imaging.index.schema import Base, utcnow


class AuditEvent(StrEnum):
    """EventID codes (DCM) of PS3.15 A.5.3."""

    BEGIN_TRANSFERRING = "110100"  # Begin Transferring DICOM Instances
    INSTANCES_TRANSFERRED = "110104"  # DICOM Instances Transferred
    INSTANCES_ACCESSED = "110103"  # DICOM Instances Accessed (incl. de-identification, publication)
    QUERY = "110112"  # Query
    EXPORT = "110106"  # Export
    SECURITY_ALERT = "110113"  # Security Alert


EVENT_NAMES = {
    AuditEvent.BEGIN_TRANSFERRING: "Begin Transferring DICOM Instances",
    AuditEvent.INSTANCES_TRANSFERRED: "DICOM Instances Transferred",
    AuditEvent.INSTANCES_ACCESSED: "DICOM Instances Accessed",
    AuditEvent.QUERY: "Query",
    AuditEvent.EXPORT: "Export",
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
    patient_ref: Mapped[str] = mapped_column(String(128), default="")  # pseudonym or internal key, never a name
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
    session: Session, *, event: AuditEvent | None = None, study_uid: str | None = None, limit: int = 1000
) -> list[AuditRecord]:
    stmt = select(AuditRecord).order_by(AuditRecord.audit_pk)
    if event is not None:
        stmt = stmt.where(AuditRecord.event_id == event.value)
    if study_uid:
        stmt = stmt.where(AuditRecord.StudyInstanceUID == study_uid)
    return list(session.scalars(stmt.limit(limit)))


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
        ET.SubElement(study, "ParticipantObjectIDTypeCode", csd_code="110180", codeSystemName="DCM",
                      originalText="Study Instance UID")
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
        ET.SubElement(patient, "ParticipantObjectIDTypeCode", csd_code="2", codeSystemName="RFC-3881",
                      originalText="Patient Number")
    return ET.tostring(msg, encoding="unicode")
