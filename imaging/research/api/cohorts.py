"""`/projects/{project}/cohorts`: a project's cohorts — save, list, manifest, streamed zip (researchers of the
project, admins); `/projects/{project}/cohort-preview` counts what filters would select before saving, and
`/projects/{project}/exports` lists the caller's own exports of the project with their progress."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from imaging.access import Permission
from imaging.access.http import Caller, Require
from imaging.research.cohorts import FILTER_KEYS, list_cohorts, manifest, preview, save_cohort
from imaging.research.exports import (
    begin_export,
    export_audit_trail,
    export_info,
    get_export,
    list_exports,
    stream_export,
)

router = APIRouter(prefix="/projects/{project}/cohorts", tags=["Cohorts"])
project_router = APIRouter(prefix="/projects/{project}", tags=["Cohorts"])
ProjectCaller = Annotated[Caller, Depends(Require(Permission.COHORTS))]
PriorityFloor = Annotated[str, Query(pattern=r"^(|HIGH|MEDIUM|LOW)$")]
FilterValue = Annotated[str, Query(max_length=256)]


class CohortIn(BaseModel):
    filters: dict[str, str] = {}
    min_priority: str = Field("", pattern=r"^(|HIGH|MEDIUM|LOW)$")


@router.put("/{name}", summary="Save a cohort (a query inside the project)")
def save(project: str, name: str, body: CohortIn, caller: ProjectCaller) -> dict[str, str]:
    save_cohort(caller.archive, project, name, body.filters, body.min_priority)
    return {"project": project, "name": name}


@router.get("", summary="Cohorts of a project")
def cohorts(project: str, caller: ProjectCaller) -> list[dict[str, Any]]:
    with caller.archive.db.read() as session:
        return [
            {"name": c.name, "filters": c.filters, "min_priority": c.min_priority}
            for c in list_cohorts(session, project)
        ]


@router.get("/{name}/manifest", summary="Series, counts, sizes and SHA-256")
def cohort_manifest(project: str, name: str, caller: ProjectCaller) -> Response:
    return Response(manifest(caller.archive, project, name).to_json(), media_type="application/json")


@router.get("/{name}/zip", summary="The cohort as a streamed zip (resumable), its progress recorded")
def cohort_zip(
    project: str,
    name: str,
    caller: ProjectCaller,
    start_after: Annotated[str, Query(max_length=64, pattern=r"^[0-9.]*$")] = "",
    export: Annotated[int, Query(ge=0, le=2**62, description="a prepared export to fill")] = 0,
) -> StreamingResponse:
    export_pk, m = begin_export(
        caller.archive, project, name, user=caller.user, start_after=start_after, export_pk=export
    )
    headers = {"Content-Disposition": f'attachment; filename="{project}-{name}.zip"'}
    return StreamingResponse(
        stream_export(caller.archive, export_pk, m, start_after=start_after),
        media_type="application/zip",
        headers=headers,
    )


@project_router.get("/cohort-preview", summary="What filters would select: counts and a few series")
def cohort_preview(
    project: str,
    caller: ProjectCaller,
    Modality: FilterValue = "",
    BodyPartExamined: FilterValue = "",
    StudyDate: FilterValue = "",
    SeriesDescription: FilterValue = "",
    StudyDescription: FilterValue = "",
    min_priority: PriorityFloor = "",
) -> dict[str, Any]:
    values = dict(
        zip(
            FILTER_KEYS,
            (Modality, BodyPartExamined, StudyDate, SeriesDescription, StudyDescription),
            strict=True,
        )
    )
    with caller.archive.db.read() as session:
        found = preview(session, project, values, min_priority)
    return {
        "studies": found.studies,
        "series": found.series,
        "instances": found.instances,
        "size": found.size,
        "sample": [
            {
                "StudyInstanceUID": s.StudyInstanceUID,
                "SeriesInstanceUID": s.SeriesInstanceUID,
                "Modality": s.Modality,
                "SeriesDescription": s.SeriesDescription,
                "count": s.count,
            }
            for s in found.sample
        ],
    }


@project_router.get("/exports", summary="Your exports of the project, with their progress")
def exports(project: str, caller: ProjectCaller) -> list[dict[str, Any]]:
    with caller.archive.db.read() as session:
        return [export_info(row) for row in list_exports(session, project, user=caller.user)]


@project_router.get("/export-audit", summary="The audit trail of your exports of the project")
def export_audit(project: str, caller: ProjectCaller) -> list[dict[str, Any]]:
    with caller.archive.db.read() as session:
        return export_audit_trail(session, project, user=caller.user)


@project_router.get("/exports/{export_id}", summary="One of your exports: how far it got")
def export(
    project: str, export_id: Annotated[int, Path(ge=1, le=2**62)], caller: ProjectCaller
) -> dict[str, Any]:
    with caller.archive.db.read() as session:
        return export_info(get_export(session, export_id, project=project, user=caller.user))
