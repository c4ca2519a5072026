"""Hierarchical queries over the index, shared by C-FIND and QIDO-RS."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from imaging.index.attributes import LEVEL_KEYS, Level
from imaging.index.extract import metadata_dict
from imaging.index.matching import COLUMNS, conditions
from imaging.index.schema import CLINICAL, Instance, Patient, Series, Study

# Attributes of higher levels that a lower-level answer also carries (QIDO includes them by default).
LEVEL_MODELS: dict[Level, tuple[type, ...]] = {
    Level.PATIENT: (Patient,),
    Level.STUDY: (Study, Patient),
    Level.SERIES: (Series, Study, Patient),
    Level.IMAGE: (Instance, Series, Study, Patient),
}


@dataclass
class Query:
    level: Level
    keys: dict[str, str] = field(default_factory=dict)  # keyword -> matching value ("" = universal)
    partition: str = CLINICAL
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0
    priority: str | None = None  # triage priority filter (study level and below)
    study_uids: frozenset[str] | None = None  # a share link's scope: only these studies


class _Rows:
    """Per table, a light read-only row type (attribute access like the ORM object, a tuple underneath).

    Matches are only read: building ORM objects with identity map and state for each of the hundred rows
    of a study list cost more than the query itself.
    """

    def __init__(self, model: type) -> None:
        self.columns = list(model.__table__.columns)  # type: ignore[attr-defined]
        self.type: Any = namedtuple(f"{model.__name__}Row", [c.key for c in self.columns])  # type: ignore[misc]


_ROWS: dict[type, _Rows] = {model: _Rows(model) for model in (Patient, Study, Series, Instance)}


@dataclass
class Match:
    """One matching entity with its ancestors (rows with the columns of Patient, Study, Series, Instance)."""

    patient: Any
    study: Any = None
    series: Any = None
    instance: Any = None

    def value(self, keyword: str) -> Any:
        for row in (self.instance, self.series, self.study, self.patient):
            if row is not None and keyword in row._fields:
                return getattr(row, keyword)
        return _MISSING


_MISSING = object()


def _statement(query: Query) -> Select[Any]:
    models = LEVEL_MODELS[query.level]
    stmt: Select[Any] = select(*models)  # type: ignore[assignment]
    if query.level in (Level.IMAGE, Level.SERIES):
        if query.level is Level.IMAGE:
            stmt = stmt.join(Series, Series.series_pk == Instance.series_pk)
        stmt = stmt.join(Study, Study.study_pk == Series.study_pk)
    if query.level is not Level.PATIENT:
        stmt = stmt.join(Patient, Patient.patient_pk == Study.patient_pk)
        stmt = stmt.where(Study.partition == query.partition)
        if query.priority:
            stmt = stmt.where(Study.priority.in_(query.priority.split(",")))
        if query.study_uids is not None:
            stmt = stmt.where(Study.StudyInstanceUID.in_(sorted(query.study_uids)))
    else:
        stmt = stmt.where(Patient.partition == query.partition)
        # A patient with no study left is not answered.
        stmt = stmt.where(select(Study.study_pk).where(Study.patient_pk == Patient.patient_pk).exists())
    keys = {k: v for k, v in query.keys.items() if k in COLUMNS or k.endswith("InStudy")}
    return stmt.where(conditions(keys, fuzzy=query.fuzzy))


_ORDER: dict[Level, tuple[Any, ...]] = {
    Level.PATIENT: (Patient.patient_pk,),
    Level.STUDY: (Study.StudyDate.desc(), Study.StudyTime.desc(), Study.study_pk),
    Level.SERIES: (Series.SeriesNumber, Series.series_pk),
    Level.IMAGE: (Instance.InstanceNumber, Instance.instance_pk),
}


def find(session: Session, query: Query) -> list[Match]:
    models = LEVEL_MODELS[query.level]
    columns = [c for model in models for c in _ROWS[model].columns]
    stmt = _statement(query).with_only_columns(*columns).order_by(*_ORDER[query.level]).offset(query.offset)
    if query.limit is not None:
        stmt = stmt.limit(query.limit)
    slices = []
    start = 0
    for model in models:
        rows = _ROWS[model]
        slices.append((rows.type._make, start, start + len(rows.columns)))
        start += len(rows.columns)
    matches = []
    for row in session.connection().execute(stmt):
        entities = [make(row[i:j]) for make, i, j in slices]
        match = Match(patient=entities[-1])
        if query.level is not Level.PATIENT:
            match.study = entities[-2]
        if query.level in (Level.SERIES, Level.IMAGE):
            match.series = entities[-3]
        if query.level is Level.IMAGE:
            match.instance = entities[0]
        matches.append(match)
    return matches


def count(session: Session, query: Query) -> int:
    return int(session.scalar(select(func.count()).select_from(_statement(query).subquery())) or 0)


def _patient_counts(session: Session, patient_pk: int) -> dict[str, int]:
    row = session.execute(
        select(
            func.count(func.distinct(Study.study_pk)),
            func.coalesce(func.sum(Study.NumberOfStudyRelatedSeries), 0),
            func.coalesce(func.sum(Study.NumberOfStudyRelatedInstances), 0),
        ).where(Study.patient_pk == patient_pk)
    ).one()
    return {
        "NumberOfPatientRelatedStudies": int(row[0]),
        "NumberOfPatientRelatedSeries": int(row[1]),
        "NumberOfPatientRelatedInstances": int(row[2]),
    }


def representative_metadata(session: Session, match: Match) -> dict[str, Any]:
    """DICOM JSON of one instance of the matched entity, for return keys the index has no column for."""
    if match.instance is not None:
        return metadata_dict(match.instance.metadata_json)
    stmt = select(Instance.metadata_json).join(Series, Series.series_pk == Instance.series_pk)
    if match.series is not None:
        stmt = stmt.where(Instance.series_pk == match.series.series_pk)
    elif match.study is not None:
        stmt = stmt.where(Series.study_pk == match.study.study_pk)
    else:
        stmt = stmt.join(Study, Study.study_pk == Series.study_pk).where(
            Study.patient_pk == match.patient.patient_pk
        )
    blob = session.scalar(stmt.order_by(Instance.instance_pk).limit(1))
    return metadata_dict(blob) if blob else {}


def identifier(
    session: Session,
    match: Match,
    level: Level,
    return_keys: Iterable[str],
    *,
    extra_tags: Sequence[int] = (),
) -> Dataset:
    """A Dataset holding `return_keys` (keywords) for `match`; values from columns, else the metadata cache."""
    ds = Dataset()
    missing: list[int] = list(extra_tags)
    counts: dict[str, int] | None = None
    for keyword in return_keys:
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue
        if keyword.startswith("NumberOfPatientRelated"):
            counts = counts or _patient_counts(session, match.patient.patient_pk)
            ds.add_new(tag, "IS", counts[keyword])
            continue
        value = match.value(keyword)
        if value is _MISSING:
            missing.append(tag)
            continue
        vr = dictionary_VR(tag)
        if value is None or value == "":
            ds.add_new(tag, vr, None)
        elif isinstance(value, str) and "\\" in value and vr not in ("LT", "ST", "UT"):
            ds.add_new(tag, vr, value.split("\\"))
        else:
            ds.add_new(tag, vr, value)
    if missing:
        cached = representative_metadata(session, match)
        wanted = {f"{t:08X}": cached[f"{t:08X}"] for t in missing if f"{t:08X}" in cached}
        wanted = {k: v for k, v in wanted.items() if "BulkDataURI" not in v}
        if wanted:
            ds.update(Dataset.from_json(wanted))
        for tag in missing:
            if tag not in ds and tag not in extra_tags:
                ds.add_new(tag, dictionary_VR(tag), None)
    return ds


def default_keys(level: Level) -> tuple[str, ...]:
    return LEVEL_KEYS[level]
