"""Cohorts: a saved query inside a research project (modality, body part, study dates, series description,
AI findings) → a manifest (series UIDs, counts, sizes, SHA-256 per object) → a streamed zip, resumable
by series, or the project's DICOMweb root."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import JSON, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from imaging import audit
from imaging.archive import Archive
from imaging.errors import InvalidRequest, NotFound
from imaging.index.matching import conditions
from imaging.index.schema import Instance, Series, Study
from imaging.ingest.partitions import get_project
from imaging.orm import Base, utcnow
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


def save_cohort(
    archive: Archive, project: str, name: str, filters: dict[str, str], min_priority: str = ""
) -> Cohort:
    unknown = set(filters) - set(FILTER_KEYS)
    if unknown:
        raise InvalidRequest(f"unsupported cohort filter: {', '.join(sorted(unknown))}")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", name):
        raise InvalidRequest("invalid cohort name")
    if min_priority:
        min_priority = parse_priorities([min_priority])[0].value
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


def manifest(archive: Archive, project: str, name: str) -> Manifest:
    with archive.db.read() as session:
        cohort = get_cohort(session, project, name)
        stmt = (
            select(Series, Study)
            .join(Study, Study.study_pk == Series.study_pk)
            .where(Study.partition == project, conditions(dict(cohort.filters)))
            .order_by(Study.StudyInstanceUID, Series.SeriesInstanceUID)
        )
        rows = session.execute(stmt).all()
        allowed: set[str] | None = None
        if cohort.min_priority:
            # Priority lives on the de-identified study too (copied at publication) — filter on it there.
            floor = rank(cohort.min_priority)
            allowed = {st.StudyInstanceUID for _, st in rows if st.priority and rank(st.priority) >= floor}
        series_list = []
        for series, study in rows:
            if allowed is not None and study.StudyInstanceUID not in allowed:
                continue
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


def stream_zip(archive: Archive, m: Manifest, *, start_after: str = "") -> Iterator[bytes]:
    """The cohort as a zip streamed in chunks: `manifest.json`, then `<study>/<series>/<sop>.dcm`.
    `start_after` (a SeriesInstanceUID) resumes after the series a client already holds."""
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
