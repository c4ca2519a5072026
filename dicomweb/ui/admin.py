"""The administrator's pages for API tokens and the audit trail, on the same domain functions as
`/api/tokens`, `/api/audit` and `imaging token|audit ...`: a token is created (shown once, on the page
that answers the form: never in a URL), listed, revoked (at once); the audit trail is searched newest
first. Reading the trail here is itself recorded (Audit Log Used, 110101)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request, Response
from fastapi.responses import RedirectResponse

from dicomweb.ui.render import HEADERS, is_htmx, render
from imaging import audit
from imaging.access import ROLES, Permission
from imaging.access.http import Caller, Require
from imaging.access.tokens import create_token, list_tokens, parse_expiry, revoke_token, token_info
from imaging.errors import InvalidRequest
from imaging.research.projects import list_projects
from imaging.web import audit_writer

router = APIRouter(prefix="/ui", include_in_schema=False)
TokenAdmin = Annotated[Caller, Depends(Require(Permission.MANAGE_TOKENS))]
Auditor = Annotated[Caller, Depends(Require(Permission.AUDIT))]
AUDIT_PAGE = 100


def _tokens(caller: Caller, show_all: bool) -> tuple[list[dict[str, Any]], list[str]]:
    with caller.archive.db.read() as session:
        tokens = [token_info(t) for t in list_tokens(session, include_inactive=show_all)]
        projects = [p.name for p in list_projects(session)]
    tokens.reverse()  # newest first
    return tokens, projects


def _tokens_page(
    request: Request,
    caller: Caller,
    *,
    show_all: bool = False,
    created: dict[str, Any] | None = None,
    error: str = "",
    form: dict[str, str] | None = None,
    message: str = "",
    status: int = 200,
) -> Response:
    tokens, projects = _tokens(caller, show_all)
    return render(
        request,
        caller,
        "tokens.html",
        status=status,
        tokens=tokens,
        projects=projects,
        roles=ROLES,
        show_all=show_all,
        created=created,
        error=error,
        message=message,
        form=form or {"role": "clinician", "project": "", "description": "", "expires": "365d"},
    )


@router.get("/tokens", summary="API tokens (page)")
def tokens_page(
    request: Request,
    caller: TokenAdmin,
    show_all: Annotated[bool, Query(alias="all")] = False,
    revoked: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> Response:
    message = f"Token {revoked} revoked." if revoked else ""
    return _tokens_page(request, caller, show_all=show_all, message=message)


@router.post("/tokens", summary="Create an API token (shown once)")
def create(
    request: Request,
    caller: TokenAdmin,
    role: Annotated[str, Form(max_length=16)],
    project: Annotated[str, Form(max_length=64)] = "",
    description: Annotated[str, Form(max_length=256)] = "",
    expires: Annotated[str, Form(max_length=40)] = "365d",
) -> Response:
    form = {"role": role, "project": project, "description": description, "expires": expires}
    try:
        token, row = create_token(
            caller.archive.db,
            role=role,
            project=project if role == "researcher" else "",
            description=description,
            expires_at=parse_expiry(expires),
            created_by=caller.user,
        )
    except InvalidRequest as exc:
        return _tokens_page(request, caller, error=str(exc), form=form, status=400)
    return _tokens_page(request, caller, created={"token": token, **token_info(row)})


@router.post("/tokens/{token_id}/revoke", summary="Revoke an API token (effective at once)")
def revoke(request: Request, token_id: Annotated[int, Path(ge=1, le=2**62)], caller: TokenAdmin) -> Response:
    revoke_token(caller.archive.db, token_id, user=caller.user)
    if not is_htmx(request):
        return RedirectResponse(f"/ui/tokens?revoked={token_id}", status_code=303, headers=HEADERS)
    tokens, _ = _tokens(caller, False)
    return render(request, caller, "_tokens_table.html", tokens=tokens, message=f"Token {token_id} revoked.")


def _day(value: str, field: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{field}: a date, YYYY-MM-DD") from None


@router.get("/audit", summary="Search the audit trail (page)")
def audit_page(
    request: Request,
    caller: Auditor,
    event: Annotated[str, Query(max_length=6)] = "",
    user: Annotated[str, Query(max_length=128)] = "",
    study_uid: Annotated[str, Query(max_length=64)] = "",
    partition: Annotated[str, Query(max_length=64)] = "",
    since: Annotated[str, Query(max_length=10)] = "",
    until: Annotated[str, Query(max_length=10)] = "",
    before: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> Response:
    if event and event not in {e.value for e in audit.AuditEvent}:
        raise InvalidRequest("unknown event code")
    start, end = _day(since, "from"), _day(until, "to")
    with caller.archive.db.read() as session:
        rows = [
            audit.to_dict(r)
            for r in audit.query(
                session,
                event=event or None,
                user=user.strip() or None,
                study_uid=study_uid.strip() or None,
                partition=partition.strip() or None,
                since=start,
                until=end + dt.timedelta(days=1) if end is not None else None,
                before_pk=before,
                newest_first=True,
                limit=AUDIT_PAGE,
            )
        ]
    chosen = {
        "event": event,
        "user": user,
        "study_uid": study_uid,
        "partition": partition,
        "since": since,
        "until": until,
    }
    audit_writer(request).submit(
        audit.AuditEvent.AUDIT_LOG_USED,
        user=caller.user,
        action="R",
        detail=f"audit search?{urlencode({k: v for k, v in chosen.items() if v})}"[:2000],
        access_point=caller.address,
    )
    older = ""
    if len(rows) == AUDIT_PAGE:
        older = urlencode({**{k: v for k, v in chosen.items() if v}, "before": rows[-1]["id"]})
    events = [(e.value, audit.EVENT_NAMES[e]) for e in audit.AuditEvent]
    return render(request, caller, "audit.html", rows=rows, chosen=chosen, events=events, older=older)
