"""`/projects/{project}/cohorts`: a project's cohorts — save, list, manifest, streamed zip (researchers of the
project, admins)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from imaging.access import Permission
from imaging.access.http import Caller, Require
from imaging.research.cohorts import export_audit, list_cohorts, manifest, save_cohort, stream_zip

router = APIRouter(prefix="/projects/{project}/cohorts", tags=["Cohorts"])
ProjectCaller = Annotated[Caller, Depends(Require(Permission.COHORTS))]


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


@router.get("/{name}/zip", summary="The cohort as a streamed zip (resumable)")
def cohort_zip(
    project: str,
    name: str,
    caller: ProjectCaller,
    start_after: Annotated[str, Query(max_length=64, pattern=r"^[0-9.]*$")] = "",
) -> StreamingResponse:
    m = manifest(caller.archive, project, name)
    export_audit(caller.archive, m, user=caller.user, start_after=start_after)
    headers = {"Content-Disposition": f'attachment; filename="{project}-{name}.zip"'}
    return StreamingResponse(
        stream_zip(caller.archive, m, start_after=start_after), media_type="application/zip", headers=headers
    )
