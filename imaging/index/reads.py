"""The read API every consumer of stored instances shares: which instances a study / series / instance
reference names, in presentation order (series number, then instance number), and their object keys.
WADO-RS, rendered, C-GET/C-MOVE, triage, publication, cohorts and delivery select through here and then read
the objects by key from the store."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from imaging.index.schema import Instance, Series, Study


def select_instances(
    columns: tuple[Any, ...],
    partition: str,
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
) -> Select[Any]:
    """`columns` of the instances the reference names, in series then instance order. A study of None
    matches any study (a series or instance is named by its own UID)."""
    stmt = (
        select(*columns)
        .join(Series, Series.series_pk == Instance.series_pk)
        .join(Study, Study.study_pk == Series.study_pk)
        .where(Study.partition == partition)
    )
    if study is not None:
        stmt = stmt.where(Study.StudyInstanceUID == study)
    if series is not None:
        stmt = stmt.where(Series.SeriesInstanceUID == series)
    if sop is not None:
        stmt = stmt.where(Instance.SOPInstanceUID == sop)
    return stmt.order_by(Series.SeriesNumber, Series.series_pk, Instance.InstanceNumber, Instance.instance_pk)


def instance_keys(
    session: Session, partition: str, study: str | None = None, series: str | None = None
) -> list[str]:
    """Object keys of a study's or a series' instances, in order."""
    return list(session.scalars(select_instances((Instance.object_key,), partition, study, series)))


def series_instance_keys(session: Session, series_pk: int) -> list[str]:
    """Object keys of one series (by surrogate key), in instance order."""
    return list(
        session.scalars(
            select(Instance.object_key)
            .where(Instance.series_pk == series_pk)
            .order_by(Instance.InstanceNumber, Instance.instance_pk)
        )
    )
