"""`/api/tokens`: API tokens for PACS and scripts (admin): create (the token is shown once), list (never
the tokens), revoke. The same domain functions as `imaging token ...`, so both validate and audit alike."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from imaging.access import Permission
from imaging.access.http import Caller, Require
from imaging.access.tokens import create_token, list_tokens, parse_expiry, revoke_token, token_info

router = APIRouter(prefix="/api/tokens", tags=["Tokens"])
Admin = Annotated[Caller, Depends(Require(Permission.MANAGE_TOKENS))]


class TokenIn(BaseModel):
    role: str = Field(max_length=16)
    project: str = Field(default="", max_length=64)
    description: str = Field(default="", max_length=256)
    expires: str = Field(default="365d", max_length=40, description="90d, 12h, 30m, an ISO date, or never")


@router.post("", status_code=201, summary="Create an API token (shown once)")
def post_token(body: TokenIn, caller: Admin) -> dict[str, Any]:
    token, row = create_token(
        caller.archive.db,
        role=body.role,
        project=body.project,
        description=body.description,
        expires_at=parse_expiry(body.expires),
        created_by=caller.user,
    )
    return {"token": token, **token_info(row)}


@router.get("", summary="API tokens (never the tokens themselves)")
def get_tokens(
    caller: Admin, include_inactive: Annotated[bool, Query(alias="all")] = False
) -> list[dict[str, Any]]:
    with caller.archive.db.read() as session:
        return [token_info(t) for t in list_tokens(session, include_inactive=include_inactive)]


@router.delete("/{token_id}", summary="Revoke an API token (effective at once)")
def delete_token(token_id: Annotated[int, Path(ge=1, le=2**62)], caller: Admin) -> dict[str, Any]:
    return {"revoked": revoke_token(caller.archive.db, token_id, user=caller.user)}
