"""Attribute matching per PS3.4 C.2.2.2 (C-FIND) and PS3.18 8.3.4 (QIDO-RS), as SQL with bound parameters.

Kinds: universal (empty or `*`), single value, list of UIDs, wildcard (`*`, `?`), date/time range
(`a-b`, `a-`, `-b`). Person names match case-insensitively; with fuzzy matching a value matches the start
of any name component.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, or_, select, true

from imaging.index.schema import Instance, Patient, Series, Study

DATE_KEYS = {"StudyDate", "SeriesDate", "ContentDate", "PatientBirthDate", "PerformedProcedureStepStartDate"}
TIME_KEYS = {"StudyTime", "SeriesTime", "ContentTime", "PerformedProcedureStepStartTime"}
PN_KEYS = {"PatientName", "ReferringPhysicianName"}
INT_KEYS = {
    "SeriesNumber",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances",
}

# Keyword -> table column (Core: conditions on plain columns keep the statements free of ORM machinery).
COLUMNS: dict[str, ColumnElement[Any]] = {}
for _model in (Patient, Study, Series, Instance):
    for _col in _model.__table__.columns:  # type: ignore[attr-defined]
        if _col.key[:1].isupper():
            COLUMNS[_col.key] = _col
_STUDY, _SERIES, _INSTANCE = Study.__table__.c, Series.__table__.c, Instance.__table__.c  # type: ignore[attr-defined]


class InvalidMatchKey(ValueError):
    """A matching value that is not valid for its attribute (e.g. a malformed date range)."""


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _wildcard_pattern(value: str) -> str:
    return _escape_like(value).replace("*", "%").replace("?", "_")


def _is_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _check_digits(value: str, keyword: str, allowed: str = "") -> None:
    if not all(c.isdigit() or c in allowed for c in value):
        raise InvalidMatchKey(f"invalid value for {keyword}")


def _range(column: Any, value: str, keyword: str, *, is_time: bool) -> ColumnElement[bool]:
    allowed = ".:" if is_time else ""
    if "-" not in value:
        _check_digits(value, keyword, allowed)
        if is_time:  # a time matches at the precision given: 1015 matches 101500..101559.9
            return column.like(_escape_like(value.replace(":", "")) + "%", escape="\\")
        return column == value
    low, _, high = value.partition("-")
    low, high = low.replace(":", ""), high.replace(":", "")
    _check_digits(low, keyword, allowed)
    _check_digits(high, keyword, allowed)
    if not low and not high:
        raise InvalidMatchKey(f"invalid range for {keyword}")
    clauses: list[ColumnElement[bool]] = [column != ""]
    if low:
        clauses.append(column >= low)
    if high:
        if is_time:
            head, _, frac = high.partition(".")
            high = head.ljust(6, "9") + "." + frac.ljust(6, "9")
        clauses.append(column <= high)
    return and_(*clauses)


def _person_name(column: Any, value: str, fuzzy: bool) -> ColumnElement[bool]:
    lowered = value.lower()
    if fuzzy and not _is_wildcard(value):
        # Match the start of any component (family, given, middle...) of any component group.
        prefix = _escape_like(lowered)
        return or_(
            func.lower(column).like(prefix + "%", escape="\\"),
            func.lower(column).like("%^" + prefix + "%", escape="\\"),
            func.lower(column).like("% " + prefix + "%", escape="\\"),
            func.lower(column).like("%=" + prefix + "%", escape="\\"),
        )
    if _is_wildcard(value):
        return func.lower(column).like(_wildcard_pattern(lowered), escape="\\")
    # Trailing empty components are insignificant: DOE^JOHN^^ equals DOE^JOHN.
    return func.lower(func.rtrim(column, "^=")) == lowered.rstrip("^=")


def _string(column: Any, value: str) -> ColumnElement[bool]:
    if _is_wildcard(value):
        return column.like(_wildcard_pattern(value), escape="\\")
    return column == value


def _values_in(column: Any, values: list[str]) -> ColumnElement[bool]:
    plain = [v for v in values if not _is_wildcard(v)]
    clauses: list[ColumnElement[bool]] = [column.in_(plain)] if plain else []
    clauses += [column.like(_wildcard_pattern(v), escape="\\") for v in values if _is_wildcard(v)]
    return or_(*clauses) if clauses else false()


def condition(keyword: str, value: str, *, fuzzy: bool = False) -> ColumnElement[bool] | None:
    """The SQL condition for one matching key, or None for universal matching / unsupported keys."""
    value = value.strip(" ") if keyword not in PN_KEYS else value.strip()
    if value in ("", "*"):
        return None
    if keyword == "ModalitiesInStudy":
        return exists(
            select(_SERIES.series_pk).where(
                _SERIES.study_pk == _STUDY.study_pk, _values_in(_SERIES.Modality, value.split("\\"))
            )
        )
    if keyword == "SOPClassesInStudy":
        return exists(
            select(_INSTANCE.instance_pk)
            .select_from(Instance.__table__.join(Series.__table__, _SERIES.series_pk == _INSTANCE.series_pk))
            .where(_SERIES.study_pk == _STUDY.study_pk, _INSTANCE.SOPClassUID.in_(value.split("\\")))
        )
    column = COLUMNS.get(keyword)
    if column is None:
        return None  # not a matching key this archive supports: treated as a return key only
    if keyword in INT_KEYS:
        try:
            return column.in_([int(v) for v in value.split("\\")])
        except ValueError:
            raise InvalidMatchKey(f"invalid value for {keyword}") from None
    if keyword in DATE_KEYS or keyword in TIME_KEYS:
        parts = [_range(column, v, keyword, is_time=keyword in TIME_KEYS) for v in value.split("\\")]
        return or_(*parts)
    if keyword in PN_KEYS:
        return or_(*[_person_name(column, v, fuzzy) for v in value.split("\\")])
    if keyword.endswith("UID"):
        uids = value.split("\\")
        for uid in uids:
            if len(uid) > 64 or not all(c.isdigit() or c in ".*?" for c in uid):
                raise InvalidMatchKey(f"invalid UID in {keyword}")
        return _values_in(column, uids)
    if "\\" in value:
        return _values_in(column, value.split("\\"))
    return _string(column, value)


def conditions(keys: dict[str, str], *, fuzzy: bool = False) -> ColumnElement[bool]:
    parts = [c for c in (condition(k, v, fuzzy=fuzzy) for k, v in keys.items()) if c is not None]
    return and_(*parts) if parts else true()
