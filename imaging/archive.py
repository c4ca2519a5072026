"""The archive's shared parts, built once from Settings and handed to every job, feature and edge:
settings, the index, the object store (behind its Protocol), the ingest path and the receive service."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from sqlalchemy import text

from imaging.config import Settings
from imaging.index.db import Database
from imaging.ingest import Ingestor, Receiver
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

    @classmethod
    def open(cls, settings: Settings, *, maintenance: bool = True) -> Archive:
        """`maintenance=False` (an extra gateway process beside a running server) skips the migration and
        the sweep of temporary files, which would remove the other processes' files being written."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.db_url)
        store = open_store(settings)
        if maintenance:
            db.migrate()
            refresh_planner_statistics(db)
            store.prepare()
            store.sweep_temporary()
        ingestor = Ingestor(db, store, policy=settings.overwrite_policy)
        return cls(settings, db, store, ingestor, Receiver(settings, db, ingestor))

    def receiving_series(self) -> set[tuple[str, str]]:
        """(partition, SeriesInstanceUID) of every series an open association is sending."""
        return set().union(*self.receiving.values()) if self.receiving else set()

    def close(self) -> None:
        self.ingestor.close()
        self.db.dispose()


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
