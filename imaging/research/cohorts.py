"""Cohorts: a saved query inside a research project (modality, body part, study dates, series description,
AI findings) → a manifest (series UIDs, counts, sizes, SHA-256 per object) → a streamed zip, resumable
by series, or the project's DICOMweb root."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import JSON, ColumnElement, Integer, String, UniqueConstraint, distinct, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from imaging import audit
from imaging.archive import Archive
from imaging.errors import InvalidRequest, NotFound
from imaging.index.matching import InvalidMatchKey, conditions
from imaging.index.schema import Instance, Series, Study
from imaging.ingest.partitions import get_project
from imaging.orm import Base, utcnow
from imaging.priority import VALUES as PRIORITY_VALUES
from imaging.priority import parse_priorities, rank

# The keys a cohort may filter on; values use DICOM matching (wildcards, ranges, lists).
FILTER_KEYS = ("Modality", "BodyPartExamined", "StudyDate", "SeriesDescription", "StudyDescription")


class Cohort(Base):
    __tablename__ = "cohort"
    cohort_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    filters: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Only studies the triage flagged at or above this priority (HIGH, MEDIUM, LOW); empty: any.
    min_priority: Mapped[str] = mapped_column(String(8), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    __table_args__ = (UniqueConstraint("project", "name", name="uq_cohort"),)


@dataclass
class ManifestObject:
    SOPInstanceUID: str
    SOPClassUID: str
    size: int
    sha256: str


@dataclass
class ManifestSeries:
    StudyInstanceUID: str
    SeriesInstanceUID: str
    Modality: str
    SeriesDescription: str
    count: int = 0
    size: int = 0
    objects: list[ManifestObject] = field(default_factory=list)


@dataclass
class Manifest:
    project: str
    cohort: str
    created: str
    series: list[ManifestSeries]

    @property
    def size(self) -> int:
        return sum(s.size for s in self.series)

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"size": self.size}, indent=1)


def checked_filters(filters: dict[str, str], min_priority: str = "") -> tuple[dict[str, str], str]:
    """The filters without empty (universal) values, and the priority floor in its canonical spelling;
    InvalidRequest for an unknown key or a malformed value (a bad date range...)."""
    unknown = set(filters) - set(FILTER_KEYS)
    if unknown:
        raise InvalidRequest(f"unsupported cohort filter: {', '.join(sorted(unknown))}")
    kept = {k: v for k, v in filters.items() if v.strip(" ") not in ("", "*")}
    try:
        conditions(kept)
    except InvalidMatchKey as exc:
        raise InvalidRequest(str(exc)) from None
    if min_priority:
        min_priority = parse_priorities([min_priority])[0].value
    return kept, min_priority


def save_cohort(
    archive: Archive, project: str, name: str, filters: dict[str, str], min_priority: str = ""
) -> Cohort:
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", name):
        raise InvalidRequest("invalid cohort name")
    filters, min_priority = checked_filters(filters, min_priority)
    with archive.db.write() as session:
        get_project(session, project)
        cohort = session.scalar(select(Cohort).where(Cohort.project == project, Cohort.name == name))
        if cohort is None:
            cohort = Cohort(project=project, name=name)
            session.add(cohort)
        cohort.filters, cohort.min_priority = dict(filters), min_priority
    return cohort


def list_cohorts(session: Session, project: str) -> list[Cohort]:
    return list(session.scalars(select(Cohort).where(Cohort.project == project).order_by(Cohort.name)))


def export_audit(archive: Archive, m: Manifest, *, user: str, start_after: str = "", to: str = "") -> None:
    """PS3.15 A.5.3.5 Export (110106): the cohort leaves the archive (a zip download, a folder)."""
    with archive.db.write() as session:
        audit.record(
            session,
            audit.AuditEvent.EXPORT,
            user=user,
            action="R",
            partition=m.project,
            detail=f"cohort {m.cohort}: {len(m.series)} series, {m.size} bytes"
            + (f", resumed after {start_after}" if start_after else "")
            + (f", to {to}" if to else ""),
        )


def get_cohort(session: Session, project: str, name: str) -> Cohort:
    cohort = session.scalar(select(Cohort).where(Cohort.project == project, Cohort.name == name))
    if cohort is None:
        raise NotFound("no such cohort")
    return cohort


def _matching(project: str, filters: dict[str, str], min_priority: str) -> list[ColumnElement[bool]]:
    """The series of the project that a cohort's filters select."""
    clauses = [Study.partition == project, conditions(filters)]
    if min_priority:
        # Priority lives on the de-identified study too (copied at publication) — filter on it there.
        floor = rank(min_priority)
        clauses.append(Study.priority.in_([p for p in PRIORITY_VALUES if rank(p) >= floor]))
    return clauses


@dataclass
class CohortPreview:
    """What a cohort would hold, before it is saved: counts, and a few series to show."""

    studies: int
    series: int
    instances: int
    size: int
    sample: list[ManifestSeries]


def preview(
    session: Session, project: str, filters: dict[str, str], min_priority: str = "", *, sample: int = 6
) -> CohortPreview:
    """Counts of what the filters select in the project (the researcher's count as they type)."""
    filters, min_priority = checked_filters(filters, min_priority)
    where = _matching(project, filters, min_priority)
    chosen = (
        select(Series.series_pk, Series.study_pk).join(Study, Study.study_pk == Series.study_pk).where(*where)
    )
    picked = chosen.subquery()
    studies, series = session.execute(
        select(func.count(distinct(picked.c.study_pk)), func.count()).select_from(picked)
    ).one()
    instances, size = session.execute(
        select(func.count(Instance.instance_pk), func.sum(Instance.size)).where(
            Instance.series_pk.in_(select(picked.c.series_pk))
        )
    ).one()
    shown = [
        ManifestSeries(
            st.StudyInstanceUID,
            se.SeriesInstanceUID,
            se.Modality,
            se.SeriesDescription,
            count=se.NumberOfSeriesRelatedInstances,
        )
        for se, st in session.execute(
            select(Series, Study)
            .join(Study, Study.study_pk == Series.study_pk)
            .where(*where)
            .order_by(Study.StudyInstanceUID, Series.SeriesInstanceUID)
            .limit(sample)
        )
    ]
    return CohortPreview(int(studies), int(series), int(instances), int(size or 0), shown)


def manifest(archive: Archive, project: str, name: str) -> Manifest:
    with archive.db.read() as session:
        cohort = get_cohort(session, project, name)
        stmt = (
            select(Series, Study)
            .join(Study, Study.study_pk == Series.study_pk)
            .where(*_matching(project, dict(cohort.filters), cohort.min_priority))
            .order_by(Study.StudyInstanceUID, Series.SeriesInstanceUID)
        )
        series_list = []
        for series, study in session.execute(stmt).all():
            entry = ManifestSeries(
                study.StudyInstanceUID, series.SeriesInstanceUID, series.Modality, series.SeriesDescription
            )
            for sop, sop_class, size, key in session.execute(
                select(Instance.SOPInstanceUID, Instance.SOPClassUID, Instance.size, Instance.object_key)
                .where(Instance.series_pk == series.series_pk)
                .order_by(Instance.InstanceNumber, Instance.instance_pk)
            ):
                entry.objects.append(ManifestObject(sop, sop_class, size, key.split("/", 1)[1]))
                entry.count += 1
                entry.size += size
            series_list.append(entry)
    return Manifest(project, name, dt.datetime.now(dt.UTC).isoformat(), series_list)


def _object_key(project: str, sha256: str) -> str:
    return f"{project}/{sha256}"


class _Sink:
    """A write-only, non-seekable file for zipfile that hands out what was written so far."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.position = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


Progress = Callable[[ManifestSeries, ManifestObject | None], None]


def stream_zip(
    archive: Archive, m: Manifest, *, start_after: str = "", progress: Progress | None = None
) -> Iterator[bytes]:
    """The cohort as a zip streamed in chunks: `manifest.json`, then `<study>/<series>/<sop>.dcm`.
    `start_after` (a SeriesInstanceUID) resumes after the series a client already holds. `progress` is
    called once each object's bytes have been handed on, and with None once a whole series has."""
    sink = _Sink()
    skipping = bool(start_after)
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as zf:  # type: ignore[call-overload]
        zf.writestr("manifest.json", m.to_json())
        yield sink.take()
        for series in m.series:
            if skipping:
                skipping = series.SeriesInstanceUID != start_after
                continue
            for obj in series.objects:
                chunks = archive.store.stream(_object_key(m.project, obj.sha256))
                arcname = f"{series.StudyInstanceUID}/{series.SeriesInstanceUID}/{obj.SOPInstanceUID}.dcm"
                with zf.open(arcname, "w", force_zip64=True) as dst:
                    for chunk in chunks:
                        dst.write(chunk)
                        yield sink.take()
                yield sink.take()
                if progress is not None:
                    progress(series, obj)
            if progress is not None:
                progress(series, None)
    yield sink.take()


@dataclass
class ExportReport:
    series_written: int = 0
    series_skipped: int = 0  # already complete and verified (resume)
    objects: int = 0


def _verified(path: Path, sha256: str) -> bool:
    if not path.is_file():
        return False
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest() == sha256


def export_to_folder(archive: Archive, m: Manifest, destination: Path, progress: Any = None) -> ExportReport:
    """Write the cohort as `<study>/<series>/<sop>.dcm` + manifest.json; a re-run resumes: series whose
    every file is present with the right checksum are skipped."""
    report = ExportReport()
    destination.mkdir(parents=True, exist_ok=True)
    (destination / "manifest.json").write_text(m.to_json())
    for series in m.series:
        folder = destination / series.StudyInstanceUID / series.SeriesInstanceUID
        if all(_verified(folder / f"{o.SOPInstanceUID}.dcm", o.sha256) for o in series.objects):
            report.series_skipped += 1
        else:
            folder.mkdir(parents=True, exist_ok=True)
            for obj in series.objects:
                target = folder / f"{obj.SOPInstanceUID}.dcm"
                tmp = target.with_suffix(".part")
                data = archive.store.read(_object_key(m.project, obj.sha256))
                tmp.write_bytes(data)
                tmp.replace(target)
                report.objects += 1
            report.series_written += 1
        if progress is not None:
            progress()
    return report


def write_zip(archive: Archive, m: Manifest, out: IO[bytes]) -> None:
    for chunk in stream_zip(archive, m):
        out.write(chunk)
