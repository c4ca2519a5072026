"""Series stability: no new instance for a quiet period and no open association sending it.
A study is stable when all of its series are. Both become durable change-log events."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from imaging.events import ChangeKind
from imaging.index.schema import ChangeLog, Series, Study, utcnow


def quiet_series(quiet_seconds: float, now: dt.datetime | None = None) -> Select[Any]:
    """Series not stable yet whose last instance came more than `quiet_seconds` ago (candidates)."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=quiet_seconds)
    return select(Series.series_pk).where(Series.stable.is_(False), Series.last_received_at <= cutoff)


def mark_stable(
    session: Session, quiet_seconds: float, receiving: set[tuple[str, str]], now: dt.datetime | None = None
) -> int:
    """Mark quiet series (and then complete studies) stable; returns how many series changed."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=quiet_seconds)
    rows = session.execute(
        select(Series, Study)
        .join(Study, Study.study_pk == Series.study_pk)
        .where(Series.stable.is_(False), Series.last_received_at <= cutoff)
        .limit(500)
        .with_for_update(of=Series, skip_locked=True)  # PostgreSQL: one process marks each series
    ).all()
    studies: dict[int, Study] = {}
    changed = 0
    for series, study in rows:
        if (study.partition, series.SeriesInstanceUID) in receiving:
            continue
        series.stable = True
        changed += 1
        studies[study.study_pk] = study
        session.add(
            ChangeLog(
                kind=ChangeKind.SERIES_STABLE,
                partition=study.partition,
                StudyInstanceUID=study.StudyInstanceUID,
                SeriesInstanceUID=series.SeriesInstanceUID,
            )
        )
    session.flush()
    for study in studies.values():
        unstable = session.scalar(
            select(Series.series_pk)
            .where(Series.study_pk == study.study_pk, Series.stable.is_(False))
            .limit(1)
        )
        if unstable is None and not study.stable:
            study.stable = True
            session.add(
                ChangeLog(
                    kind=ChangeKind.STUDY_STABLE,
                    partition=study.partition,
                    StudyInstanceUID=study.StudyInstanceUID,
                )
            )
    return changed
