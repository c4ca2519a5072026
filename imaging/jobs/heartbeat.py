"""Worker liveness, kept in the index: every process that runs jobs (the server's in-process runner, each
`imaging worker`) writes a heartbeat row every few seconds with the job kinds it takes and the state of its
components (e.g. triage: model loaded, on which device). Readiness (`/health`) reads them: a worker whose
heartbeat is older than `Settings.worker_heartbeat_seconds` is dead, and a component a live worker reports
as not ready makes the archive not ready. Rows of workers gone for an hour are removed."""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from imaging.index.db import Database
from imaging.orm import Base, utcnow

log = logging.getLogger(__name__)
FORGET_AFTER = dt.timedelta(hours=1)


class WorkerHeartbeat(Base):
    __tablename__ = "worker_heartbeat"
    worker_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # "serve", "worker"
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    kinds: Mapped[list[str]] = mapped_column(JSON, default=list)
    components: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    beat_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Heartbeat:
    """Writes this process's heartbeat every `interval` seconds from a thread; removes it on stop."""

    def __init__(
        self,
        db: Database,
        role: str,
        kinds: list[str],
        components: Callable[[], dict[str, Any]],
        *,
        interval: float = 5.0,
    ) -> None:
        self.db = db
        self.role = role
        self.kinds = sorted(kinds)
        self.components = components
        self.interval = interval
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        now = utcnow()

        def work(session: Session) -> None:
            row = session.get(WorkerHeartbeat, self.worker_id)
            if row is None:
                row = WorkerHeartbeat(
                    worker_id=self.worker_id, role=self.role, host=socket.gethostname(), pid=os.getpid()
                )
                session.add(row)
            row.kinds, row.components, row.beat_at = self.kinds, self.components(), now
            session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.beat_at < now - FORGET_AFTER))

        self.db.transaction(work)

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:
                log.warning("heartbeat not written (index unreachable?)")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.db.transaction(
                lambda s: s.execute(
                    delete(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == self.worker_id)
                )
            )
        except Exception:
            log.warning("heartbeat row not removed")


def live_workers(session: Session, max_age_seconds: float) -> list[WorkerHeartbeat]:
    cutoff = utcnow() - dt.timedelta(seconds=max_age_seconds)
    return list(session.scalars(select(WorkerHeartbeat).where(WorkerHeartbeat.beat_at >= cutoff)))
