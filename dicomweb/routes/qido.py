"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

Matching runs in SQL with bound parameters (imaging.index.matching). Answers are built straight from the
index columns; attributes without a column come from the metadata cache of a representative instance.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from sqlalchemy.orm import Session

from dicomweb.deps import Context, reader
from dicomweb.dicom_json import MEDIA_TYPE, UnknownAttribute, dumps, element, resolve, tag_key, vr_of
from imaging.index.attributes import Level
from imaging.index.extract import valid_uid
from imaging.index.matching import COLUMNS, InvalidMatchKey
from imaging.index.query import Match, Query, count, find, representative_metadata
from imaging.index.schema import Instance, Patient, Series, Study

router = APIRouter(tags=["QIDO-RS"])

RESERVED = {"limit", "offset", "fuzzymatching", "includefield"}
MAX_VALUE_LENGTH = 1024
MAX_OFFSET = 2**62

_MODEL_COLUMNS: dict[type, set[str]] = {
    model: {name for name in COLUMNS if name in model.__mapper__.columns}
    for model in (Patient, Study, Series, Instance)
}
_STUDY_MATCH = _MODEL_COLUMNS[Patient] | _MODEL_COLUMNS[Study]
_SERIES_MATCH = _STUDY_MATCH | _MODEL_COLUMNS[Series]
_IMAGE_MATCH = _SERIES_MATCH | _MODEL_COLUMNS[Instance]
MATCHABLE: dict[Level, set[str]] = {
    Level.STUDY: _STUDY_MATCH,
    Level.SERIES: _SERIES_MATCH - {"ModalitiesInStudy", "SOPClassesInStudy"},
    Level.IMAGE: _IMAGE_MATCH - {"ModalitiesInStudy", "SOPClassesInStudy"},
}
# Lower-level columns never returned at a level (their value would be one arbitrary child's).
_LOWER: dict[Level, set[str]] = {
    Level.STUDY: _MODEL_COLUMNS[Series] | _MODEL_COLUMNS[Instance],
    Level.SERIES: _MODEL_COLUMNS[Instance],
    Level.IMAGE: set(),
}

DEFAULT_KEYS: dict[Level, tuple[str, ...]] = {
    Level.STUDY: (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "InstanceAvailability",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "RetrieveURL",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    Level.SERIES: (
        "StudyInstanceUID",
        "Modality",
        "SeriesDescription",
        "SeriesNumber",
        "SeriesInstanceUID",
        "SeriesDate",
        "SeriesTime",
        "BodyPartExamined",
        "NumberOfSeriesRelatedInstances",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "RetrieveURL",
    ),
    Level.IMAGE: (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceAvailability",
        "RetrieveURL",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
    ),
}
# What `includefield=all` adds beyond the columns, from the metadata cache (study / series modules).
ALL_EXTRA: dict[Level, tuple[str, ...]] = {
    Level.STUDY: (
        "PatientAge",
        "PatientSize",
        "PatientWeight",
        "OtherPatientIDs",
        "EthnicGroup",
        "PatientComments",
        "IssuerOfPatientID",
        "InstitutionName",
        "NameOfPhysiciansReadingStudy",
        "PhysiciansOfRecord",
        "AdmittingDiagnosesDescription",
        "TimezoneOffsetFromUTC",
    ),
    Level.SERIES: (
        "Manufacturer",
        "ManufacturerModelName",
        "StationName",
        "InstitutionName",
        "InstitutionalDepartmentName",
        "ProtocolName",
        "Laterality",
        "PatientPosition",
        "OperatorsName",
        "PerformingPhysicianName",
        "FrameOfReferenceUID",
        "SeriesType",
    ),
    Level.IMAGE: (),
}
_RETURN_COLUMNS: dict[Level, set[str]] = {
    Level.STUDY: _STUDY_MATCH,
    Level.SERIES: _SERIES_MATCH,
    Level.IMAGE: _IMAGE_MATCH,
}
_COMPUTED = {"RetrieveURL", "InstanceAvailability", "ScheduledProcedureStepPriority"}
# The triage priority of a study is matched and returned as Scheduled Procedure Step Priority (0074,1200).
TRIAGE_PRIORITY = "ScheduledProcedureStepPriority"


class QidoRequest:
    def __init__(self) -> None:
        self.keys: dict[str, str] = {}
        self.include: list[str] = []
        self.include_all = False
        self.fuzzy = False
        self.limit: int | None = None
        self.offset = 0
        self.warnings: list[str] = []
        self.priority: str | None = None


def _int_param(name: str, value: str, maximum: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise HTTPException(400, f"{name} must be a non-negative integer") from None
    if number < 0:
        raise HTTPException(400, f"{name} must be a non-negative integer")
    if name == "offset" and number > maximum:
        raise HTTPException(400, "offset out of range")
    return min(number, maximum)


def _check_value(keyword: str, value: str) -> None:
    if len(value) > MAX_VALUE_LENGTH:
        raise HTTPException(400, f"matching value for {keyword} is too long")
    if any(ord(c) < 32 and c not in "\t" for c in value):
        raise HTTPException(400, f"matching value for {keyword} contains control characters")


def parse_request(request: Request, level: Level, max_results: int) -> QidoRequest:
    q = QidoRequest()
    seen_reserved: set[str] = set()
    for raw_name, value in request.query_params.multi_items():
        name = raw_name.strip()
        lowered = name.lower()
        if lowered in RESERVED:
            if lowered != "includefield" and lowered in seen_reserved:
                raise HTTPException(400, f"{lowered} given more than once")
            seen_reserved.add(lowered)
            if lowered == "limit":
                q.limit = _int_param("limit", value, 2**62)
            elif lowered == "offset":
                q.offset = _int_param("offset", value, MAX_OFFSET)
            elif lowered == "fuzzymatching":
                if value.strip().lower() not in ("true", "false"):
                    raise HTTPException(400, "fuzzymatching must be true or false")
                q.fuzzy = value.strip().lower() == "true"
            else:
                for field in value.split(","):
                    field = field.strip()
                    if not field:
                        continue
                    if field.lower() == "all":
                        q.include_all = True
                        continue
                    if "." in field:
                        raise HTTPException(400, "includefield: sequence attribute paths are not supported")
                    try:
                        q.include.append(resolve(field)[1])
                    except UnknownAttribute as exc:
                        raise HTTPException(400, f"includefield: {exc}") from None
            continue
        if "." in name:
            raise HTTPException(400, "matching on sequence attributes is not supported")
        try:
            _, keyword = resolve(name)
        except UnknownAttribute as exc:
            raise HTTPException(400, str(exc)) from None
        _check_value(keyword, value)
        if keyword == TRIAGE_PRIORITY and level is not Level.IMAGE:
            wanted = [v.strip().upper() for v in value.split("\\") if v.strip()]
            if any(v not in ("HIGH", "MEDIUM", "LOW") for v in wanted):
                raise HTTPException(400, f"{TRIAGE_PRIORITY} must be HIGH, MEDIUM or LOW")
            q.priority = ",".join(wanted) or None
            q.include.append(keyword)
            continue
        if keyword == "Modality" and level is Level.STUDY:
            keyword = "ModalitiesInStudy"  # Modality is a series attribute: match the study's modalities
        if keyword in q.keys:
            raise HTTPException(400, f"matching key {keyword} given more than once")
        if value.strip(" ") not in ("", "*") and keyword not in MATCHABLE[level]:
            if keyword in _IMAGE_MATCH:
                raise HTTPException(400, f"{keyword} is not an attribute of this query level")
            q.warnings.append(f"matching on {keyword} is not supported; the key was ignored")
            q.include.append(keyword)
            continue
        q.keys[keyword] = value
    return q


def _return_keys(q: QidoRequest, level: Level) -> list[str]:
    keys: list[str] = list(DEFAULT_KEYS[level])
    keys += [k for k in q.keys if k not in keys]
    keys += [k for k in q.include if k not in keys]
    if q.include_all:
        keys += [k for k in sorted(_RETURN_COLUMNS[level]) if k not in keys and k != "TransferSyntaxUID"]
        keys += [k for k in ALL_EXTRA[level] if k not in keys]
    return [k for k in keys if k not in _LOWER[level]]


_ROW_ATTR = {Patient: "patient", Study: "study", Series: "series", Instance: "instance"}


def _plan(keys: list[str], level: Level) -> list[tuple[str, str, str, str | None]]:
    """Per return key, once per request: (JSON key, VR, keyword, Match attribute holding the column)."""
    models = {Level.STUDY: (Study, Patient), Level.SERIES: (Series, Study, Patient)}.get(
        level, (Instance, Series, Study, Patient)
    )
    plan = []
    for keyword in keys:
        tag, _ = resolve(keyword)
        holder = next((_ROW_ATTR[m] for m in models if keyword in _MODEL_COLUMNS[m]), None)
        if keyword in _COMPUTED:
            holder = "computed"
        plan.append((tag_key(tag), vr_of(tag), keyword, holder))
    return plan


def _answer(
    session: Session,
    ctx: Context,
    match: Match,
    level: Level,
    plan: list[tuple[str, str, str, str | None]],
    include_all: bool,
) -> bytes:
    body: dict[str, Any] = {}
    missing: list[tuple[str, str]] = []
    for key, vr, keyword, holder in plan:
        if holder is None:
            missing.append((key, vr))
        elif holder == "computed":
            if keyword == "InstanceAvailability":
                body[key] = {"vr": "CS", "Value": ["ONLINE"]}
                continue
            if keyword == TRIAGE_PRIORITY:
                priority = match.study.priority if match.study is not None else ""
                body[key] = {"vr": "CS", "Value": [priority]} if priority else {"vr": "CS"}
                continue
            assert match.study is not None
            study_uid = match.study.StudyInstanceUID
            if level is Level.STUDY:
                url = ctx.study_url(study_uid)
            elif level is Level.SERIES:
                assert match.series is not None
                url = ctx.series_url(study_uid, match.series.SeriesInstanceUID)
            else:
                assert match.series is not None and match.instance is not None
                url = ctx.instance_url(
                    study_uid, match.series.SeriesInstanceUID, match.instance.SOPInstanceUID
                )
            body[key] = {"vr": "UR", "Value": [url]}
        else:
            body[key] = element(vr, getattr(getattr(match, holder), keyword))
    if missing or (include_all and level is Level.IMAGE):
        cached = representative_metadata(session, match)
        if include_all and level is Level.IMAGE:
            for key, value in cached.items():
                if key not in body and "BulkDataURI" not in value and key < "7FE00010":
                    body[key] = value
        for key, vr in missing:
            value = cached.get(key)
            body[key] = value if value is not None and "BulkDataURI" not in value else {"vr": vr}
    return dumps(dict(sorted(body.items())))


def search(request: Request, ctx: Context, level: Level, scope: dict[str, str]) -> Response:
    settings = ctx.archive.settings
    for keyword, uid in scope.items():
        if not valid_uid(uid):
            raise HTTPException(400, f"invalid {keyword} in the path")
    q = parse_request(request, level, settings.qido_max_results)
    q.keys.update(scope)
    maximum = settings.qido_max_results
    capped = q.limit is None or q.limit > maximum
    limit = maximum if capped else q.limit
    query = Query(
        level=level,
        keys=q.keys,
        partition=ctx.partition,
        fuzzy=q.fuzzy,
        limit=limit,
        offset=q.offset,
        study_uids=ctx.studies,
        priority=q.priority,
    )
    plan = _plan(_return_keys(q, level), level)
    headers: dict[str, str] = {}
    try:
        with ctx.archive.db.read() as session:
            matches = find(session, query)
            if capped and len(matches) == limit:
                total = count(session, query)
                remaining = total - q.offset - len(matches)
                if remaining > 0:
                    q.warnings.insert(0, f"There are {remaining} additional results that can be requested")
            items = [_answer(session, ctx, m, level, plan, q.include_all) for m in matches]
    except InvalidMatchKey as exc:
        raise HTTPException(400, str(exc)) from None
    if q.warnings:
        headers["Warning"] = ", ".join(f'299 imaging: "{w}"' for w in q.warnings)
    if not items and settings.empty_qido_status == "204":
        return Response(status_code=204, headers=headers)
    return Response(b"[" + b",".join(items) + b"]", media_type=MEDIA_TYPE, headers=headers)


@router.get("/studies", summary="Search for studies")
def search_studies(request: Request, ctx: Context = Depends(reader)) -> Response:
    return search(request, ctx, Level.STUDY, {})


@router.get("/series", summary="Search for series (all studies)")
def search_all_series(request: Request, ctx: Context = Depends(reader)) -> Response:
    return search(request, ctx, Level.SERIES, {})


@router.get("/studies/{study}/series", summary="Search for series of a study")
def search_series(study: str, request: Request, ctx: Context = Depends(reader)) -> Response:
    return search(request, ctx, Level.SERIES, {"StudyInstanceUID": study})


@router.get("/instances", summary="Search for instances (all studies)")
def search_all_instances(request: Request, ctx: Context = Depends(reader)) -> Response:
    return search(request, ctx, Level.IMAGE, {})


@router.get("/studies/{study}/instances", summary="Search for instances of a study")
def search_study_instances(study: str, request: Request, ctx: Context = Depends(reader)) -> Response:
    return search(request, ctx, Level.IMAGE, {"StudyInstanceUID": study})


@router.get("/studies/{study}/series/{series}/instances", summary="Search for instances of a series")
def search_series_instances(
    study: str, series: str, request: Request, ctx: Context = Depends(reader)
) -> Response:
    return search(request, ctx, Level.IMAGE, {"StudyInstanceUID": study, "SeriesInstanceUID": series})
