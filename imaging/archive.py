"""The archive's shared parts, built once from Settings and handed to every job, feature and edge:
settings, the index, the object store (behind its Protocol), the ingest path and the receive service."""

from __future__ import annotations

import os
import stat
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text

from imaging.config import Settings
from imaging.index.db import Database
from imaging.ingest import Ingestor, Receiver
from imaging.ingest.recovery import RunMarkers, recover
from imaging.storage import InstanceStore, open_store


@dataclass
class Archive:
    settings: Settings
    db: Database
    store: InstanceStore
    ingestor: Ingestor
    receiver: Receiver
    # Series currently receiving on an open association: not stable yet, whatever the clock says. Keyed by
    # id(association) in this process, (pid, id) for associations of extra gateway processes (dimse/processes).
    receiving: dict[Hashable, set[tuple[str, str]]] = field(default_factory=dict)
    markers: RunMarkers | None = None

    @classmethod
    def open(cls, settings: Settings, *, maintenance: bool = True) -> Archive:
        """`maintenance=False` (an extra gateway process beside a running server) skips the migration, the
        sweep of temporary files, which would remove the other processes' files being written, and the
        crash recovery (imaging.ingest.recovery), which runs only after a process died without closing."""
        restrict_data_dir(settings.data_dir)
        db = Database(settings.db_url)
        store = open_store(settings)
        markers = RunMarkers(settings.data_dir)
        if maintenance:
            db.migrate()
            refresh_planner_statistics(db)
            store.prepare()
            store.sweep_temporary()
        ingestor = Ingestor(db, store, policy=settings.overwrite_policy)
        if maintenance:
            stale = markers.stale()
            if stale:
                recover(db, store, ingestor)
                for path in stale:
                    path.unlink(missing_ok=True)
        markers.create()
        return cls(settings, db, store, ingestor, Receiver(settings, db, ingestor), markers=markers)

    def receiving_series(self) -> set[tuple[str, str]]:
        """(partition, SeriesInstanceUID) of every series an open association is sending."""
        return set().union(*self.receiving.values()) if self.receiving else set()

    def close(self) -> None:
        self.ingestor.close()
        self.db.dispose()
        if self.markers is not None:
            self.markers.remove()


def restrict_data_dir(data_dir: Path) -> None:
    """The data directory (index, objects, spool) is the archive's alone: 0700. An existing one owned by
    this user is tightened; a shared, sticky folder (such as /tmp) is never touched."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = data_dir.stat()
    if info.st_mode & 0o077 and info.st_uid == os.getuid() and not info.st_mode & stat.S_ISVTX:
        data_dir.chmod(0o700)


def refresh_planner_statistics(db: Database) -> None:
    """SQLite: sample the indexes (ANALYZE with an analysis limit: milliseconds at any size) so the planner
    knows, e.g., that a PatientID or AccessionNumber match is a handful of rows and reads it off that
    column's index. Without statistics it walks the study-date index in answer order, checking every
    study of the partition. PostgreSQL keeps its own statistics (autovacuum)."""
    if not db.is_sqlite:
        return
    with db.write() as session:
        session.execute(text("PRAGMA analysis_limit=1000"))
        session.execute(text("ANALYZE"))
