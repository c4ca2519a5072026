"""Instances leaving the archive: out of the index first, then their objects out of storage, crash-safe.

`remove_instances` takes instances out of the index inside the caller's transaction: at commit every read
path (QIDO, WADO, metadata, C-FIND, C-GET/C-MOVE, cohorts, sharing) stops seeing them, the derived counts of
their series, studies and patients are recomputed and emptied rows dropped, the change log says
InstanceDeleted, the audit trail says Study Deleted (110105) per study, and `InstancesRemoved` is published
for features to react (the sharing outbox cancels their queued deliveries). Each object key gets a
PendingDeletion row: the durable record that the object is to go.

`purge` then deletes the objects whose time has come (a rejected instance waits for its title's delay; a
deleted one goes at once) and their rows. A crash anywhere leaves rows to finish, never an object that
start-up recovery would take for a lost ingest and index again (imaging.ingest.recovery, fsck and reindex
all know pending keys).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import DateTime, Integer, String, delete, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from imaging import audit
from imaging.events import ChangeKind, InstancesRemoved, publish
from imaging.index.db import Database
from imaging.index.reads import select_instances
from imaging.index.schema import ChangeLog, Instance, Patient, Series, Study
from imaging.orm import Base, utcnow
from imaging.storage.base import InstanceStore

log = logging.getLogger(__name__)


class PendingDeletion(Base):
    """An object key whose instance left the index; the object goes when `purge` finds it due."""

    __tablename__ = "pending_deletion"
    deletion_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    object_key: Mapped[str] = mapped_column(String(160), index=True)
    partition: Mapped[str] = mapped_column(String(64))
    StudyInstanceUID: Mapped[str] = mapped_column(String(64), default="")
    SOPInstanceUID: Mapped[str] = mapped_column(String(64), default="")
    # deleted | retention:<rule> | erased | rejected:<title code> | rejection-note:<title code>
    reason: Mapped[str] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)


@dataclass
class Removed:
    """What one removal took out of the index."""

    instances: int = 0
    keys: list[str] = field(default_factory=list)
    studies: dict[str, int] = field(default_factory=dict)  # StudyInstanceUID -> instances removed
    bytes: int = 0


_COLUMNS = (
    Instance.instance_pk,
    Instance.object_key,
    Instance.size,
    Instance.SOPInstanceUID,
    Instance.SOPClassUID,
    Instance.series_pk,
    Series.SeriesInstanceUID,
    Series.study_pk,
    Study.StudyInstanceUID,
    Study.patient_pk,
)


def select_removable(
    session: Session,
    partition: str,
    study: str | None = None,
    series: str | None = None,
    sops: Iterable[str] | None = None,
) -> list[Any]:
    """The rows `remove_instances` takes, for a study, a series, or a set of SOP Instance UIDs."""
    stmt = select_instances(_COLUMNS, partition, study, series)
    if sops is not None:
        stmt = stmt.where(Instance.SOPInstanceUID.in_(list(sops)))
    return list(session.execute(stmt).all())


def remove_instances(
    session: Session,
    partition: str,
    rows: list[Any],
    *,
    reason: str,
    user: str,
    detail: str = "",
) -> Removed:
    """Take `rows` (from `select_removable`) out of the index in the caller's transaction; see the module
    docstring. Their objects stay until `purge`."""
    removed = Removed()
    if not rows:
        return removed
    now = utcnow()
    by_study: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_study[row.StudyInstanceUID].append(row)
    pks = [row.instance_pk for row in rows]
    for start in range(0, len(pks), 500):
        session.execute(delete(Instance).where(Instance.instance_pk.in_(pks[start : start + 500])))
    for row in rows:
        session.add(
            PendingDeletion(
                object_key=row.object_key,
                partition=partition,
                StudyInstanceUID=row.StudyInstanceUID,
                SOPInstanceUID=row.SOPInstanceUID,
                reason=reason[:64],
                requested_by=user[:128],
                created_at=now,
            )
        )
        session.add(
            ChangeLog(
                kind=ChangeKind.INSTANCE_DELETED,
                partition=partition,
                StudyInstanceUID=row.StudyInstanceUID,
                SeriesInstanceUID=row.SeriesInstanceUID,
                SOPInstanceUID=row.SOPInstanceUID,
                detail=reason[:256],
                created_at=now,
            )
        )
    session.flush()
    _recount(session, {r.series_pk for r in rows}, {r.study_pk for r in rows}, {r.patient_pk for r in rows})
    for study_uid, study_rows in by_study.items():
        audit.record(
            session,
            audit.AuditEvent.STUDY_DELETED,
            user=user,
            action="D",
            source=reason,
            partition=partition,
            study_uid=study_uid,
            patient_ref=f"patient_pk:{study_rows[0].patient_pk}",
            detail=(detail or f"{len(study_rows)} instances removed: {reason}")[:4000],
        )
        publish(
            session,
            InstancesRemoved(
                partition=partition,
                StudyInstanceUID=study_uid,
                SOPInstanceUIDs=tuple(r.SOPInstanceUID for r in study_rows),
                reason=reason,
                user=user,
            ),
        )
        removed.studies[study_uid] = len(study_rows)
    removed.instances = len(rows)
    removed.keys = [r.object_key for r in rows]
    removed.bytes = sum(int(r.size or 0) for r in rows)
    return removed


def _recount(session: Session, series_pks: set[int], study_pks: set[int], patient_pks: set[int]) -> None:
    """The derived counts of the series, studies and patients that lost instances; empty ones dropped."""
    for series_pk in series_pks:
        count = int(session.scalar(select(func.count()).where(Instance.series_pk == series_pk)) or 0)
        if count:
            session.execute(
                update(Series)
                .where(Series.series_pk == series_pk)
                .values(NumberOfSeriesRelatedInstances=count)
            )
        else:
            session.execute(delete(Series).where(Series.series_pk == series_pk))
    for study_pk in study_pks:
        found = session.execute(
            select(Series.Modality, Instance.SOPClassUID)
            .join(Instance, Instance.series_pk == Series.series_pk)
            .where(Series.study_pk == study_pk)
        ).all()
        if not found:
            session.execute(delete(Series).where(Series.study_pk == study_pk))
            session.execute(delete(Study).where(Study.study_pk == study_pk))
            continue
        series_count = session.scalar(select(func.count()).where(Series.study_pk == study_pk))
        session.execute(
            update(Study)
            .where(Study.study_pk == study_pk)
            .values(
                NumberOfStudyRelatedInstances=len(found),
                NumberOfStudyRelatedSeries=int(series_count or 0),
                ModalitiesInStudy="\\".join(sorted({m for m, _ in found if m})),
                SOPClassesInStudy="\\".join(sorted({c for _, c in found if c})),
                updated_at=utcnow(),
            )
        )
    for patient_pk in patient_pks:
        if session.scalar(select(Study.study_pk).where(Study.patient_pk == patient_pk).limit(1)) is None:
            session.execute(delete(Patient).where(Patient.patient_pk == patient_pk))


# ------------------------------------------------------------------------------------------ purge
@dataclass
class PurgeReport:
    deleted: int = 0  # objects removed from storage
    kept: int = 0  # keys indexed again since (identical bytes stored anew): the object stays
    waiting: int = 0  # not due yet


def pending_keys(session: Session) -> set[str]:
    return set(session.scalars(select(PendingDeletion.object_key).distinct()))


def purge(
    db: Database,
    store: InstanceStore,
    *,
    is_due: Callable[[PendingDeletion], bool] = lambda row: True,
    keys: Iterable[str] | None = None,
    limit: int = 100_000,
) -> PurgeReport:
    """Delete the objects of due PendingDeletion rows (only `keys`, when given), then the rows. An object
    goes only when every row naming it is due and no instance references its key any more."""
    report = PurgeReport()
    with db.read() as session:
        stmt = select(PendingDeletion).order_by(PendingDeletion.deletion_pk).limit(limit)
        if keys is not None:
            stmt = stmt.where(PendingDeletion.object_key.in_(list(keys)))
        by_key: dict[str, list[PendingDeletion]] = defaultdict(list)
        for row in session.scalars(stmt):
            by_key[row.object_key].append(row)
    for key, rows in by_key.items():
        if not all(is_due(row) for row in rows):
            report.waiting += 1
            continue
        # Under the index's write lock: an ingest of the same bytes cannot index the key meanwhile.
        with db.write() as session:
            referenced = session.scalar(
                select(Instance.instance_pk).where(Instance.object_key == key).limit(1)
            )
            if referenced is None:
                store.delete(key)
                report.deleted += 1
            else:
                report.kept += 1
            session.execute(
                delete(PendingDeletion).where(
                    PendingDeletion.deletion_pk.in_([row.deletion_pk for row in rows])
                )
            )
    if report.deleted or report.kept:
        log.info("purged %d objects (%d kept: indexed again)", report.deleted, report.kept)
    return report
