"""The audit trail's writer for hot paths (QIDO, WADO, logins): `submit` queues a record and returns at
once; a background thread writes the queue in one transaction every `interval` seconds, so auditing adds no
index round trip (and no turn at SQLite's single writer lock) to a request.

Identical records submitted in one interval — a viewer fetching 300 frames of a series is 300 requests —
are written once, with the count in their detail ("×300"). Records reach the index within about `interval`
of their submission; a crash of the process in that window loses at most that window's records. When the
index cannot be written (say, a disk full), records stay queued and the writer retries; past `max_queued`
records, `submit` waits for room rather than drop one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from imaging.audit.records import AuditEvent, Outcome, record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pending:
    event: AuditEvent
    user: str
    action: str = "R"
    outcome: Outcome = Outcome.SUCCESS
    source: str = ""
    partition: str = ""
    study_uid: str = ""
    patient_ref: str = ""
    detail: str = ""
    event_type: str = ""
    access_point: str = ""


class AuditWriter:
    def __init__(
        self,
        begin: Callable[[], AbstractContextManager[Session]],
        *,
        interval: float = 0.25,
        max_queued: int = 100_000,
    ) -> None:
        self._begin = begin
        self.interval = interval
        self.max_queued = max_queued
        self._queue: dict[Pending, int] = {}  # record -> how many times submitted (insertion ordered)
        self._queued = 0
        self._submitted = 0
        self._written = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def submit(self, event: AuditEvent, *, user: str, **fields: object) -> None:
        item = Pending(event, user, **fields)  # type: ignore[arg-type]
        with self._cond:
            while self._queued >= self.max_queued and not self._closed:
                self._cond.wait(1.0)
            self._queue[item] = self._queue.get(item, 0) + 1
            self._queued += 1
            self._submitted += 1

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is in the index; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            self._cond.notify_all()
            while self._written < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
                self._cond.notify_all()
        return True

    def close(self) -> None:
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    if self._closed:
                        return
                    self._cond.wait(self.interval)
                batch, count = self._queue, self._queued
                self._queue, self._queued = {}, 0
            if not batch:
                continue
            try:
                with self._begin() as session:
                    for item, times in batch.items():
                        if times > 1:
                            item = replace(item, detail=f"{item.detail} (×{times})".strip())
                        record(
                            session,
                            item.event,
                            user=item.user,
                            action=item.action,
                            outcome=item.outcome,
                            source=item.source,
                            partition=item.partition,
                            study_uid=item.study_uid,
                            patient_ref=item.patient_ref,
                            detail=item.detail,
                            event_type=item.event_type,
                            access_point=item.access_point,
                        )
            except Exception as exc:
                log.warning("audit records not written yet (%s); retrying", type(exc).__name__)
                with self._cond:
                    for item, times in batch.items():
                        self._queue[item] = self._queue.get(item, 0) + times
                    self._queued += count
                time.sleep(min(self.interval * 4, 2.0))
                continue
            with self._cond:
                self._written += count
                self._cond.notify_all()
            time.sleep(self.interval)
