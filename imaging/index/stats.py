"""Counts and sizes per partition (`imaging stats`, the operator's pages)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from imaging.index.schema import Instance, Patient, Series, Study


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
