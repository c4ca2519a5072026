"""QIDO-RS (PS3.18 10.6): search for studies, series and instances.

Matching runs in SQL with bound parameters (imaging.index.matching). Answers are built straight from the
index columns; attributes without a column come from the metadata cache of a representative instance.

Each distinct request shape (level, return keys, includefield=all) is compiled once into a Plan: the columns
to SELECT and, per return key in ascending tag order, an encoder that writes a whole column of values as
DICOM JSON text (dicom_json.column_encoder). A page is then one query and a few list comprehensions, with
no dict per attribute and no json.dumps per row; tests/dicomweb/test_qido_encoding.py holds the output to
the straightforward dict + json.dumps construction byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from dicomweb.deps import Context, ReadContext
from dicomweb.dicom_json import (
    MEDIA_TYPE,
    UnknownAttribute,
    column_encoder,
    dumps_text,
    json_string,
    resolve,
    tag_key,
    vr_of,
)
from imaging.errors import InvalidRequest
from imaging.index.attributes import Level
from imaging.index.extract import metadata_dict, valid_uid
from imaging.index.matching import COLUMNS, InvalidMatchKey
from imaging.index.query import Query, count, find_rows, representative_metadata_of
from imaging.index.schema import Instance, Patient, Series, Study
from imaging.priority import parse_priorities

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
        raise InvalidRequest(f"{name} must be a non-negative integer") from None
    if number < 0:
        raise InvalidRequest(f"{name} must be a non-negative integer")
    if name == "offset" and number > maximum:
        raise InvalidRequest("offset out of range")
    return min(number, maximum)


def _check_value(keyword: str, value: str) -> None:
    if len(value) > MAX_VALUE_LENGTH:
        raise InvalidRequest(f"matching value for {keyword} is too long")
    if any(ord(c) < 32 and c not in "\t" for c in value):
        raise InvalidRequest(f"matching value for {keyword} contains control characters")


def parse_request(request: Request, level: Level, max_results: int) -> QidoRequest:
    q = QidoRequest()
    seen_reserved: set[str] = set()
    for raw_name, value in request.query_params.multi_items():
        name = raw_name.strip()
        lowered = name.lower()
        if lowered in RESERVED:
            if lowered != "includefield" and lowered in seen_reserved:
                raise InvalidRequest(f"{lowered} given more than once")
            seen_reserved.add(lowered)
            if lowered == "limit":
                q.limit = _int_param("limit", value, 2**62)
            elif lowered == "offset":
                q.offset = _int_param("offset", value, MAX_OFFSET)
            elif lowered == "fuzzymatching":
                if value.strip().lower() not in ("true", "false"):
                    raise InvalidRequest("fuzzymatching must be true or false")
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
                        raise InvalidRequest("includefield: sequence attribute paths are not supported")
                    try:
                        q.include.append(resolve(field)[1])
                    except UnknownAttribute as exc:
                        raise InvalidRequest(f"includefield: {exc}") from None
            continue
        if "." in name:
            raise InvalidRequest("matching on sequence attributes is not supported")
        try:
            _, keyword = resolve(name)
        except UnknownAttribute as exc:
            raise InvalidRequest(str(exc)) from None
        _check_value(keyword, value)
        if keyword == TRIAGE_PRIORITY and level is not Level.IMAGE:
            wanted = parse_priorities(v for v in value.split("\\") if v.strip())
            q.priority = ",".join(wanted) or None
            q.include.append(keyword)
            continue
        if keyword == "Modality" and level is Level.STUDY:
            keyword = "ModalitiesInStudy"  # Modality is a series attribute: match the study's modalities
        if keyword in q.keys:
            raise InvalidRequest(f"matching key {keyword} given more than once")
        if value.strip(" ") not in ("", "*") and keyword not in MATCHABLE[level]:
            if keyword in _IMAGE_MATCH:
                raise InvalidRequest(f"{keyword} is not an attribute of this query level")
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


_LEVEL_MODELS: dict[Level, tuple[type, ...]] = {
    Level.STUDY: (Study, Patient),
    Level.SERIES: (Series, Study, Patient),
    Level.IMAGE: (Instance, Series, Study, Patient),
}
# Table columns (Core) that answers are read from.
_C: dict[type, Any] = {model: model.__table__.c for model in (Patient, Study, Series, Instance)}  # type: ignore[attr-defined]
# The UIDs a RetrieveURL is made of, per level.
_URL_COLUMNS: dict[Level, tuple[Any, ...]] = {
    Level.STUDY: (_C[Study].StudyInstanceUID,),
    Level.SERIES: (_C[Study].StudyInstanceUID, _C[Series].SeriesInstanceUID),
    Level.IMAGE: (_C[Study].StudyInstanceUID, _C[Series].SeriesInstanceUID, _C[Instance].SOPInstanceUID),
}
_ONLINE = dumps_text({"vr": "CS", "Value": ["ONLINE"]})
Encoder = Callable[[Sequence[Any]], list[str]]  # a column of values -> their JSON object members


def _constant(text: str) -> Encoder:
    return lambda values: [text] * len(values)


def _priority(member: str) -> Encoder:
    """The triage priority as Scheduled Procedure Step Priority: one CS value, or none."""
    head, empty = member + '{"vr":"CS","Value":[', member + dumps_text({"vr": "CS"})
    return lambda values: [head + json_string(v) + "]}" if v else empty for v in values]


def _texts(values: Sequence[Any]) -> list[str]:
    return [str(v) for v in values]


@dataclass(frozen=True)
class Plan:
    """How to write the answer objects of one request shape (level, return keys, includefield=all),
    worked out once: which columns to read and one encoder per return key.

    Rows hold only `columns`; each row is extended with its RetrieveURL and then with the JSON member text
    of each `missing` key (read from the metadata cache). `steps` are the answer's members in ascending tag
    order: (index into the extended row, encoder writing a column of values as members `"TAG":{...}`).
    """

    level: Level
    keys: tuple[str, ...]  # JSON keys (tags) of the answer, ascending
    columns: tuple[Any, ...]
    steps: tuple[tuple[int, Encoder], ...]
    url_columns: tuple[int, ...]
    missing: tuple[tuple[str, str], ...]  # (JSON key, VR) of the keys from the metadata cache
    cache_column: int | None  # the row's study_pk / series_pk / metadata_json, when the cache is needed
    include_all: bool


@lru_cache(maxsize=512)
def compile_plan(level: Level, keys: tuple[str, ...], include_all: bool) -> Plan:
    """The Plan of the return keywords `keys` (`_return_keys`) at `level`."""
    columns: list[Any] = []

    def column(attribute: Any) -> int:  # by identity (`==` on a column builds SQL)
        for i, known in enumerate(columns):
            if known is attribute:
                return i
        columns.append(attribute)
        return len(columns) - 1

    url_columns = tuple(column(c) for c in _URL_COLUMNS[level])
    entries: list[tuple[str, str, str, Any]] = []
    for keyword in keys:
        tag, _ = resolve(keyword)
        model = next((m for m in _LEVEL_MODELS[level] if keyword in _MODEL_COLUMNS[m]), None)
        entries.append((tag_key(tag), vr_of(tag), keyword, model))
    entries.sort(key=lambda e: e[0])
    missing = [(key, vr) for key, vr, keyword, model in entries if model is None and keyword not in _COMPUTED]
    URL, MISSING = -1, -2  # placeholders: the extended row's values after the columns
    steps: list[tuple[int, Encoder]] = []
    for key, vr, keyword, model in entries:
        member = json_string(key) + ":"
        if keyword == "InstanceAvailability":
            steps.append((0, _constant(member + _ONLINE)))
        elif keyword == TRIAGE_PRIORITY:
            steps.append((column(_C[Study].priority), _priority(member)))
        elif keyword == "RetrieveURL":
            steps.append((URL, column_encoder("UR", key)))
        elif model is None:
            steps.append((MISSING - missing.index((key, vr)), _texts))
        else:
            steps.append((column(_C[model][keyword]), column_encoder(vr, key)))
    cache_column = None
    if missing or (include_all and level is Level.IMAGE):
        cache = {Level.STUDY: _C[Study].study_pk, Level.SERIES: _C[Series].series_pk}.get(
            level, _C[Instance].metadata_json
        )
        cache_column = column(cache)
    url_index = len(columns)
    return Plan(
        level=level,
        keys=tuple(e[0] for e in entries),
        columns=tuple(columns),
        steps=tuple((i if i >= 0 else url_index + URL - i, encode) for i, encode in steps),
        url_columns=url_columns,
        missing=tuple(missing),
        cache_column=cache_column,
        include_all=include_all,
    )


def _cached(session: Session, plan: Plan, row: Any) -> dict[str, Any]:
    """The metadata cache of the row's entity (one representative instance)."""
    assert plan.cache_column is not None
    held = row[plan.cache_column]
    if plan.level is Level.IMAGE:
        return metadata_dict(held)
    if plan.level is Level.SERIES:
        return representative_metadata_of(session, series_pk=held)
    return representative_metadata_of(session, study_pk=held)


def _member(key: str, value: Any) -> str:
    return json_string(key) + ":" + dumps_text(value)


def encode_answers(session: Session, ctx: Context, plan: Plan, rows: Sequence[Any]) -> str:
    """The DICOM JSON array (PS3.18 F.2) of the rows, as text."""
    if not rows:
        return "[]"
    level = plan.level
    u = plan.url_columns
    steps = plan.steps
    if level is Level.STUDY:
        study_url = ctx.study_url
        urls = [study_url(row[u[0]]) for row in rows]
    elif level is Level.SERIES:
        series_url = ctx.series_url
        urls = [series_url(row[u[0]], row[u[1]]) for row in rows]
    else:
        instance_url = ctx.instance_url
        urls = [instance_url(row[u[0]], row[u[1]], row[u[2]]) for row in rows]
    if plan.cache_column is None:  # the common case: every value from the row; written column by column
        values = [*zip(*rows, strict=True), urls]
        members = [encode(values[i]) for i, encode in steps]
        return "[{" + "},{".join([",".join(answer) for answer in zip(*members, strict=True)]) + "}]"
    items: list[str] = []
    for row, url in zip(rows, urls, strict=True):
        cached = _cached(session, plan, row)
        extended: tuple[Any, ...] = (*row, url)
        for key, vr in plan.missing:
            value = cached.get(key)
            present = value is not None and "BulkDataURI" not in value
            extended += (_member(key, value if present else {"vr": vr}),)
        parts = {key: encode((extended[i],))[0] for key, (i, encode) in zip(plan.keys, steps, strict=True)}
        if plan.include_all and level is Level.IMAGE:
            # Also everything the cache holds below the pixel data (besides the return keys).
            for key, value in cached.items():
                if key not in parts and "BulkDataURI" not in value and key < "7FE00010":
                    parts[key] = _member(key, value)
        items.append("{" + ",".join([parts[k] for k in sorted(parts)]) + "}")
    return "[" + ",".join(items) + "]"


def search(request: Request, ctx: Context, level: Level, scope: dict[str, str]) -> Response:
    settings = ctx.archive.settings
    for keyword, uid in scope.items():
        if not valid_uid(uid):
            raise InvalidRequest(f"invalid {keyword} in the path")
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
    plan = compile_plan(level, tuple(_return_keys(q, level)), q.include_all)
    headers: dict[str, str] = {}
    try:
        with ctx.archive.db.read() as session:
            rows = find_rows(session, query, plan.columns)
            if capped and len(rows) == limit:
                total = count(session, query)
                remaining = total - q.offset - len(rows)
                if remaining > 0:
                    q.warnings.insert(0, f"There are {remaining} additional results that can be requested")
            body = encode_answers(session, ctx, plan, rows)
    except InvalidMatchKey as exc:
        raise InvalidRequest(str(exc)) from None
    if q.warnings:
        headers["Warning"] = ", ".join(f'299 imaging: "{w}"' for w in q.warnings)
    if not rows and settings.empty_qido_status == "204":
        return Response(status_code=204, headers=headers)
    return Response(body.encode(), media_type=MEDIA_TYPE, headers=headers)


@router.get("/studies", summary="Search for studies")
def search_studies(request: Request, ctx: ReadContext) -> Response:
    return search(request, ctx, Level.STUDY, {})


@router.get("/series", summary="Search for series (all studies)")
def search_all_series(request: Request, ctx: ReadContext) -> Response:
    return search(request, ctx, Level.SERIES, {})


@router.get("/studies/{study}/series", summary="Search for series of a study")
def search_series(study: str, request: Request, ctx: ReadContext) -> Response:
    return search(request, ctx, Level.SERIES, {"StudyInstanceUID": study})


@router.get("/instances", summary="Search for instances (all studies)")
def search_all_instances(request: Request, ctx: ReadContext) -> Response:
    return search(request, ctx, Level.IMAGE, {})


@router.get("/studies/{study}/instances", summary="Search for instances of a study")
def search_study_instances(study: str, request: Request, ctx: ReadContext) -> Response:
    return search(request, ctx, Level.IMAGE, {"StudyInstanceUID": study})


@router.get("/studies/{study}/series/{series}/instances", summary="Search for instances of a series")
def search_series_instances(study: str, series: str, request: Request, ctx: ReadContext) -> Response:
    return search(request, ctx, Level.IMAGE, {"StudyInstanceUID": study, "SeriesInstanceUID": series})
