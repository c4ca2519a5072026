"""When things happen: the purge of objects whose deletion is due (`retention.purge`), the daily run of each
retention rule (`retention.apply`). A job that must run again later schedules its successor under a key of
its own (the runner marks the finished one done), so a restart finds every future run in the index. The
job kinds are registered in imaging.retention.jobs."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging.archive import Archive
from imaging.config import Settings
from imaging.events import InstancesRemoved
from imaging.index.removal import PendingDeletion, purge
from imaging.index.schema import Job, utcnow
from imaging.jobs.runner import enqueue

log = logging.getLogger(__name__)

PURGE = "retention.purge"
APPLY = "retention.apply"
ERASE = "retention.erase"
REJECTED_PREFIXES = ("rejected:", "rejection-note:")


def due_at(settings: Settings, row: PendingDeletion) -> dt.datetime | None:
    """When a pending object may go: rejected instances and their notes after their title's delay (never,
    for a title without one), anything else at once."""
    for prefix in REJECTED_PREFIXES:
        if row.reason.startswith(prefix):
            days = settings.rejection_delete_after_days.get(row.reason[len(prefix) :])
            return None if days is None else row.created_at + dt.timedelta(days=days)
    return row.created_at


def is_due(settings: Settings, now: dt.datetime | None = None) -> Any:
    moment = now or utcnow()

    def check(row: PendingDeletion) -> bool:
        at = due_at(settings, row)
        return at is not None and at <= moment

    return check


def schedule(
    session: Session, kind: str, key: str, payload: dict[str, Any], at: dt.datetime, *, rearm: bool = False
) -> None:
    """A job that runs at `at` (unless one with this key is pending already).

    `rearm`: a finished job under the same key runs again; a purge asked for twice within one second (the
    key's resolution) must still see the rows the second request was made for.
    """
    enqueue(session, kind, key, payload)
    job = session.scalar(select(Job).where(Job.kind == kind, Job.key == key))
    if job is not None and rearm and job.status in ("done", "failed"):
        job.status, job.attempts = "pending", 0
    if job is not None and job.status == "pending":
        job.next_attempt_at = max(at, utcnow())


def schedule_purge(session: Session, at: dt.datetime | None = None) -> None:
    moment = at or utcnow()
    schedule(session, PURGE, f"purge@{moment.replace(microsecond=0).isoformat()}", {}, moment, rearm=True)


def run_purge(archive: Archive, payload: dict[str, Any]) -> dict[str, Any]:
    """The `retention.purge` job: delete what is due; schedule the next run for what waits."""
    settings = archive.settings
    report = purge(archive.db, archive.store, is_due=is_due(settings))
    if report.waiting:
        with archive.db.read() as session:
            times = [due_at(settings, row) for row in session.scalars(select(PendingDeletion))]
        upcoming = [t for t in times if t is not None]
        if upcoming:
            floor = utcnow() + dt.timedelta(seconds=settings.retention_purge_interval_seconds)
            archive.db.transaction(lambda s: schedule_purge(s, max(min(upcoming), floor)))
    return {"deleted": report.deleted, "kept": report.kept, "waiting": report.waiting}


def on_instances_removed(session: Session, event: InstancesRemoved) -> None:
    """Subscribed at the composition root: a purge runs as soon as the job runner's next round."""
    schedule_purge(session)


def next_rule_run(settings: Settings, now: dt.datetime | None = None) -> dt.datetime:
    moment = now or utcnow()
    run = moment.replace(hour=settings.retention_run_hour, minute=0, second=0, microsecond=0)
    return run if run > moment else run + dt.timedelta(days=1)


def schedule_rule(session: Session, settings: Settings, rule: str, after: dt.datetime | None = None) -> None:
    """The rule's next daily run (after `after`: the run that schedules its successor)."""
    moment = next_rule_run(settings, after)
    schedule(
        session, APPLY, f"{rule}@{moment.isoformat()}"[:256], {"rule": rule, "at": moment.isoformat()}, moment
    )
