"""Counts and sizes per partition (`imaging stats`, the operator's pages), and what arrived per day."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from imaging.index.schema import Instance, Patient, Series, Study, utcnow


@dataclass(frozen=True)
class PartitionCounts:
    partition: str
    patients: int
    studies: int
    series: int
    instances: int
    bytes: int


def partition_counts(session: Session) -> list[PartitionCounts]:
    patients = _counts(session, select(Patient.partition, func.count()).group_by(Patient.partition))
    studies = _counts(session, select(Study.partition, func.count()).group_by(Study.partition))
    series = _counts(
        session,
        select(Study.partition, func.count()).select_from(Series).join(Study).group_by(Study.partition),
    )
    instances = {
        str(partition): (int(count), int(size or 0))
        for partition, count, size in session.execute(
            select(Study.partition, func.count(), func.sum(Instance.size))
            .select_from(Instance)
            .join(Series)
            .join(Study)
            .group_by(Study.partition)
        )
    }
    return [
        PartitionCounts(
            partition,
            patients.get(partition, 0),
            studies[partition],
            series.get(partition, 0),
            *instances.get(partition, (0, 0)),
        )
        for partition in sorted(studies)
    ]


def _counts(session: Session, stmt: Select[str, int]) -> dict[str, int]:
    return {str(partition): int(count) for partition, count in session.execute(stmt)}


@dataclass(frozen=True)
class DayCount:
    day: dt.date
    instances: int
    bytes: int


def instances_per_day(session: Session, days: int = 30, *, today: dt.date | None = None) -> list[DayCount]:
    """Instances received on each of the last `days` days (UTC, today included; days without any are
    zero), every partition together."""
    last = today or utcnow().date()
    first = last - dt.timedelta(days=days - 1)
    day = func.date(Instance.received_at)
    found = {
        str(when): (int(count), int(size or 0))
        for when, count, size in session.execute(
            select(day, func.count(), func.sum(Instance.size))
            .where(Instance.received_at >= dt.datetime.combine(first, dt.time()))
            .group_by(day)
        )
    }
    return [
        DayCount(d, *found.get(d.isoformat(), (0, 0)))
        for d in (first + dt.timedelta(days=k) for k in range(days))
    ]
