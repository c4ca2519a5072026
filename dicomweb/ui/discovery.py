"""The researcher's federated discovery, on the project page: the cohort builder's filters (and the few
keys only a count across sites takes: sex, age band, AI findings) counted here and at every peer site,
then an access request to a holding site and the project's sent requests with their status.

The same domain functions as `/api/federation/counts` and `/api/federation/requests` (imaging.federation
client and requesting), so the counts pass the same disclosure control and every step is audited alike.
Each route names the project in its URL: a researcher of another project, or a clinician, is refused.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Request, Response
from fastapi.responses import RedirectResponse

from dicomweb.ui.render import HEADERS, html_date, is_htmx, render
from imaging.access import Permission, authorize, may
from imaging.access.http import Caller, Require
from imaging.errors import InvalidRequest, NotFound
from imaging.federation import client, permits, requesting
from imaging.federation.criteria import CohortDefinition, definition

router = APIRouter(prefix="/ui/projects/{project}/federation", include_in_schema=False)
Asker = Annotated[Caller, Depends(Require(Permission.FEDERATED_QUERY))]
Requester = Annotated[Caller, Depends(Require(Permission.FEDERATION_REQUEST))]
RequestUid = Annotated[str, Path(pattern=permits.REQUEST_UID)]
Text = Annotated[str, Form(max_length=256)]
Date = Annotated[str, Form(max_length=10, pattern=r"^(|\d{4}-\d{2}-\d{2})$")]
Number = Annotated[str, Form(max_length=12, pattern=r"^\s*(\d+(\.\d+)?)?\s*$")]
SERIES_KEYS = ("Modality", "BodyPartExamined", "StudyDescription", "SeriesDescription")


class CountForm:
    """The builder's fields as a cohort definition (imaging.federation.criteria); blank means any."""

    def __init__(
        self,
        Modality: Text = "",
        BodyPartExamined: Text = "",
        StudyDescription: Text = "",
        SeriesDescription: Text = "",
        date_from: Date = "",
        date_to: Date = "",
        min_priority: Annotated[str, Form(pattern=r"^(|HIGH|MEDIUM|LOW)$")] = "",
        PatientSex: Annotated[str, Form(pattern=r"^(|F|M|O)$")] = "",
        age_min: Number = "",
        age_max: Number = "",
        min_findings: Number = "",
        min_diameter_mm: Number = "",
    ) -> None:
        self.values = {
            "Modality": Modality, "BodyPartExamined": BodyPartExamined, "StudyDescription": StudyDescription,
            "SeriesDescription": SeriesDescription, "date_from": date_from, "date_to": date_to,
            "min_priority": min_priority, "PatientSex": PatientSex, "age_min": age_min, "age_max": age_max,
            "min_findings": min_findings, "min_diameter_mm": min_diameter_mm,
        }  # fmt: skip

    def definition(self) -> CohortDefinition:
        v = {k: value.strip() for k, value in self.values.items()}
        filters = {k: v[k] for k in (*SERIES_KEYS, "PatientSex") if v[k]}
        low, high = html_date(v["date_from"]), html_date(v["date_to"])
        if low or high:
            filters["StudyDate"] = f"{low}-{high}"
        data: dict[str, Any] = {"filters": filters, "min_priority": v["min_priority"]}
        for key in ("age_min", "age_max", "min_findings"):
            if v[key]:
                data[key] = int(float(v[key]))
        if v["min_diameter_mm"]:
            data["min_diameter_mm"] = float(v["min_diameter_mm"])
        return definition(data)


def describe(data: dict[str, Any]) -> str:
    """A definition as people read it: `Modality=CT, age 50-70, priority ≥ HIGH` ('every study')."""
    parts = [f"{k}={v}" for k, v in sorted((data.get("filters") or {}).items())]
    if data.get("age_min") is not None or data.get("age_max") is not None:
        parts.append(f"age {data.get('age_min', '')}-{data.get('age_max', '')}")
    if data.get("min_priority"):
        parts.append(f"priority ≥ {data['min_priority']}")
    if data.get("min_findings") is not None:
        parts.append(f"≥ {data['min_findings']} findings")
    if data.get("min_diameter_mm") is not None:
        parts.append(f"largest finding ≥ {data['min_diameter_mm']} mm")
    return ", ".join(parts) or "every study"


def sent_requests(caller: Caller, project: str) -> list[dict[str, Any]] | None:
    """The project's access requests as last heard from the holding sites (None: not the caller's to see)."""
    if not may(caller.principal, Permission.FEDERATION_REQUEST, project):
        return None
    with caller.archive.db.read() as session:
        return [requesting.info(r) for r in requesting.list_requests(session, project)]


@router.post("/counts", summary="Count the cohort here and at every peer site")
def counts(request: Request, project: str, caller: Asker, form: Annotated[CountForm, Depends()]) -> Response:
    # Counting reads the clinical partitions, but this page belongs to one project: its people only.
    authorize(caller.principal, Permission.COHORTS, project)
    try:
        cohort = form.definition()
    except InvalidRequest as exc:  # half-filled fields: say what is wrong where the counts would be
        return render(request, caller, "_federated_counts.html", project=project, error=str(exc))
    rows = client.count_everywhere(caller.archive, cohort, user=caller.user)
    context: dict[str, Any] = {
        "project": project,
        "error": "",
        "sites": [r.as_json() for r in rows],
        "total": client.totals(rows),
        "definition": cohort.canonical(),
        "described": describe(json.loads(cohort.canonical())),
        "may_request": may(caller.principal, Permission.FEDERATION_REQUEST, project),
    }
    if is_htmx(request):
        return render(request, caller, "_federated_counts.html", **context)
    return render(request, caller, "federated_counts.html", **context)


@router.post("/requests", summary="Send an access request for the cohort to a holding site")
def send_request(
    request: Request,
    project: str,
    caller: Requester,
    peer: Annotated[str, Form(max_length=64)],
    cohort: Annotated[str, Form(max_length=8000, alias="definition")] = "{}",
    purpose: Annotated[str, Form(max_length=4000)] = "",
) -> Response:
    try:
        data = json.loads(cohort)
    except ValueError:
        raise InvalidRequest("the cohort definition is not JSON") from None
    sent = requesting.send(
        caller.archive, peer, project, definition(data), purpose=purpose.strip(), user=caller.user
    )
    return _requests_answer(request, caller, project, f"Access request sent to {peer}: {sent['status']}.")


@router.post("/requests/{request_uid}/refresh", summary="Ask the holding site for a request's status")
def refresh_request(request: Request, project: str, request_uid: RequestUid, caller: Requester) -> Response:
    with caller.archive.db.read() as session:
        if requesting.get_request(session, request_uid).project != project:
            raise NotFound("no such access request")  # another project's: not for this page
    now = requesting.refresh(caller.archive, request_uid)
    return _requests_answer(request, caller, project, f"Status from {now['peer']}: {now['status']}.")


def _requests_answer(request: Request, caller: Caller, project: str, message: str) -> Response:
    """The requests' table (htmx swaps it in), or back to the project page."""
    if not is_htmx(request):
        return RedirectResponse(f"/ui/projects/{project}#requests", status_code=303, headers=HEADERS)
    return render(
        request,
        caller,
        "_sent_requests.html",
        headers={"HX-Retarget": "#requests", "HX-Reswap": "outerHTML"},
        project=project,
        requests=sent_requests(caller, project),
        describe=describe,
        message=message,
    )
