"""Index ↔ storage maintenance: `reindex` rebuilds the index from storage (storage is the truth);
`fsck` compares the two and verifies every object's SHA-256. Objects awaiting deletion
(imaging.index.removal) are neither indexed nor orphans: fsck counts them apart, reindex leaves them out,
and IOCM rejection notes are applied again after the instances they reject."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from imaging.archive import Archive
from imaging.config import OverwritePolicy
from imaging.errors import ArchiveError
from imaging.index.extract import ParsedInstance, parse
from imaging.index.rejection import KEY_OBJECT_SELECTION, RejectionRefused, rejection_note
from imaging.index.removal import pending_keys
from imaging.index.schema import Instance, Patient, Series, Study
from imaging.index.writer import record_instance
from imaging.storage.base import StoredObject


def recompute_counts(session: Session) -> None:
    """Derived study/series attributes from the rows that exist; drops empty series, studies, patients."""
    for series in session.scalars(select(Series)):
        series.NumberOfSeriesRelatedInstances = int(
            session.scalar(select(func.count()).where(Instance.series_pk == series.series_pk)) or 0
        )
        if series.NumberOfSeriesRelatedInstances == 0:
            session.delete(series)
    session.flush()
    for study in session.scalars(select(Study)):
        rows = session.execute(
            select(Series.Modality, Instance.SOPClassUID)
            .join(Instance, Instance.series_pk == Series.series_pk)
            .where(Series.study_pk == study.study_pk)
        ).all()
        if not rows:
            session.delete(study)
            continue
        study.NumberOfStudyRelatedInstances = len(rows)
        study.NumberOfStudyRelatedSeries = int(
            session.scalar(select(func.count()).where(Series.study_pk == study.study_pk)) or 0
        )
        study.ModalitiesInStudy = "\\".join(sorted({m for m, _ in rows if m}))
        study.SOPClassesInStudy = "\\".join(sorted({c for _, c in rows if c}))
    session.flush()
    orphans = select(Patient.patient_pk).where(
        ~select(Study.study_pk).where(Study.patient_pk == Patient.patient_pk).exists()
    )
    session.execute(delete(Patient).where(Patient.patient_pk.in_(orphans)))


@dataclass
class ReindexReport:
    indexed: int = 0
    unreadable: list[str] = field(default_factory=list)  # object keys
    rejected: int = 0  # objects of instances a rejection note rejected (left out; deleted on its rule)
    pending: int = 0  # objects awaiting deletion (left out)


def reindex(archive: Archive, *, progress: Callable[[], None] | None = None) -> ReindexReport:
    report = ReindexReport()
    with archive.db.write() as session:
        for model in (Instance, Series, Study, Patient):
            session.execute(delete(model))
        pending = pending_keys(session)
    notes: list[tuple[str, ParsedInstance, int]] = []
    for key in sorted(archive.store.keys()):
        if key in pending:
            report.pending += 1
            if progress:
                progress()
            continue
        data = archive.store.read(key)
        try:
            parsed = parse(data)
        except ArchiveError:
            report.unreadable.append(key)
        else:
            if parsed.attributes["SOPClassUID"] == KEY_OBJECT_SELECTION and rejection_note(parsed.dataset):
                notes.append((key, parsed, len(data)))  # after the instances they reject
            else:
                _record(archive, key, parsed, len(data), report)
        if progress:
            progress()
    for key, parsed, size in notes:
        _record(archive, key, parsed, size, report)
    return report


def _record(archive: Archive, key: str, parsed: ParsedInstance, size: int, report: ReindexReport) -> None:
    stored = StoredObject(key, size, created=False)
    try:
        archive.db.transaction(
            lambda s: record_instance(
                s,
                parsed,
                stored,
                partition=key.split("/", 1)[0],
                policy=OverwritePolicy.OVERWRITE,
                source="reindex",
            )
        )
    except RejectionRefused:
        report.rejected += 1
    else:
        report.indexed += 1


@dataclass
class FsckReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)  # in the index, not in storage
    corrupt: list[str] = field(default_factory=list)  # checksum differs from the key
    unindexed: list[str] = field(default_factory=list)  # in storage, not in the index
    pending: int = 0  # in storage, awaiting deletion (imaging.index.removal): neither indexed nor orphans
    repaired: int = 0

    @property
    def clean(self) -> bool:
        return not (self.missing or self.corrupt or self.unindexed)


def fsck(archive: Archive, *, repair: bool = False, progress: Callable[[], None] | None = None) -> FsckReport:
    report = FsckReport()
    with archive.db.read() as session:
        indexed = dict(session.execute(select(Instance.object_key, Instance.instance_pk)).all())
        pending = pending_keys(session) - set(indexed)
    for key in indexed:
        report.checked += 1
        if not archive.store.exists(key):
            report.missing.append(key)
        else:
            digest = hashlib.sha256()
            with archive.store.open(key) as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            if digest.hexdigest() != key.split("/", 1)[1]:
                report.corrupt.append(key)
        if progress:
            progress()
    stored = set(archive.store.keys())
    report.pending = len(stored & pending)
    report.unindexed = sorted(stored - set(indexed) - pending)
    if repair and not report.clean:
        bad = report.missing + report.corrupt
        with archive.db.write() as session:
            session.execute(delete(Instance).where(Instance.object_key.in_(bad)))
            recompute_counts(session)
        for key in report.corrupt:
            archive.store.quarantine(key)
        for key in report.unindexed:
            try:
                archive.ingestor.ingest(
                    archive.store.read(key), partition=key.split("/", 1)[0], source="fsck"
                )
            except ArchiveError:
                continue
        report.repaired = len(bad) + len(report.unindexed)
    return report
