"""Audit records as DICOM audit messages (PS3.15 A.5.1 schema; the IHE ATNA form), and the trail's export.

A message holds: EventIdentification (EventID, EventTypeCode for logins and security alerts, action, time,
outcome); the requesting ActiveParticipant (the user, with their network address) and the archive as the
other participant (source or destination, by event); AuditSourceIdentification; and the participant
objects — the study (Study Instance UID), the patient (a pseudonym or internal key, never a name) and, for a
Query, the query itself (ParticipantObjectQuery, base64, with the SOP class of the query model).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree as ET

from sqlalchemy.orm import Session

from imaging.audit.records import (
    AUDIT_SOURCE_ID,
    EVENT_NAMES,
    EVENT_TYPE_NAMES,
    AuditEvent,
    AuditRecord,
    query,
    to_dict,
)

# Study Root Query/Retrieve Information Model - FIND: the query model QIDO-RS and C-FIND share.
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
# Events where the archive is where data goes (the requestor is the source): the rest it sends or serves.
_ARCHIVE_IS_DESTINATION = {AuditEvent.IMPORT, AuditEvent.INSTANCES_TRANSFERRED}


def _code(parent: ET.Element, tag: str, code: str, meaning: str, scheme: str = "DCM") -> None:
    ET.SubElement(parent, tag, {"csd-code": code, "codeSystemName": scheme, "originalText": meaning})


def to_xml(row: AuditRecord, source_id: str = AUDIT_SOURCE_ID) -> str:
    """The record as one DICOM audit message."""
    event = AuditEvent(row.event_id)
    msg = ET.Element("AuditMessage")
    ident = ET.SubElement(
        msg,
        "EventIdentification",
        EventActionCode=row.action,
        EventDateTime=row.created_at.isoformat() + "Z",
        EventOutcomeIndicator=row.outcome,
    )
    _code(ident, "EventID", event.value, EVENT_NAMES.get(event, event.value))
    if row.event_type:
        _code(ident, "EventTypeCode", row.event_type, EVENT_TYPE_NAMES.get(row.event_type, row.event_type))
    # The requestor: a user (token, OpenID subject, share link), an AE title, or the archive itself.
    requestor = {"UserID": row.user or "unknown", "UserIsRequestor": "true"}
    if row.access_point:
        requestor.update(NetworkAccessPointID=row.access_point, NetworkAccessPointTypeCode="2")
    archive_is_destination = event in _ARCHIVE_IS_DESTINATION and row.action == "C"
    user = ET.SubElement(msg, "ActiveParticipant", requestor)
    if event in (AuditEvent.INSTANCES_TRANSFERRED, AuditEvent.BEGIN_TRANSFERRING, AuditEvent.QUERY):
        if archive_is_destination:
            _code(user, "RoleIDCode", "110153", "Source Role ID")
        else:
            _code(user, "RoleIDCode", "110152", "Destination Role ID")
    archive = ET.SubElement(msg, "ActiveParticipant", UserID=source_id, UserIsRequestor="false")
    if event in (AuditEvent.INSTANCES_TRANSFERRED, AuditEvent.BEGIN_TRANSFERRING, AuditEvent.QUERY):
        if archive_is_destination:
            _code(archive, "RoleIDCode", "110152", "Destination Role ID")
        else:
            _code(archive, "RoleIDCode", "110153", "Source Role ID")
    if row.source and row.source != row.access_point:
        ET.SubElement(msg, "ActiveParticipant", UserID=row.source, UserIsRequestor="false")
    audit_source = ET.SubElement(msg, "AuditSourceIdentification", AuditSourceID=source_id)
    _code(audit_source, "AuditSourceTypeCode", "4", "Application Server Process Tier")
    if row.StudyInstanceUID:
        study = ET.SubElement(
            msg,
            "ParticipantObjectIdentification",
            ParticipantObjectID=row.StudyInstanceUID,
            ParticipantObjectTypeCode="2",
            ParticipantObjectTypeCodeRole="3",
        )
        _code(study, "ParticipantObjectIDTypeCode", "110180", "Study Instance UID")
        if row.detail and event is not AuditEvent.QUERY:
            ET.SubElement(study, "ParticipantObjectDetail", type="detail", value=_b64(row.detail))
    if event is AuditEvent.QUERY and row.detail:
        query_object = ET.SubElement(
            msg,
            "ParticipantObjectIdentification",
            ParticipantObjectID=STUDY_ROOT_FIND,
            ParticipantObjectTypeCode="2",
            ParticipantObjectTypeCodeRole="24",
        )
        _code(query_object, "ParticipantObjectIDTypeCode", "110181", "SOP Class UID")
        ET.SubElement(query_object, "ParticipantObjectQuery").text = _b64(row.detail)
    if row.patient_ref:
        patient = ET.SubElement(
            msg,
            "ParticipantObjectIdentification",
            ParticipantObjectID=row.patient_ref,
            ParticipantObjectTypeCode="1",
            ParticipantObjectTypeCodeRole="1",
        )
        _code(patient, "ParticipantObjectIDTypeCode", "2", "Patient Number", "RFC-3881")
    if not (row.StudyInstanceUID or row.patient_ref or event is AuditEvent.QUERY) and row.detail:
        # Security alerts, logins, exports: what happened, as the alert's description.
        what = ET.SubElement(
            msg,
            "ParticipantObjectIdentification",
            ParticipantObjectID=row.source or row.partition or source_id,
            ParticipantObjectTypeCode="2",
            ParticipantObjectTypeCodeRole="13",
        )
        _code(what, "ParticipantObjectIDTypeCode", "12", "URI", "RFC-3881")
        ET.SubElement(what, "ParticipantObjectDetail", type="Alert Description", value=_b64(row.detail))
    return ET.tostring(msg, encoding="unicode")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def export(
    session: Session,
    fmt: str = "jsonl",
    *,
    batch: int = 1000,
    source_id: str = AUDIT_SOURCE_ID,
    **filters: Any,
) -> Iterator[str]:
    """Every matching record, one line each: JSON lines (`jsonl`) or one DICOM audit message per line
    (`xml`). Reads in batches, so it streams a large trail."""
    if fmt not in ("jsonl", "xml"):
        raise ValueError("format is jsonl or xml")
    after = int(filters.pop("after_pk", 0) or 0)
    filters.pop("limit", None)
    while True:
        rows = query(session, after_pk=after, limit=batch, **filters)
        for row in rows:
            yield (json.dumps(to_dict(row)) if fmt == "jsonl" else to_xml(row, source_id)) + "\n"
        if len(rows) < batch:
            return
        after = rows[-1].audit_pk
