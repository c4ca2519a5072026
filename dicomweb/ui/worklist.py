"""The radiologist's page: the triage worklist (triage.worklist, as the REST worklist reads it), filtered by
priority, modality and study date; each study opens in the built-in OHIF viewer, where its SEG and SR are
listed with the images.

Live refresh by polling, not Server-Sent Events: every `ui_poll_seconds` the table asks `/ui/worklist/rows`
whether anything changed since the token it was drawn with (triage.worklist.changes_since: three indexed
lookups, no worklist query) and gets 204 — nothing to swap — until something has. Polling keeps no
connection or thread per open page, passes every proxy that buffers, resumes by itself after a server
restart or a laptop's sleep, and needs nothing beyond htmx's core (SSE would need its extension); a study
shows up within one interval of its change, which is well inside a reading radiologist's pace.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request, Response

from dicomweb.ui.render import html_date, render
from imaging import audit
from imaging.access import Permission
from imaging.access.http import Caller, Require
from imaging.errors import InvalidRequest
from imaging.index.matching import InvalidMatchKey
from imaging.partition import CLINICAL
from imaging.priority import parse_priorities
from imaging.web import audit_writer
from triage.worklist import WorklistFilter, changes_since, worklist

router = APIRouter(prefix="/ui/worklist", include_in_schema=False)
Radiologist = Annotated[Caller, Depends(Require(Permission.WORKLIST))]
PAGE = 100
STATUS_TEXT = {"done": "done", "pending": "pending", "failed": "failed", "none": "not triaged"}
DateParam = Annotated[str, Query(max_length=10, pattern=r"^(|\d{4}-\d{2}-\d{2})$")]


def _chosen(
    priority: list[str], modality: str, date_from: str, date_to: str, offset: int
) -> tuple[WorklistFilter, dict[str, object]]:
    priorities = tuple(parse_priorities(priority))
    dates = ""
    if date_from or date_to:
        dates = f"{html_date(date_from)}-{html_date(date_to)}"
    wanted = WorklistFilter(priorities, modality.strip(), dates, PAGE + 1, offset)
    chosen = {
        "priorities": [p.value for p in priorities],
        "modality": modality.strip(),
        "date_from": date_from,
        "date_to": date_to,
        "offset": offset,
    }
    return wanted, chosen


def _table(
    request: Request, caller: Caller, template: str, wanted: WorklistFilter, chosen: dict[str, object]
) -> Response:
    try:
        with caller.archive.db.read() as session:
            token = changes_since(session)
            entries = worklist(session, wanted)
    except InvalidMatchKey as exc:
        raise InvalidRequest(str(exc)) from None
    # The table names patients: a Query of identified data, audited like the REST worklist.
    audit_writer(request).submit(
        audit.AuditEvent.QUERY,
        user=caller.user,
        action="E",
        partition=CLINICAL,
        detail=f"worklist page?{_query(chosen)}"[:2000],
        access_point=caller.address,
    )
    query = _query(chosen)
    return render(
        request,
        caller,
        template,
        entries=entries[:PAGE],
        more=len(entries) > PAGE,
        limit=PAGE,
        next_query=urlencode(
            [*(pair for pair in _pairs(chosen) if pair[0] != "offset"), ("offset", wanted.offset + PAGE)]
        ),
        chosen=chosen,
        query=query,
        token=token,
        updated=dt.datetime.now(dt.UTC).strftime("%H:%M:%S UTC"),
        poll_seconds=caller.archive.settings.ui_poll_seconds,
        STATUS_TEXT=STATUS_TEXT,
    )


def _pairs(chosen: dict[str, object]) -> list[tuple[str, object]]:
    pairs: list[tuple[str, object]] = [("priority", p) for p in chosen["priorities"]]  # type: ignore[attr-defined]
    pairs += [(k, chosen[k]) for k in ("modality", "date_from", "date_to", "offset") if chosen[k]]
    return pairs


def _query(chosen: dict[str, object]) -> str:
    return urlencode(_pairs(chosen))


@router.get("", summary="The triage worklist (page)")
def worklist_page(
    request: Request,
    caller: Radiologist,
    priority: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI copies defaults)
    modality: Annotated[str, Query(max_length=64)] = "",
    date_from: DateParam = "",
    date_to: DateParam = "",
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    wanted, chosen = _chosen(priority, modality, date_from, date_to, offset)
    return _table(request, caller, "worklist.html", wanted, chosen)


@router.get("/rows", summary="The worklist's table, when it changed since `since`")
def worklist_rows(
    request: Request,
    caller: Radiologist,
    priority: Annotated[list[str], Query()] = [],  # noqa: B006
    modality: Annotated[str, Query(max_length=64)] = "",
    date_from: DateParam = "",
    date_to: DateParam = "",
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    since: Annotated[str, Query(max_length=80)] = "",
) -> Response:
    if since:
        with caller.archive.db.read() as session:
            if changes_since(session) == since:
                return Response(status_code=204, headers={"Cache-Control": "no-store"})
    wanted, chosen = _chosen(priority, modality, date_from, date_to, offset)
    return _table(request, caller, "_worklist_table.html", wanted, chosen)
