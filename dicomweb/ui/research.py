"""The researcher's pages: projects, and in a project its cohorts — built from filters with the count as
one types (imaging.research.cohorts.preview) and a strip of a few series' thumbnails (the project's own
DICOMweb thumbnails), saved, exported as a zip with a progress bar, the manifest downloaded — and the
researcher's own exports with the audit trail's record of each. Counting the cohort at every peer site and
the project's access requests are `discovery`'s, shown on the same page.

The export is the REST zip (`/projects/{p}/cohorts/{name}/zip`), streamed, with its progress recorded per
object in a durable row (imaging.research.exports): the page prepares the export, the browser downloads
it in a hidden frame, and the progress bar polls the row. Nothing is spooled on the server, the bar shows
bytes the client actually received, an interrupted download says where it stopped and resumes after its
last complete series. (A job that writes the zip first would double the disk it takes and make the
researcher wait twice.)
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Query, Request, Response
from fastapi.responses import RedirectResponse

from dicomweb.ui.discovery import describe, sent_requests
from dicomweb.ui.render import HEADERS, html_date, is_htmx, render
from imaging.access import Permission, Role, may
from imaging.access.http import Caller, Require
from imaging.errors import InvalidRequest
from imaging.research.cohorts import list_cohorts, preview, save_cohort
from imaging.research.exports import (
    export_audit_trail,
    export_info,
    get_export,
    list_exports,
    prepare_export,
)
from imaging.research.projects import list_projects

router = APIRouter(prefix="/ui/projects", include_in_schema=False)
Viewer = Annotated[Caller, Depends(Require(Permission.PROJECTS))]
Researcher = Annotated[Caller, Depends(Require(Permission.COHORTS))]
Text = Annotated[str, Query(max_length=256)]
FormText = Annotated[str, Form(max_length=256)]
DateParam = Annotated[str, Query(max_length=10, pattern=r"^(|\d{4}-\d{2}-\d{2})$")]
FormDate = Annotated[str, Form(max_length=10, pattern=r"^(|\d{4}-\d{2}-\d{2})$")]
Priority = Annotated[str, Query(pattern=r"^(|HIGH|MEDIUM|LOW)$")]
FormPriority = Annotated[str, Form(pattern=r"^(|HIGH|MEDIUM|LOW)$")]
EXPORTS_SHOWN = 20


def _filters(form: dict[str, str]) -> dict[str, str]:
    """The cohort's matching keys from the form: the two dates become one DICOM date range."""
    filters = {
        k: form[k].strip() for k in ("Modality", "BodyPartExamined", "StudyDescription", "SeriesDescription")
    }
    low, high = html_date(form["date_from"]), html_date(form["date_to"])
    if low or high:
        filters["StudyDate"] = f"{low}-{high}"
    return {k: v for k, v in filters.items() if v}


def _form(**values: str) -> dict[str, str]:
    keys = ("Modality", "BodyPartExamined", "StudyDescription", "SeriesDescription", "date_from", "date_to")
    return {k: values.get(k, "") for k in (*keys, "min_priority", "name")}


@router.get("", summary="Research projects (page)")
def projects_page(request: Request, caller: Viewer) -> Response:
    sees_all = caller.principal.role in (Role.ADMIN, Role.CLINICIAN)
    with caller.archive.db.read() as session:
        shown = [
            {
                "name": p.name,
                "description": p.description,
                "options": p.options,
                "open": may(caller.principal, Permission.COHORTS, p.name),
            }
            for p in list_projects(session)
            if sees_all or p.name in caller.principal.projects
        ]
    return render(request, caller, "projects.html", projects=shown)


def _project_page(
    request: Request,
    caller: Caller,
    project: str,
    *,
    form: dict[str, str] | None = None,
    message: str = "",
    error: str = "",
    started: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    form = form or _form()
    with caller.archive.db.read() as session:
        cohorts = list_cohorts(session, project)
        exports = [
            export_info(x) for x in list_exports(session, project, user=caller.user, limit=EXPORTS_SHOWN)
        ]
        audit_rows = export_audit_trail(session, project, user=caller.user, limit=EXPORTS_SHOWN)
        try:
            found = preview(session, project, _filters(form), form["min_priority"])
        except InvalidRequest:
            found = None  # the error above says what is wrong with the form
    return render(
        request,
        caller,
        "project.html",
        status=status,
        project=project,
        form=form,
        message=message,
        error=error,
        cohorts=cohorts,
        exports=exports,
        audit_rows=audit_rows,
        found=found,
        started=started,
        requests=sent_requests(caller, project),
        describe=describe,
    )


@router.get("/{project}", summary="A research project: cohorts, exports (page)")
def project_page(
    request: Request, project: str, caller: Researcher, saved: Annotated[str, Query(max_length=64)] = ""
) -> Response:
    return _project_page(request, caller, project, message=f"Cohort {saved} saved." if saved else "")


@router.get("/{project}/preview", summary="What the filters select, as one types")
def cohort_preview(
    request: Request,
    project: str,
    caller: Researcher,
    Modality: Text = "",
    BodyPartExamined: Text = "",
    StudyDescription: Text = "",
    SeriesDescription: Text = "",
    date_from: DateParam = "",
    date_to: DateParam = "",
    min_priority: Priority = "",
) -> Response:
    form = _form(
        Modality=Modality,
        BodyPartExamined=BodyPartExamined,
        StudyDescription=StudyDescription,
        SeriesDescription=SeriesDescription,
        date_from=date_from,
        date_to=date_to,
    )
    try:
        with caller.archive.db.read() as session:
            found = preview(session, project, _filters(form), min_priority)
    except InvalidRequest as exc:
        # Half-typed values are normal here: say what is wrong where the count would be.
        return render(request, caller, "_preview.html", project=project, found=None, error=str(exc))
    return render(request, caller, "_preview.html", project=project, found=found, error="")


@router.post("/{project}/cohorts", summary="Save a cohort from the builder's form")
def save(
    request: Request,
    project: str,
    caller: Researcher,
    name: Annotated[str, Form(max_length=64)],
    Modality: FormText = "",
    BodyPartExamined: FormText = "",
    StudyDescription: FormText = "",
    SeriesDescription: FormText = "",
    date_from: FormDate = "",
    date_to: FormDate = "",
    min_priority: FormPriority = "",
) -> Response:
    form = _form(
        Modality=Modality,
        BodyPartExamined=BodyPartExamined,
        StudyDescription=StudyDescription,
        SeriesDescription=SeriesDescription,
        date_from=date_from,
        date_to=date_to,
        min_priority=min_priority,
        name=name,
    )
    try:
        save_cohort(caller.archive, project, name.strip(), _filters(form), min_priority)
    except InvalidRequest as exc:  # the form again, as filled in, with what is wrong
        return _project_page(request, caller, project, form=form, error=str(exc), status=400)
    target = f"/ui/projects/{project}?saved={name.strip()}#cohorts"
    return RedirectResponse(target, status_code=303, headers=HEADERS)


@router.post("/{project}/cohorts/{name}/exports", summary="Start an export of a cohort (zip, with progress)")
def start_export(request: Request, project: str, name: str, caller: Researcher) -> Response:
    export_pk = prepare_export(caller.archive, project, name, user=caller.user)
    with caller.archive.db.read() as session:
        started = export_info(get_export(session, export_pk, project=project, user=caller.user))
    if is_htmx(request):
        return render(request, caller, "_export_started.html", project=project, started=started)
    return _project_page(request, caller, project, started=started)


@router.get("/{project}/exports/{export_id}", summary="An export's progress")
def export_progress(
    request: Request, project: str, export_id: Annotated[int, Path(ge=1, le=2**62)], caller: Researcher
) -> Response:
    with caller.archive.db.read() as session:
        x = export_info(get_export(session, export_id, project=project, user=caller.user))
    return render(request, caller, "_export_progress.html", project=project, x=x)
