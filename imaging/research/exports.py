"""Cohort exports with progress: each download of a cohort's zip is a durable row that says how far it got.

The zip is streamed (imaging.research.cohorts.stream_zip: nothing is copied or spooled on the server), and
as each object is handed to the client the row's counters move — objects, bytes, series — written at most
twice a second, and once more at the end: `complete` when the last byte went out, `interrupted` when the
client went away (or the stream failed), with the last complete series recorded so a new download resumes
after it (`start_after`). A row still `streaming` that has not moved for STALLED_SECONDS is shown as
stalled (and a prepared one nobody started, as not started). A page can therefore show a progress bar for a download the browser itself saves, and the
researcher sees their past exports and where each stopped.

An export may be prepared first (`prepare_export`, status `ready`): the web page creates it, then has the
browser fetch the zip naming it, so the page knows which row to watch. Every export is audited when its
stream starts (PS3.15 Export, 110106), as before.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from imaging import audit
from imaging.archive import Archive
from imaging.errors import Conflict, NotFound
from imaging.orm import Base, utcnow
from imaging.research.cohorts import (
    Manifest,
    ManifestObject,
    ManifestSeries,
    export_audit,
    get_cohort,
    manifest,
    stream_zip,
)

STALLED_SECONDS = 120.0
WRITE_INTERVAL = 0.5  # seconds between progress writes while streaming


class ExportStatus(StrEnum):
    READY = "ready"  # prepared by a page, not started yet
    STREAMING = "streaming"
    COMPLETE = "complete"
    INTERRUPTED = "interrupted"  # the client went away, or the stream failed: resume after `last_series`


class CohortExport(Base):
    __tablename__ = "cohort_export"
    export_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64))
    cohort: Mapped[str] = mapped_column(String(64))
    user: Mapped[str] = mapped_column(String(128))  # as the audit trail names the caller
    status: Mapped[str] = mapped_column(String(16), default=ExportStatus.READY.value)
    start_after: Mapped[str] = mapped_column(String(64), default="")  # resumed after this series
    series_total: Mapped[int] = mapped_column(Integer, default=0)
    series_done: Mapped[int] = mapped_column(Integer, default=0)
    objects_total: Mapped[int] = mapped_column(Integer, default=0)
    objects_done: Mapped[int] = mapped_column(Integer, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    last_series: Mapped[str] = mapped_column(String(64), default="")  # the last series sent whole
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    __table_args__ = (Index("ix_cohort_export_project_user", "project", "user"),)


def prepare_export(archive: Archive, project: str, name: str, *, user: str) -> int:
    """A `ready` export of a saved cohort, for a page to start and watch; returns its id."""
    with archive.db.write() as session:
        get_cohort(session, project, name)
        row = CohortExport(project=project, cohort=name, user=user)
        session.add(row)
        session.flush()
        return row.export_pk


def begin_export(
    archive: Archive, project: str, name: str, *, user: str, start_after: str = "", export_pk: int = 0
) -> tuple[int, Manifest]:
    """Start an export: the cohort's manifest, audited as an Export; the row (the prepared one when
    `export_pk` names it — only its own user's, once) records the totals of what this stream will send."""
    m = manifest(archive, project, name)
    remaining = _after(m.series, start_after)
    with archive.db.write() as session:
        if export_pk:
            row = session.get(CohortExport, export_pk)
            if row is None or (row.project, row.cohort, row.user) != (project, name, user):
                raise NotFound("no such export")
            if row.status != ExportStatus.READY:
                raise Conflict("this export has started already: start a new one")
        else:
            row = CohortExport(project=project, cohort=name, user=user)
            session.add(row)
        row.status, row.start_after = ExportStatus.STREAMING.value, start_after
        row.series_total = len(remaining)
        row.objects_total = sum(s.count for s in remaining)
        row.bytes_total = sum(s.size for s in remaining)
        row.updated_at = utcnow()
        session.flush()
        export_pk = row.export_pk
    export_audit(archive, m, user=user, start_after=start_after)
    return export_pk, m


def _after(series: list[ManifestSeries], start_after: str) -> list[ManifestSeries]:
    if not start_after:
        return series
    for index, entry in enumerate(series):
        if entry.SeriesInstanceUID == start_after:
            return series[index + 1 :]
    return series  # stream_zip skips nothing for a series it does not hold either


class _Tracker:
    """Counts what has gone out and writes it to the export's row, at most every WRITE_INTERVAL."""

    def __init__(self, archive: Archive, export_pk: int) -> None:
        self.archive, self.export_pk = archive, export_pk
        self.series = self.objects = self.bytes = 0
        self.last_series = ""
        self.written = 0.0

    def __call__(self, series: ManifestSeries, obj: ManifestObject | None) -> None:
        if obj is None:
            self.series += 1
            self.last_series = series.SeriesInstanceUID
        else:
            self.objects += 1
            self.bytes += obj.size
        if time.monotonic() - self.written >= WRITE_INTERVAL:
            self.write(ExportStatus.STREAMING)

    def write(self, status: ExportStatus) -> None:
        self.written = time.monotonic()
        with self.archive.db.write() as session:
            row = session.get(CohortExport, self.export_pk)
            if row is None:
                return
            row.status = status.value
            row.series_done, row.objects_done, row.bytes_done = self.series, self.objects, self.bytes
            if self.last_series:
                row.last_series = self.last_series
            row.updated_at = utcnow()
            if status is not ExportStatus.STREAMING:
                row.finished_at = row.updated_at


def stream_export(archive: Archive, export_pk: int, m: Manifest, *, start_after: str = "") -> Iterator[bytes]:
    """The zip of `begin_export`, moving the export's counters as it goes out."""
    tracker = _Tracker(archive, export_pk)
    finished = False
    try:
        yield from stream_zip(archive, m, start_after=start_after, progress=tracker)
        finished = True
    finally:
        # GeneratorExit when the client disconnects (the server closes the stream), or any failure.
        tracker.write(ExportStatus.COMPLETE if finished else ExportStatus.INTERRUPTED)


def list_exports(session: Session, project: str, *, user: str, limit: int = 50) -> list[CohortExport]:
    """A user's exports of a project, newest first."""
    return list(
        session.scalars(
            select(CohortExport)
            .where(CohortExport.project == project, CohortExport.user == user)
            .order_by(CohortExport.export_pk.desc())
            .limit(limit)
        )
    )


def export_audit_trail(session: Session, project: str, *, user: str, limit: int = 50) -> list[dict[str, Any]]:
    """The audit trail's Export records (110106) of a project by this user, newest first: what a researcher
    may see of the trail — their own exports, nobody else's."""
    return [
        audit.to_dict(row)
        for row in audit.query(
            session,
            event=audit.AuditEvent.EXPORT,
            partition=project,
            user=user,
            newest_first=True,
            limit=limit,
        )
    ]


def get_export(session: Session, export_pk: int, *, project: str, user: str) -> CohortExport:
    """One of the user's own exports of the project (NotFound for anyone else's)."""
    row = session.get(CohortExport, export_pk)
    if row is None or row.project != project or row.user != user:
        raise NotFound("no such export")
    return row


def export_info(row: CohortExport) -> dict[str, Any]:
    def when(value: dt.datetime | None) -> str | None:
        return value.isoformat() + "Z" if value is not None else None

    # A stream that stopped moving without a word (the server itself went away), or a prepared export
    # nobody started: shown as such, so a page stops waiting for them.
    idle = (utcnow() - row.updated_at).total_seconds() > STALLED_SECONDS
    status = row.status
    if idle and status == ExportStatus.STREAMING:
        status = "stalled"
    elif idle and status == ExportStatus.READY:
        status = "not started"
    return {
        "id": row.export_pk,
        "project": row.project,
        "cohort": row.cohort,
        "status": status,
        "start_after": row.start_after,
        "series": [row.series_done, row.series_total],
        "objects": [row.objects_done, row.objects_total],
        "bytes": [row.bytes_done, row.bytes_total],
        "resume_after": (row.last_series or row.start_after) if row.status != ExportStatus.COMPLETE else "",
        "created_at": when(row.created_at),
        "updated_at": when(row.updated_at),
        "finished_at": when(row.finished_at),
    }
