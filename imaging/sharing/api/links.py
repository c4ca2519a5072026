"""`/api/share-links`: expiring, revocable read-only DICOMweb roots over chosen studies (like a Kheops album
token). A caller links only studies of a partition they may read: clinicians the clinical one, researchers
their own project."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from imaging.access import Permission, authorize
from imaging.access.http import Caller, Require
from imaging.errors import NotFound
from imaging.partition import CLINICAL
from imaging.sharing import links
from imaging.sharing.models import ShareLink

router = APIRouter(prefix="/api/share-links", tags=["Sharing: links"])
Linker = Annotated[Caller, Depends(Require(Permission.LINK, url_scoped=False))]


class LinkIn(BaseModel):
    study_uids: list[str] = []
    partition: str = CLINICAL
    project: str = ""  # with cohort: the cohort's project
    cohort: str = ""
    # The domain refuses beyond share_link_max_days; NaN and infinities are no number of days.
    expires_in_days: float = Field(default=7, gt=0, le=36500, allow_inf_nan=False)
    description: str = Field(default="", max_length=256)


@router.post("", status_code=201, summary="Create an expiring read-only share link")
def post_link(body: LinkIn, caller: Linker) -> dict[str, Any]:
    partition = body.project if body.cohort else body.partition
    authorize(caller.principal, Permission.LINK, partition)
    token, link = links.create_link(
        caller.archive,
        study_uids=body.study_uids or None,
        cohort=(body.project, body.cohort) if body.cohort else None,
        partition=body.partition,
        expires_in=links.expires_in_days(body.expires_in_days),
        created_by=caller.user,
        description=body.description,
    )
    return {"token": token, "dicomweb": f"/shares/{token}/dicomweb", **links.link_info(link)}


@router.get("", summary="Share links (never their tokens)")
def get_links(
    caller: Annotated[Caller, Depends(Require(Permission.LIST_LINKS))],
    include_inactive: Annotated[bool, Query(alias="all")] = False,
) -> list[dict[str, Any]]:
    with caller.archive.db.read() as session:
        return [
            links.link_info(link) for link in links.list_links(session, include_inactive=include_inactive)
        ]


@router.delete("/{link_id}", summary="Revoke a share link (effective at once)")
def delete_link(link_id: Annotated[int, Path(ge=1, le=2**62)], caller: Linker) -> dict[str, Any]:
    with caller.archive.db.write() as session:
        link = session.get(ShareLink, link_id)
        if link is None:
            raise NotFound("no such share link")
        authorize(caller.principal, Permission.LINK, link.partition)
        return {"revoked": links.revoke(session, link_id, user=caller.user)}
