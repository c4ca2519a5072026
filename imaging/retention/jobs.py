"""The retention feature's job kinds, registered with the runner at the composition root: `retention.purge`
(imaging.retention.schedule), `retention.apply` (one rule, daily: imaging.retention.rules) and
`retention.erase` (one erasure request: imaging.retention.erasure)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging.archive import Archive
from imaging.index.removal import PendingDeletion
from imaging.index.schema import Job
from imaging.jobs.runner import JobKind, JobRunner
from imaging.retention.erasure import run_erasure
from imaging.retention.rules import RetentionRule, run_rule
from imaging.retention.schedule import APPLY, ERASE, PURGE, run_purge, schedule_purge, schedule_rule


def register(runner: JobRunner, archive: Archive) -> None:
    runner.register(
        None,
        **{
            PURGE: JobKind(run_purge, max_attempts=20, base_delay=30.0),
            APPLY: JobKind(run_rule, max_attempts=5, base_delay=600.0),
            ERASE: JobKind(run_erasure, max_attempts=20, base_delay=30.0),
        },
    )
    ensure_scheduled(archive)


def ensure_scheduled(archive: Archive) -> None:
    """At start: a purge for what waits, and the next run of every enabled rule."""

    def work(session: Session) -> None:
        if session.scalar(select(PendingDeletion.deletion_pk).limit(1)) is not None:
            schedule_purge(session)
        for name in session.scalars(select(RetentionRule.name).where(RetentionRule.enabled.is_(True))):
            waiting = session.scalar(
                select(Job.job_pk).where(
                    Job.kind == APPLY,
                    Job.status.in_(("pending", "queued", "running")),
                    Job.key.startswith(f"{name}@", autoescape=True),
                )
            )
            if waiting is None:
                schedule_rule(session, archive.settings, name)

    archive.db.transaction(work)
