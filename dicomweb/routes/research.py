"""REST API beside DICOMweb: the triage worklist and results, research projects, cohorts.

* `GET  /api/worklist` — clinical studies ordered by triage priority (HIGH first), as DICOM JSON with
  Scheduled Procedure Step Priority (0074,1200) and Worklist Label (0074,1202).
* `GET  /api/triage/studies/{study}` — the findings per series (position LPS mm, diameter, score).
* `POST /api/projects` (admin), `GET /api/projects`, `POST /api/projects/{p}/publish` (admin, clinician).
* `GET|PUT /projects/{p}/cohorts[/{name}]`, `GET /projects/{p}/cohorts/{name}/manifest`,
  `GET /projects/{p}/cohorts/{name}/zip?start_after=SERIES_UID` (researchers of the project).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import case, select

from dicomweb.auth import Action, Principal, authenticate, authorize
from dicomweb.deps import get_archive, service_root
from imaging.archive import Archive
from imaging.index.schema import CLINICAL, Patient, Study

router = APIRouter(tags=["Triage and research"])

_RANK = case({"HIGH": 3, "MEDIUM": 2, "LOW": 1}, value=Study.priority, else_=0)


def _principal(request: Request) -> tuple[Archive, Principal]:
    archive = get_archive(request)
    return archive, authenticate(archive, request)


def _require_role(principal: Principal, *roles: str) -> None:
    if principal.role not in roles:
        raise HTTPException(403, f"role {principal.role} may not do this")


@router.get("/api/worklist", summary="Clinical studies ordered by triage priority")
def worklist(
    request: Request,
    priority: str = Query("", description="comma list, e.g. HIGH,MEDIUM; empty: every study"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=10_000_000),
) -> JSONResponse:
    archive, principal = _principal(request)
    authorize(principal, CLINICAL, Action.READ)
    wanted = [p for p in priority.upper().split(",") if p]
    if any(p not in ("HIGH", "MEDIUM", "LOW") for p in wanted):
        raise HTTPException(400, "priority must be HIGH, MEDIUM or LOW")
    stmt = (
        select(Study, Patient)
        .join(Patient, Patient.patient_pk == Study.patient_pk)
        .where(Study.partition == CLINICAL)
        .order_by(_RANK.desc(), Study.StudyDate.desc(), Study.StudyTime.desc(), Study.study_pk)
        .offset(offset)
        .limit(limit)
    )
    if wanted:
        stmt = stmt.where(Study.priority.in_(wanted))
    root = service_root(request, CLINICAL)
    items = []
    with archive.db.read() as session:
        for study, patient in session.execute(stmt):
            items.append(
                {
                    "00080020": _value("DA", study.StudyDate),
                    "00080050": _value("SH", study.AccessionNumber),
                    "00080061": _value("CS", *study.ModalitiesInStudy.split("\\")),
                    "00081030": _value("LO", study.StudyDescription),
                    "00081190": _value("UR", f"{root}/studies/{study.StudyInstanceUID}"),
                    "00100010": {"vr": "PN", "Value": [{"Alphabetic": patient.PatientName}]}
                    if patient.PatientName
                    else {"vr": "PN"},
                    "00100020": _value("LO", patient.PatientID),
                    "0020000D": _value("UI", study.StudyInstanceUID),
                    "00741200": _value("CS", study.priority),
                    "00741202": _value("LO", "AI triage" if study.priority else ""),
                }
            )
    return JSONResponse(items, media_type="application/dicom+json")


def _value(vr: str, *values: str) -> dict[str, Any]:
    present = [v for v in values if v]
    return {"vr": vr, "Value": present} if present else {"vr": vr}


@router.get("/api/triage/studies/{study}", summary="Triage findings of a study")
def triage_results(study: str, request: Request) -> JSONResponse:
    from triage.records import study_outcomes

    archive, principal = _principal(request)
    authorize(principal, CLINICAL, Action.READ)
    with archive.db.read() as session:
        row = session.scalar(
            select(Study).where(Study.partition == CLINICAL, Study.StudyInstanceUID == study)
        )
        if row is None:
            raise HTTPException(404, "no such study")
        outcomes = study_outcomes(session, study)
        body = {
            "StudyInstanceUID": study,
            "priority": row.priority,
            "series": [
                {
                    "SeriesInstanceUID": o.SeriesInstanceUID,
                    "bundle_version": o.bundle_version,
                    "selected": o.selected,
                    "status": o.status,
                    "error": o.error,
                    "priority": o.priority,
                    "findings": o.findings,
                    "sr_sop_instance_uid": o.sr_sop_instance_uid,
                    "seg_sop_instance_uid": o.seg_sop_instance_uid,
                    "timings": o.timings,
                }
                for o in outcomes
            ],
        }
    return JSONResponse(body)


class ProjectIn(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    options: list[str] = []
    description: str = ""
    key_hex: str | None = Field(None, description="share pseudonyms with sites holding this key")
    keep_reidentification: bool = False


@router.post("/api/projects", status_code=201, summary="Create a research project (admin)")
def create(body: ProjectIn, request: Request) -> JSONResponse:
    from imaging.projects import create_project

    archive, principal = _principal(request)
    _require_role(principal, "admin")
    try:
        key = bytes.fromhex(body.key_hex) if body.key_hex else None
        create_project(
            archive,
            body.name,
            options=body.options,
            description=body.description,
            key=key,
            keep_reidentification=body.keep_reidentification,
        )
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    except Exception as exc:
        if "unique" in str(exc).lower() or "duplicate" in str(exc).lower():
            raise HTTPException(409, "project exists") from None
        raise
    return JSONResponse({"name": body.name}, status_code=201)


@router.get("/api/projects", summary="Research projects")
def list_projects(request: Request) -> JSONResponse:
    from imaging.projects import Project

    archive, principal = _principal(request)
    with archive.db.read() as session:
        rows = session.scalars(select(Project).order_by(Project.name)).all()
        visible = [p for p in rows if principal.role in ("admin", "clinician") or p.name == principal.project]
        return JSONResponse(
            [{"name": p.name, "options": p.options, "description": p.description} for p in visible]
        )


class PublishIn(BaseModel):
    study_uids: list[str] = Field(min_length=1, max_length=1000)


@router.post("/api/projects/{project}/publish", summary="De-identify clinical studies into the project")
def publish(project: str, body: PublishIn, request: Request) -> JSONResponse:
    from imaging.projects import publish_study

    archive, principal = _principal(request)
    _require_role(principal, "admin", "clinician")
    results = []
    for uid in body.study_uids:
        try:
            report = publish_study(archive, project, uid, user=f"token:{principal.token_pk or 'dev'}")
        except Exception as exc:
            status = getattr(exc, "http_status", 500)
            results.append({"source": uid, "status": status, "error": str(exc) or type(exc).__name__})
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
    return JSONResponse(results)


def _project_reader(project: str, request: Request) -> tuple[Archive, Principal]:
    archive, principal = _principal(request)
    authorize(principal, project, Action.READ)
    return archive, principal


class CohortIn(BaseModel):
    filters: dict[str, str] = {}
    min_priority: str = Field("", pattern=r"^(|HIGH|MEDIUM|LOW)$")


@router.put("/projects/{project}/cohorts/{name}", summary="Save a cohort (a query inside the project)")
def save(project: str, name: str, body: CohortIn, request: Request) -> JSONResponse:
    from imaging.cohorts import save_cohort

    archive, _ = _project_reader(project, request)
    try:
        save_cohort(archive, project, name, body.filters, body.min_priority)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    return JSONResponse({"project": project, "name": name})


@router.get("/projects/{project}/cohorts", summary="Cohorts of a project")
def cohorts(project: str, request: Request) -> JSONResponse:
    from imaging.cohorts import Cohort

    archive, _ = _project_reader(project, request)
    with archive.db.read() as session:
        rows = session.scalars(select(Cohort).where(Cohort.project == project).order_by(Cohort.name)).all()
        return JSONResponse(
            [{"name": c.name, "filters": c.filters, "min_priority": c.min_priority} for c in rows]
        )


@router.get("/projects/{project}/cohorts/{name}/manifest", summary="Series, counts, sizes and SHA-256")
def cohort_manifest(project: str, name: str, request: Request) -> Response:
    from imaging.cohorts import manifest

    archive, _ = _project_reader(project, request)
    return Response(manifest(archive, project, name).to_json(), media_type="application/json")


@router.get("/projects/{project}/cohorts/{name}/zip", summary="The cohort as a streamed zip (resumable)")
def cohort_zip(
    project: str,
    name: str,
    request: Request,
    start_after: str = Query("", max_length=64, pattern=r"^[0-9.]*$"),
    _: None = Depends(lambda: None),
) -> StreamingResponse:
    from imaging import audit
    from imaging.cohorts import manifest, stream_zip

    archive, principal = _project_reader(project, request)
    m = manifest(archive, project, name)
    with archive.db.write() as session:
        audit.record(
            session,
            audit.AuditEvent.EXPORT,
            user=f"token:{principal.token_pk or 'dev'}",
            action="R",
            partition=project,
            detail=f"cohort {name}: {len(m.series)} series, {m.size} bytes"
            + (f", resumed after {start_after}" if start_after else ""),
        )
    headers = {"Content-Disposition": f'attachment; filename="{project}-{name}.zip"'}
    return StreamingResponse(
        stream_zip(archive, m, start_after=start_after), media_type="application/zip", headers=headers
    )
