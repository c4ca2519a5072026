"""Audit trail (ground layer): one record per access, query, de-identification, publication, export,
transfer and login, after DICOM PS3.15 A.5 (IHE ATNA) event codes; kept in the index, rendered as DICOM
audit messages, exported as JSON lines, XML or RFC 5424 syslog (imaging.audit.syslog). Every domain function
that touches identified data records its own event, so the CLI, REST and DIMSE edges audit alike; hot paths
(QIDO, WADO) queue theirs on an AuditWriter.

    from imaging import audit
    audit.record(session, audit.AuditEvent.QUERY, user="ae:MODALITY", detail="...")
"""

from imaging.audit.messages import export, to_xml
from imaging.audit.records import (
    AUDIT_SOURCE_ID,
    EVENT_NAMES,
    EVENT_TYPE_NAMES,
    AuditCursor,
    AuditEvent,
    AuditRecord,
    Outcome,
    query,
    record,
    to_dict,
)
from imaging.audit.writer import AuditWriter

__all__ = [
    "AUDIT_SOURCE_ID",
    "EVENT_NAMES",
    "EVENT_TYPE_NAMES",
    "AuditCursor",
    "AuditEvent",
    "AuditRecord",
    "AuditWriter",
    "Outcome",
    "export",
    "query",
    "record",
    "to_dict",
    "to_xml",
]
