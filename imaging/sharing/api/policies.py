"""`/api/policies`: which stable clinical studies go to which peers, de-identified how (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from imaging.access import Permission
from imaging.access.http import Caller, Require
from imaging.sharing import policies

router = APIRouter(prefix="/api/policies", tags=["Sharing: policies"])
Admin = Annotated[Caller, Depends(Require(Permission.MANAGE_SHARING))]


class PolicyIn(BaseModel):
    description: str = ""
    enabled: bool = True
    modalities: list[str] = []
    body_parts: list[str] = []
    description_regex: str = ""
    priorities: list[str] = []
    peers: list[str]
    project: str = ""
    identified: bool = False


@router.get("", summary="Sharing policies")
def list_policies(caller: Admin) -> list[dict[str, Any]]:
    with caller.archive.db.read() as session:
        return [policies.policy_info(p) for p in policies.list_policies(session)]


@router.put("/{name}", summary="Add or replace a sharing policy")
def put_policy(name: str, body: PolicyIn, caller: Admin) -> dict[str, Any]:
    policy = policies.add_policy(caller.archive, name, user=caller.user, **body.model_dump())
    return policies.policy_info(policy)


@router.delete("/{name}", status_code=204, summary="Remove a sharing policy")
def delete_policy(name: str, caller: Admin) -> None:
    policies.remove_policy(caller.archive, name, user=caller.user)
