"""In-process job runner (the embedded default): a thread that turns change-log events into durable jobs
and runs them with retries. Restart-safe: cursors and job states live in the index; jobs left `running`
by a crash go back to `pending` on start. Each job is idempotent by (kind, key)."""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imaging.archive import Archive
from imaging.index.schema import ChangeLog, ConsumerCursor, Job, utcnow
from imaging.jobs.stability import mark_stable, quiet_series

log = logging.getLogger(__name__)
# A consumer's cursor moves past changes it does not take at least once this many have accumulated.
CURSOR_SLACK = 10_000


class Consumer(Protocol):
    """Reads change-log events and enqueues jobs for them. A consumer with a `kinds` attribute (a set of
    ChangeKind values) is handed only changes of those kinds: during ingest the change log grows by one
    InstanceStored row per instance, which most consumers ignore."""

    name: str

    def __call__(self, session: Session, change: ChangeLog) -> list[tuple[str, str, dict[str, Any]]]:
        """Jobs to enqueue: (kind, idempotency key, payload)."""
        ...


JobFunction = Callable[[Archive, dict[str, Any]], dict[str, Any]]


@dataclass
class JobKind:
    function: JobFunction
    max_attempts: int = 8
    base_delay: float = 2.0  # seconds; doubles per attempt, with jitter


def enqueue(session: Session, kind: str, key: str, payload: dict[str, Any]) -> bool:
    """Insert a job unless one with the same (kind, key) exists; a finished one is re-armed."""
    existing = session.scalars(select(Job).where(Job.kind == kind, Job.key == key)).one_or_none()
    if existing is None:
        try:
            with session.begin_nested():
                session.add(Job(kind=kind, key=key, payload=payload))
        except IntegrityError:
            return False
        return True
    if existing.status in ("done", "failed") and existing.payload != payload:
        existing.status, existing.attempts, existing.payload = "pending", 0, payload
        existing.next_attempt_at = utcnow()
        return True
    return False


class Publisher(Protocol):
    """Hands due jobs to a distributed task engine instead of running them in this process."""

    def publish(self, job_pk: int, kind: str) -> None: ...


class JobRunner:
    def __init__(self, archive: Archive, *, interval: float = 0.5, requeue_after: float = 600.0) -> None:
        self.archive = archive
        self.interval = interval
        self.consumers: list[Consumer] = []
        self.kinds: dict[str, JobKind] = {}
        # Scale-out: with a publisher, due jobs go to the broker; a job queued longer than `requeue_after`
        # (message lost, worker died) is published again. The job row stays the truth either way.
        self.publisher: Publisher | None = None
        self.requeue_after = requeue_after
        # The state of what features loaded for their jobs, reported in this process's heartbeat and read by
        # readiness: name -> {"ready": bool, ...details}; e.g. triage: its model, on which device.
        self.components: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self, consumer: Consumer | None = None, **kinds: JobKind) -> None:
        if consumer is not None:
            self.consumers.append(consumer)
        self.kinds.update(kinds)

    def recover(self) -> None:
        with self.archive.db.write() as session:
            session.execute(update(Job).where(Job.status == "running").values(status="pending"))

    def tick(self) -> int:
        """One round: stability, consumers, then every due job. Returns how many jobs ran.

        Each step first looks in a read transaction whether it has anything to do, and takes a write
        transaction only then: on SQLite a write transaction holds the one writer lock that ingest's
        commits wait for, and during ingest there is rarely anything to do (nothing stable yet, no change
        a consumer takes, no job due)."""
        db = self.archive.db
        stability = self.archive.settings.stability_seconds
        if self._any(quiet_series(stability)):
            with db.write() as session:
                mark_stable(session, stability, self.archive.receiving_series())
        for consumer in self.consumers:
            if self._consumer_behind(consumer):
                db.transaction(lambda s, c=consumer: self._consume(s, c))  # type: ignore[misc]
        if self.publisher is not None:
            return self._publish_due() if self._any(self._publishable()) else 0
        ran = 0
        while self._any(self._due()) and (job := self._claim()) is not None:
            self._run(job)
            ran += 1
        return ran

    def _any(self, stmt: Select[Any]) -> bool:
        with self.archive.db.read() as session:
            return session.execute(stmt.limit(1)).first() is not None

    def _due(self) -> Select[Any]:
        return select(Job.job_pk).where(
            Job.status == "pending", Job.next_attempt_at <= utcnow(), Job.kind.in_(list(self.kinds))
        )

    def _publishable(self) -> Select[Any]:
        stale = utcnow() - dt.timedelta(seconds=self.requeue_after)
        return select(Job.job_pk).where(
            or_(
                (Job.status == "pending") & (Job.next_attempt_at <= utcnow()),
                (Job.status == "queued") & (Job.updated_at <= stale),
            )
        )

    def _consumer_behind(self, consumer: Consumer) -> bool:
        """Whether `consumer` has changes to take (a consumer without `kinds`: any new change); the cursor
        of one that takes none of the new ones is moved only once it lags CURSOR_SLACK changes behind."""
        with self.archive.db.read() as session:
            cursor = session.get(ConsumerCursor, consumer.name)
            seq = cursor.seq if cursor is not None else 0
            kinds = getattr(consumer, "kinds", None)
            newer = select(ChangeLog.seq).where(ChangeLog.seq > seq)
            if kinds is None:
                return session.execute(newer.limit(1)).first() is not None
            if session.execute(newer.where(ChangeLog.kind.in_(list(kinds))).limit(1)).first() is not None:
                return True
            last = session.scalar(select(func.max(ChangeLog.seq)))
            return last is not None and last - seq >= CURSOR_SLACK

    def _publish_due(self) -> int:
        assert self.publisher is not None
        stale = utcnow() - dt.timedelta(seconds=self.requeue_after)
        with self.archive.db.write() as session:
            session.execute(
                update(Job).where(Job.status == "queued", Job.updated_at <= stale).values(status="pending")
            )
            due = session.scalars(
                select(Job)
                .where(Job.status == "pending", Job.next_attempt_at <= utcnow())
                .order_by(Job.next_attempt_at, Job.job_pk)
                .limit(500)
                .with_for_update(skip_locked=True)
            ).all()
            batch = [(job.job_pk, job.kind) for job in due]
            for job in due:
                job.status, job.updated_at = "queued", utcnow()
        # Committed before sending: a crash in between leaves `queued` rows that are re-published later.
        for job_pk, kind in batch:
            self.publisher.publish(job_pk, kind)
        return len(batch)

    def run_one(self, job_pk: int) -> bool:
        """Claim and run one job named by a broker message; False if it is not (or no longer) runnable
        here — a duplicate delivery, or a job another worker already took."""
        with self.archive.db.write() as session:
            claimed = session.execute(
                update(Job)
                .where(
                    Job.job_pk == job_pk,
                    Job.status.in_(("pending", "queued")),
                    Job.kind.in_(list(self.kinds)),
                )
                .values(status="running", attempts=Job.attempts + 1, updated_at=utcnow())
            ).rowcount  # type: ignore[attr-defined]
        if claimed != 1:
            return False
        with self.archive.db.read() as session:
            job = session.get(Job, job_pk)
        assert job is not None
        self._run(job)
        return True

    def _consume(self, session: Session, consumer: Consumer) -> None:
        cursor = session.get(ConsumerCursor, consumer.name)
        if cursor is None:
            cursor = ConsumerCursor(consumer=consumer.name, seq=0)
            session.add(cursor)
        kinds = getattr(consumer, "kinds", None)
        if kinds is None:
            changes = session.scalars(
                select(ChangeLog).where(ChangeLog.seq > cursor.seq).order_by(ChangeLog.seq).limit(1000)
            ).all()
            for change in changes:
                for kind, key, payload in consumer(session, change):
                    enqueue(session, kind, key, payload)
                cursor.seq = change.seq
            return
        # Only the kinds it takes, and the cursor moved past the rest without loading them: one indexed
        # range read per round instead of a thousand ORM rows, inside the write lock ingest commits wait for.
        last = session.scalar(select(func.max(ChangeLog.seq)).where(ChangeLog.seq > cursor.seq))
        if last is None:
            return
        changes = session.scalars(
            select(ChangeLog)
            .where(ChangeLog.seq > cursor.seq, ChangeLog.seq <= last, ChangeLog.kind.in_(list(kinds)))
            .order_by(ChangeLog.seq)
            .limit(1000)
        ).all()
        for change in changes:
            for kind, key, payload in consumer(session, change):
                enqueue(session, kind, key, payload)
        cursor.seq = changes[-1].seq if len(changes) == 1000 else last

    def _claim(self) -> Job | None:
        with self.archive.db.write() as session:
            job = session.scalars(
                select(Job)
                .where(
                    Job.status == "pending", Job.next_attempt_at <= utcnow(), Job.kind.in_(list(self.kinds))
                )
                .order_by(Job.next_attempt_at, Job.job_pk)
                .limit(1)
                .with_for_update(skip_locked=True)  # PostgreSQL: several workers never claim one job
            ).first()
            if job is None:
                return None
            job.status, job.attempts, job.updated_at = "running", job.attempts + 1, utcnow()
            return job

    def _run(self, job: Job) -> None:
        kind = self.kinds[job.kind]
        try:
            result = kind.function(self.archive, dict(job.payload))
            status, error = "done", ""
        except Exception as exc:
            log.warning(
                "job %s #%d failed (attempt %d): %s", job.kind, job.job_pk, job.attempts, type(exc).__name__
            )
            result, error = {}, f"{type(exc).__name__}: {exc}"[:2000]
            status = "failed" if job.attempts >= kind.max_attempts else "pending"
        delay = kind.base_delay * 2 ** (job.attempts - 1) * (0.5 + random.random())
        with self.archive.db.write() as session:
            row = session.get(Job, job.job_pk)
            if row is None:
                return
            row.status, row.result, row.last_error, row.updated_at = status, result, error, utcnow()
            row.next_attempt_at = utcnow() + dt.timedelta(seconds=delay)

    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="imaging-jobs", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                log.exception("job runner round failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
