"""`GET /api/worklist`: clinical studies ordered by triage priority (HIGH first), as DICOM JSON with Scheduled
Procedure Step Priority (0074,1200) and Worklist Label (0074,1202)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import case, select

from imaging.access import Permission
from imaging.access.http import Caller, Require
from imaging.index.schema import Patient, Study
from imaging.partition import CLINICAL
from imaging.priority import RANK, parse_priorities
from imaging.web import service_root

router = APIRouter(tags=["Triage"])

_RANK = case({p: r for p, r in RANK.items() if p}, value=Study.priority, else_=0)


@router.get("/api/worklist", summary="Clinical studies ordered by triage priority")
def worklist(
    request: Request,
    caller: Annotated[Caller, Depends(Require(Permission.WORKLIST))],
    priority: Annotated[str, Query(description="comma list, e.g. HIGH,MEDIUM; empty: every study")] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> JSONResponse:
    wanted = parse_priorities(p for p in priority.split(",") if p)
    stmt = (
        select(Study, Patient)
        .join(Patient, Patient.patient_pk == Study.patient_pk)
        .where(Study.partition == CLINICAL)
        .order_by(_RANK.desc(), Study.StudyDate.desc(), Study.StudyTime.desc(), Study.study_pk)
        .offset(offset)
        .limit(limit)
    )
    if wanted:
        stmt = stmt.where(Study.priority.in_(wanted))
    root = service_root(request, CLINICAL)
    items = []
    with caller.archive.db.read() as session:
        for study, patient in session.execute(stmt):
            items.append(
                {
                    "00080020": _value("DA", study.StudyDate),
                    "00080050": _value("SH", study.AccessionNumber),
                    "00080061": _value("CS", *study.ModalitiesInStudy.split("\\")),
                    "00081030": _value("LO", study.StudyDescription),
                    "00081190": _value("UR", f"{root}/studies/{study.StudyInstanceUID}"),
                    "00100010": {"vr": "PN", "Value": [{"Alphabetic": patient.PatientName}]}
                    if patient.PatientName
                    else {"vr": "PN"},
                    "00100020": _value("LO", patient.PatientID),
                    "0020000D": _value("UI", study.StudyInstanceUID),
                    "00741200": _value("CS", study.priority),
                    "00741202": _value("LO", "AI triage" if study.priority else ""),
                }
            )
    return JSONResponse(items, media_type="application/dicom+json")


def _value(vr: str, *values: str) -> dict[str, Any]:
    present = [v for v in values if v]
    return {"vr": vr, "Value": present} if present else {"vr": vr}
