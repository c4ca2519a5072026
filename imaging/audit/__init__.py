"""Audit trail (ground layer): one record per access, query, de-identification, publication, export and
transfer, after DICOM PS3.15 A.5 (IHE ATNA) event codes; kept in the index, exported as JSON lines or DICOM
audit XML. Every domain function that touches identified data records its own event, so the CLI, REST and
DIMSE edges audit alike.

    from imaging import audit
    audit.record(session, audit.AuditEvent.QUERY, user="ae:MODALITY", detail="...")
"""

from imaging.audit.records import (
    EVENT_NAMES,
    AuditEvent,
    AuditRecord,
    Outcome,
    export,
    query,
    record,
    to_dict,
    to_xml,
)

__all__ = [
    "EVENT_NAMES",
    "AuditEvent",
    "AuditRecord",
    "Outcome",
    "export",
    "query",
    "record",
    "to_dict",
    "to_xml",
]
