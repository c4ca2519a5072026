"""`GET /api/worklist`: clinical studies ordered by triage priority (HIGH first) and time, as DICOM JSON with
Scheduled Procedure Step Priority (0074,1200) and Worklist Label (0074,1202); filters by priority, modality
and study date (the web page's worklist reads the same, triage.worklist)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from imaging import audit
from imaging.access import Permission
from imaging.access.http import Caller, Require
from imaging.errors import InvalidRequest
from imaging.index.matching import InvalidMatchKey
from imaging.partition import CLINICAL
from imaging.priority import parse_priorities
from imaging.web import audit_writer, service_root
from triage.worklist import WorklistFilter, worklist

router = APIRouter(tags=["Triage"])


@router.get("/api/worklist", summary="Clinical studies ordered by triage priority")
def get_worklist(
    request: Request,
    caller: Annotated[Caller, Depends(Require(Permission.WORKLIST))],
    priority: Annotated[str, Query(description="comma list, e.g. HIGH,MEDIUM; empty: every study")] = "",
    modality: Annotated[str, Query(max_length=64, description="e.g. CT, or CT\\MR")] = "",
    StudyDate: Annotated[str, Query(max_length=40, description="DICOM date or range, e.g. 20240101-")] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> JSONResponse:
    wanted = WorklistFilter(
        tuple(parse_priorities(p for p in priority.split(",") if p)), modality, StudyDate, limit, offset
    )
    root = service_root(request, CLINICAL)
    try:
        with caller.archive.db.read() as session:
            entries = worklist(session, wanted)
    except InvalidMatchKey as exc:
        raise InvalidRequest(str(exc)) from None
    # The list names patients: a Query of identified data, like QIDO-RS (queued, no index round trip).
    audit_writer(request).submit(
        audit.AuditEvent.QUERY,
        user=caller.user,
        action="E",
        partition=CLINICAL,
        detail=f"worklist?{request.url.query}"[:2000],
        access_point=caller.address,
    )
    items = [
        {
            "00080020": _value("DA", e.StudyDate),
            "00080050": _value("SH", e.AccessionNumber),
            "00080061": _value("CS", *e.ModalitiesInStudy),
            "00081030": _value("LO", e.StudyDescription),
            "00081190": _value("UR", f"{root}/studies/{e.StudyInstanceUID}"),
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": e.PatientName}]}
            if e.PatientName
            else {"vr": "PN"},
            "00100020": _value("LO", e.PatientID),
            "0020000D": _value("UI", e.StudyInstanceUID),
            "00741200": _value("CS", e.priority),
            "00741202": _value("LO", "AI triage" if e.priority else ""),
        }
        for e in entries
    ]
    return JSONResponse(items, media_type="application/dicom+json")


def _value(vr: str, *values: str) -> dict[str, Any]:
    present = [v for v in values if v]
    return {"vr": vr, "Value": present} if present else {"vr": vr}
