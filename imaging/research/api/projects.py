"""`/api/projects`: research projects — create (admin), list (a researcher sees their own), publish clinical
studies into one (admin, clinician)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from imaging.access import Permission, Role
from imaging.access.http import Caller, Require
from imaging.errors import ArchiveError, InvalidRequest
from imaging.partition import PARTITION_PATTERN
from imaging.research.projects import create_project, list_projects
from imaging.research.publication import publish_study

router = APIRouter(prefix="/api/projects", tags=["Research projects"])


class ProjectIn(BaseModel):
    name: str = Field(pattern=PARTITION_PATTERN)
    options: list[str] = []
    description: str = ""
    key_hex: str | None = Field(None, description="share pseudonyms with sites holding this key")
    keep_reidentification: bool = False


@router.post("", status_code=201, summary="Create a research project (admin)")
def create(
    body: ProjectIn, caller: Annotated[Caller, Depends(Require(Permission.MANAGE_PROJECTS))]
) -> dict[str, str]:
    try:
        key = bytes.fromhex(body.key_hex) if body.key_hex else None
    except ValueError:
        raise InvalidRequest("key_hex is not hexadecimal") from None
    create_project(
        caller.archive,
        body.name,
        options=body.options,
        description=body.description,
        key=key,
        keep_reidentification=body.keep_reidentification,
    )
    return {"name": body.name}


@router.get("", summary="Research projects")
def projects(caller: Annotated[Caller, Depends(Require(Permission.PROJECTS))]) -> list[dict[str, Any]]:
    sees_all = caller.principal.role in (Role.ADMIN, Role.CLINICIAN)
    with caller.archive.db.read() as session:
        return [
            {"name": p.name, "options": p.options, "description": p.description}
            for p in list_projects(session)
            if sees_all or p.name in caller.principal.projects
        ]


class PublishIn(BaseModel):
    study_uids: list[str] = Field(min_length=1, max_length=1000)


@router.post("/{project}/publish", summary="De-identify clinical studies into the project")
def publish(
    project: str, body: PublishIn, caller: Annotated[Caller, Depends(Require(Permission.PUBLISH))]
) -> list[dict[str, Any]]:
    """One result per study: a study that cannot be published (no such study, opted out) does not stop the
    others."""
    results: list[dict[str, Any]] = []
    for uid in body.study_uids:
        try:
            report = publish_study(caller.archive, project, uid, user=caller.user)
        except ArchiveError as exc:
            results.append(
                {"source": uid, "status": exc.http_status, "error": str(exc) or type(exc).__name__}
            )
            continue
        results.append(
            {
                "source": uid,
                "status": 200,
                "StudyInstanceUID": report.study_uid,
                "published": report.published,
                "quarantined": report.quarantined,
            }
        )
    return results
