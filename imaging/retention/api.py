"""HTTP routes of the retention feature (administrators only).

* dcm4chee-style DICOMweb DELETE on the clinical root and on each project root:
  `DELETE /dicomweb/studies/{study}`, `.../series/{series}`, `.../series/{series}/instances/{sop}` (and
  `/projects/{project}/dicomweb/...`): 204 when deleted, 404 when nothing matched. Deleting a study also
  deletes its instances that a rejection note hid and that wait for their title's delay.
* `POST /api/deletions`: the same with a JSON report (instances, studies, objects and bytes reclaimed).
* `/api/retention/rules`: list, set (PUT), remove; `GET .../{name}/preview` what the rule would delete now;
  `POST .../{name}/run` apply it now.
* `GET /api/retention/pending`: objects waiting for deletion, per reason.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from imaging.access import Permission
from imaging.access.http import Caller, Require
from imaging.index.removal import PendingDeletion
from imaging.partition import CLINICAL
from imaging.retention import deletion, rules

Deleter = Annotated[Caller, Depends(Require(Permission.DELETE))]
Keeper = Annotated[Caller, Depends(Require(Permission.RETENTION))]

dicomweb_router = APIRouter(tags=["DICOMweb: delete"])
router = APIRouter(prefix="/api", tags=["Retention"])


def _deleted(caller: Caller, study: str, series: str | None = None, sop: str | None = None) -> Response:
    deletion.delete(caller.archive, caller.partition, study, series, sop, user=caller.user)
    return Response(status_code=204)


for root in ("/dicomweb", "/projects/{project}/dicomweb"):

    @dicomweb_router.delete(f"{root}/studies/{{study}}", status_code=204, summary="Delete a study")
    def delete_study(study: str, caller: Deleter) -> Response:
        return _deleted(caller, study)

    @dicomweb_router.delete(
        f"{root}/studies/{{study}}/series/{{series}}", status_code=204, summary="Delete a series"
    )
    def delete_series(study: str, series: str, caller: Deleter) -> Response:
        return _deleted(caller, study, series)

    @dicomweb_router.delete(
        f"{root}/studies/{{study}}/series/{{series}}/instances/{{sop}}",
        status_code=204,
        summary="Delete an instance",
    )
    def delete_instance(study: str, series: str, sop: str, caller: Deleter) -> Response:
        return _deleted(caller, study, series, sop)


class DeletionIn(BaseModel):
    partition: str = Field(default=CLINICAL, max_length=64)
    StudyInstanceUID: str = Field(max_length=64)
    SeriesInstanceUID: str | None = Field(default=None, max_length=64)
    SOPInstanceUID: str | None = Field(default=None, max_length=64)


@router.post("/deletions", summary="Delete a study, series or instance; report what was reclaimed")
def post_deletion(body: DeletionIn, caller: Deleter) -> dict[str, Any]:
    report = deletion.delete(
        caller.archive,
        body.partition,
        body.StudyInstanceUID,
        body.SeriesInstanceUID,
        body.SOPInstanceUID,
        user=caller.user,
    )
    return {
        "instances": report.instances,
        "studies": report.studies,
        "objects_deleted": report.objects_deleted,
        "bytes": report.bytes,
    }


class RuleIn(BaseModel):
    partition: str = Field(default=CLINICAL, max_length=64)
    modalities: list[str] = Field(default_factory=list, max_length=64)
    received_days: float | None = Field(default=None, ge=0)
    accessed_days: float | None = Field(default=None, ge=0)
    enabled: bool = True
    description: str = Field(default="", max_length=256)


@router.get("/retention/rules", summary="Retention rules")
def list_rules(caller: Keeper) -> list[dict[str, Any]]:
    with caller.archive.db.read() as session:
        return [rules.rule_info(r) for r in rules.list_rules(session)]


@router.put("/retention/rules/{name}", summary="Add or replace a retention rule")
def put_rule(name: str, body: RuleIn, caller: Keeper) -> dict[str, Any]:
    rule = rules.set_rule(caller.archive, name, user=caller.user, **body.model_dump())
    return rules.rule_info(rule)


@router.delete("/retention/rules/{name}", status_code=204, summary="Remove a retention rule")
def delete_rule(name: str, caller: Keeper) -> None:
    rules.remove_rule(caller.archive, name)


@router.get("/retention/rules/{name}/preview", summary="What the rule would delete now")
def preview_rule(name: str, caller: Keeper) -> dict[str, Any]:
    return rules.preview(caller.archive, name).to_dict()


@router.post("/retention/rules/{name}/run", summary="Apply the rule now; what it deleted")
def run_rule(name: str, caller: Keeper) -> dict[str, Any]:
    return rules.apply(caller.archive, name, user=caller.user).to_dict()


@router.get("/retention/pending", summary="Objects waiting for deletion, per reason")
def pending(caller: Keeper) -> dict[str, int]:
    with caller.archive.db.read() as session:
        rows = session.execute(
            select(PendingDeletion.reason, func.count()).group_by(PendingDeletion.reason)
        ).all()
    return {reason: int(count) for reason, count in rows}


routers = (dicomweb_router, router)
