"""`GET /api/triage/studies/{study}`: a clinical study's triage outcome per series (priority, findings in
patient coordinates (LPS, mm), the SR and SEG filed back, timings)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import select

from imaging.access import Permission
from imaging.access.http import Caller, Require
from imaging.errors import NotFound
from imaging.index.schema import Study
from imaging.partition import CLINICAL
from triage.records import study_outcomes

router = APIRouter(tags=["Triage"])


@router.get("/api/triage/studies/{study}", summary="Triage findings of a study")
def triage_results(
    study: str, caller: Annotated[Caller, Depends(Require(Permission.WORKLIST))]
) -> dict[str, Any]:
    with caller.archive.db.read() as session:
        row = session.scalar(
            select(Study).where(Study.partition == CLINICAL, Study.StudyInstanceUID == study)
        )
        if row is None:
            raise NotFound("no such study")
        return {
            "StudyInstanceUID": study,
            "priority": row.priority,
            "series": [
                {
                    "SeriesInstanceUID": o.SeriesInstanceUID,
                    "bundle_version": o.bundle_version,
                    "selected": o.selected,
                    "status": o.status,
                    "error": o.error,
                    "priority": o.priority,
                    "findings": o.findings,
                    "sr_sop_instance_uid": o.sr_sop_instance_uid,
                    "seg_sop_instance_uid": o.seg_sop_instance_uid,
                    "timings": o.timings,
                }
                for o in study_outcomes(session, study)
            ],
        }
