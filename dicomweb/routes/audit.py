"""`GET /api/audit`: the audit trail (PS3.15 A.5 event codes) as JSON, JSON lines or DICOM audit XML (admin)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from imaging import audit
from imaging.access import Permission
from imaging.access.http import Caller, Require
from imaging.errors import InvalidRequest

router = APIRouter(prefix="/api/audit", tags=["Audit"])


@router.get("", summary="Audit trail (PS3.15 A.5 event codes): JSON, JSON lines or DICOM audit XML")
def get_audit(
    caller: Annotated[Caller, Depends(Require(Permission.AUDIT))],
    event: Annotated[str | None, Query(description="EventID code, e.g. 110104")] = None,
    study_uid: str | None = None,
    user: str | None = None,
    source: str | None = None,
    partition: str | None = None,
    patient_ref: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    after: Annotated[int, Query(ge=0, le=2**62, description="page: records after this id")] = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
    format: Annotated[str, Query(pattern="^(json|jsonl|xml)$")] = "json",
) -> Any:
    filters: dict[str, Any] = {
        "event": event, "study_uid": study_uid, "user": user, "source": source, "partition": partition,
        "patient_ref": patient_ref, "since": _naive(since), "until": _naive(until),
    }  # fmt: skip
    if event is not None and event not in {e.value for e in audit.AuditEvent}:
        raise InvalidRequest("unknown event code")
    if format == "json":
        with caller.archive.db.read() as session:
            return [audit.to_dict(r) for r in audit.query(session, after_pk=after, limit=limit, **filters)]

    def lines() -> Iterator[bytes]:
        with caller.archive.db.read() as session:
            for line in audit.export(session, format, after_pk=after, **filters):
                yield line.encode()

    media = "application/x-ndjson" if format == "jsonl" else "application/xml"
    return StreamingResponse(lines(), media_type=media)


def _naive(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is None:
        return value
    try:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    except OverflowError:  # 9999-12-31T23:59-14:00 is no UTC date (found by tests/fuzz/http)
        raise InvalidRequest("time out of range") from None
