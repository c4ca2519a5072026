"""When each study was last read (WADO-RS, C-GET, C-MOVE): what a retention rule "not accessed for N days"
needs. One row per study, written at most once an hour per study and process, so that reading a study
costs a write only now and then (the index has one writer at a time)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable

from sqlalchemy import DateTime, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, mapped_column

from imaging.index.db import Database
from imaging.orm import Base, utcnow

WRITE_EVERY_SECONDS = 3600.0


class StudyAccess(Base):
    __tablename__ = "study_access"
    access_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    partition: Mapped[str] = mapped_column(String(64))
    StudyInstanceUID: Mapped[str] = mapped_column(String(64))
    last_accessed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("partition", "StudyInstanceUID", name="uq_study_access"),)


_written: dict[tuple[str, str, str], float] = {}  # (database url, partition, study) -> monotonic time
_lock = threading.Lock()


def record_access(db: Database, partition: str, study_uids: Iterable[str]) -> None:
    """Note that these studies were read now (best effort: a failed write never fails the read)."""
    now = time.monotonic()
    due = []
    with _lock:
        for uid in set(study_uids):
            key = (db.url, partition, uid)
            if now - _written.get(key, -WRITE_EVERY_SECONDS) >= WRITE_EVERY_SECONDS:
                _written[key] = now
                due.append(uid)
    if not due:
        return
    try:
        with db.write() as session:
            rows = {
                row.StudyInstanceUID: row
                for row in session.scalars(
                    select(StudyAccess).where(
                        StudyAccess.partition == partition, StudyAccess.StudyInstanceUID.in_(due)
                    )
                )
            }
            stamp = utcnow()
            for uid in due:
                if uid in rows:
                    rows[uid].last_accessed_at = stamp
                else:
                    session.add(
                        StudyAccess(partition=partition, StudyInstanceUID=uid, last_accessed_at=stamp)
                    )
    except Exception:  # an access record must never fail a read
        with _lock:
            for uid in due:
                _written.pop((db.url, partition, uid), None)
