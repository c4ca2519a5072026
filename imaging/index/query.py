"""Hierarchical queries over the index, shared by C-FIND and QIDO-RS."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from sqlalchemy import Row, Select, func, select
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


# Statements are built on the tables (Core), not the mapped classes: the rows are read as plain tuples
# anyway, and ORM-annotated columns made each search pay for the ORM's statement machinery.
_PATIENT, _STUDY, _SERIES, _INSTANCE = (m.__table__ for m in (Patient, Study, Series, Instance))  # type: ignore[attr-defined]
_P, _S, _SE, _I = _PATIENT.c, _STUDY.c, _SERIES.c, _INSTANCE.c
_TABLES: dict[Level, tuple[Any, ...]] = {
    Level.PATIENT: (_PATIENT,),
    Level.STUDY: (_STUDY, _PATIENT),
    Level.SERIES: (_SERIES, _STUDY, _PATIENT),
    Level.IMAGE: (_INSTANCE, _SERIES, _STUDY, _PATIENT),
}
# FROM of each level's query (built once: joins are immutable).
_FROM: dict[Level, Any] = {
    Level.PATIENT: _PATIENT,
    Level.STUDY: _STUDY.join(_PATIENT, _P.patient_pk == _S.patient_pk),
    Level.SERIES: _SERIES.join(_STUDY, _S.study_pk == _SE.study_pk).join(
        _PATIENT, _P.patient_pk == _S.patient_pk
    ),
    Level.IMAGE: _INSTANCE.join(_SERIES, _SE.series_pk == _I.series_pk)
    .join(_STUDY, _S.study_pk == _SE.study_pk)
    .join(_PATIENT, _P.patient_pk == _S.patient_pk),
}
# A patient with no study left is not answered.
_HAS_STUDY = select(_S.study_pk).where(_S.patient_pk == _P.patient_pk).exists()


_ORDER: dict[Level, tuple[Any, ...]] = {
    Level.PATIENT: (_P.patient_pk,),
    Level.STUDY: (_S.StudyDate.desc(), _S.StudyTime.desc(), _S.study_pk),
    Level.SERIES: (_SE.SeriesNumber, _SE.series_pk),
    Level.IMAGE: (_I.InstanceNumber, _I.instance_pk),
}


@lru_cache(maxsize=256)
def _select(level: Level, columns: tuple[Any, ...] | None, ordered: bool) -> Select[Any]:
    """`SELECT columns FROM <the level's join> [ORDER BY <the level's answer order>]`: statements are
    immutable, so this part is built once per column list and each query only adds its criteria."""
    stmt = select(*(_TABLES[level] if columns is None else columns)).select_from(_FROM[level])
    return stmt.order_by(*_ORDER[level]) if ordered else stmt


def _statement(query: Query, columns: Sequence[Any] | None = None, *, ordered: bool = False) -> Select[Any]:
    """The level's matching query, selecting `columns` (default: every column of the level's tables)."""
    stmt = _select(query.level, None if columns is None else tuple(columns), ordered)
    if query.level is Level.PATIENT:
        criteria = [_P.partition == query.partition, _HAS_STUDY]
    else:
        criteria = [_S.partition == query.partition]
        if query.priority:
            criteria.append(_S.priority.in_(query.priority.split(",")))
        if query.study_uids is not None:
            criteria.append(_S.StudyInstanceUID.in_(sorted(query.study_uids)))
    keys = {k: v for k, v in query.keys.items() if k in COLUMNS or k.endswith("InStudy")}
    return stmt.where(*criteria, conditions(keys, fuzzy=query.fuzzy))


def _ordered(query: Query, columns: Sequence[Any]) -> Select[Any]:
    """The level's query selecting `columns`, in the level's answer order, paged."""
    stmt = _statement(query, columns, ordered=True).offset(query.offset)
    if query.limit is not None:
        stmt = stmt.limit(query.limit)
    return stmt


def find(session: Session, query: Query) -> list[Match]:
    models = LEVEL_MODELS[query.level]
    columns = [c for model in models for c in _ROWS[model].columns]
    slices = []
    start = 0
    for model in models:
        rows = _ROWS[model]
        slices.append((rows.type._make, start, start + len(rows.columns)))
        start += len(rows.columns)
    matches = []
    for row in session.connection().execute(_ordered(query, columns)).all():
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


def find_rows(session: Session, query: Query, columns: Sequence[Any]) -> Sequence[Row[Any]]:
    """What `find` matches, in the same order, as plain rows of only `columns` (columns of the level's
    tables, e.g. `Study.__table__.c.StudyDate`): a QIDO page reads the columns it returns and no more."""
    return session.connection().execute(_ordered(query, columns)).all()


_KEY: dict[Level, Any] = {
    Level.PATIENT: _P.patient_pk,
    Level.STUDY: _S.study_pk,
    Level.SERIES: _SE.series_pk,
    Level.IMAGE: _I.instance_pk,
}


def count(session: Session, query: Query) -> int:
    """How many entities `find` would match without limit and offset (one row per entity)."""
    stmt = _statement(query, [_KEY[query.level]])
    return int(session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)


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
    if match.series is not None:
        return representative_metadata_of(session, series_pk=match.series.series_pk)
    if match.study is not None:
        return representative_metadata_of(session, study_pk=match.study.study_pk)
    return representative_metadata_of(session, patient_pk=match.patient.patient_pk)


def representative_metadata_of(
    session: Session,
    *,
    series_pk: int | None = None,
    study_pk: int | None = None,
    patient_pk: int | None = None,
) -> dict[str, Any]:
    """DICOM JSON of the first instance (lowest instance_pk) of a series, else a study, else a patient."""
    stmt = select(Instance.metadata_json).join(Series, Series.series_pk == Instance.series_pk)
    if series_pk is not None:
        stmt = stmt.where(Instance.series_pk == series_pk)
    elif study_pk is not None:
        stmt = stmt.where(Series.study_pk == study_pk)
    else:
        stmt = stmt.join(Study, Study.study_pk == Series.study_pk).where(Study.patient_pk == patient_pk)
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
