"""Audit records: one per access, query, de-identification, publication, export, transfer and login,
after DICOM PS3.15 A.5 (IHE ATNA) event codes. Stored in the index (the trail itself, and the durable buffer
of its export to a syslog collector); rendered as DICOM audit messages by imaging.audit.messages.
Records name studies by UID and patients by pseudonym or internal key, never by name; a Query record keeps
the query as sent (ATNA's ParticipantObjectQuery), so the trail is as sensitive as the index, and is never
written to logs."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from imaging.orm import Base, utcnow

AUDIT_SOURCE_ID = "imaging-archive"


class AuditEvent(StrEnum):
    """EventID codes (DCM) of PS3.15 A.5.3."""

    APPLICATION_ACTIVITY = "110100"  # Application Activity (start, stop)
    AUDIT_LOG_USED = "110101"  # Audit Log Used
    BEGIN_TRANSFERRING = "110102"  # Begin Transferring DICOM Instances
    INSTANCES_ACCESSED = "110103"  # DICOM Instances Accessed (incl. de-identification, publication)
    INSTANCES_TRANSFERRED = "110104"  # DICOM Instances Transferred
    STUDY_DELETED = "110105"  # DICOM Study Deleted
    EXPORT = "110106"  # Export
    IMPORT = "110107"  # Import
    NETWORK_ENTRY = "110108"  # Network Entry
    PATIENT_RECORD = "110110"  # Patient Record (e.g. a consent change)
    QUERY = "110112"  # Query
    SECURITY_ALERT = "110113"  # Security Alert
    USER_AUTHENTICATION = "110114"  # User Authentication (login, logout; success or failure)


EVENT_NAMES = {
    AuditEvent.APPLICATION_ACTIVITY: "Application Activity",
    AuditEvent.AUDIT_LOG_USED: "Audit Log Used",
    AuditEvent.BEGIN_TRANSFERRING: "Begin Transferring DICOM Instances",
    AuditEvent.INSTANCES_ACCESSED: "DICOM Instances Accessed",
    AuditEvent.INSTANCES_TRANSFERRED: "DICOM Instances Transferred",
    AuditEvent.STUDY_DELETED: "DICOM Study Deleted",
    AuditEvent.EXPORT: "Export",
    AuditEvent.IMPORT: "Import",
    AuditEvent.NETWORK_ENTRY: "Network Entry",
    AuditEvent.PATIENT_RECORD: "Patient Record",
    AuditEvent.QUERY: "Query",
    AuditEvent.SECURITY_ALERT: "Security Alert",
    AuditEvent.USER_AUTHENTICATION: "User Authentication",
}

# EventTypeCode values (DCM) used with the events above (PS3.15 A.5.3.11, A.5.3.12; PS3.16 CID 402/403).
EVENT_TYPE_NAMES = {
    "110122": "Login",
    "110123": "Logout",
    "110126": "Node Authentication",
    "110129": "Security Configuration",
    "110132": "Use of a restricted function",
    "110135": "Object Security Attributes Changed",
    "110136": "Security Roles Changed",
    "110137": "User security Attributes Changed",
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
    # Issue 12 (revision 0005_identity): the EventTypeCode (e.g. 110122 Login) and the requestor's network
    # address (ActiveParticipant/@NetworkAccessPointID).
    event_type: Mapped[str] = mapped_column(String(16), default="")
    access_point: Mapped[str] = mapped_column(String(64), default="")


class AuditCursor(Base):
    """How far the audit trail has been sent to an export destination (a syslog collector): the index rows
    are the durable buffer, and a collector that was down gets everything after the cursor once back."""

    __tablename__ = "audit_cursor"
    destination: Mapped[str] = mapped_column(String(256), primary_key=True)
    audit_pk: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


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
    event_type: str = "",
    access_point: str = "",
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
        event_type=event_type or _leading_code(detail),
        access_point=access_point[:64],
    )
    session.add(row)
    return row


def _leading_code(detail: str) -> str:
    """An EventTypeCode given as the detail's first word ("110135 Object Security ...")."""
    code = detail[:6]
    return code if code in EVENT_TYPE_NAMES and detail[6:7] in ("", " ") else ""


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
    before_pk: int = 0,
    newest_first: bool = False,
    limit: int = 1000,
) -> list[AuditRecord]:
    """Records in order of creation (newest first with `newest_first`); every filter is exact (times:
    UTC, `since` inclusive, `until` exclusive); page with `after_pk` = the last `audit_pk` seen (or, newest
    first, `before_pk`)."""
    order = AuditRecord.audit_pk.desc() if newest_first else AuditRecord.audit_pk
    stmt = select(AuditRecord).order_by(order)
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
    if before_pk:
        stmt = stmt.where(AuditRecord.audit_pk < before_pk)
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
        "event_type": row.event_type,
        "access_point": row.access_point,
        "created_at": row.created_at.isoformat() + "Z",
    }
