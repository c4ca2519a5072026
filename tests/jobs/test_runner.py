"""Stability and the durable job runner: events from the change log, idempotent jobs, retries with
backoff, and recovery of work a crash left running."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from sqlalchemy import select

from imaging.archive import Archive
from imaging.events import ChangeKind
from imaging.index.schema import ChangeLog, Job, Series, Study
from imaging.jobs.runner import JobKind, JobRunner
from imaging.jobs.stability import mark_stable
from imaging.synthetic import SyntheticStudy, ct_series


@pytest.fixture
def archive(make_archive: Any, db_url: str) -> Archive:
    return make_archive(stability_seconds=0)


def _ingest_study(archive: Archive, series: int = 2, count: int = 3) -> SyntheticStudy:
    study = SyntheticStudy()
    for n in range(series):
        for ds in ct_series(study, count, series_number=n + 1, rows=16, columns=16):
            archive.ingestor.ingest_dataset(ds)
    return study


def _kinds(archive: Archive) -> list[str]:
    with archive.db.read() as s:
        return list(s.scalars(select(ChangeLog.kind).order_by(ChangeLog.seq)))


def test_series_then_study_stable_once(archive: Archive) -> None:
    _ingest_study(archive)
    with archive.db.write() as s:
        assert mark_stable(s, 0, set()) == 2
    with archive.db.write() as s:
        assert mark_stable(s, 0, set()) == 0  # nothing new: no new events
    kinds = _kinds(archive)
    assert kinds.count(ChangeKind.SERIES_STABLE) == 2
    assert kinds.count(ChangeKind.STUDY_STABLE) == 1
    assert kinds.index(ChangeKind.STUDY_STABLE) > max(i for i, k in enumerate(kinds) if k == "SeriesStable")


def test_quiet_period_and_open_association_hold_stability(archive: Archive) -> None:
    study = _ingest_study(archive, series=1)
    with archive.db.read() as s:
        series_uid = s.scalar(select(Series.SeriesInstanceUID))
    with archive.db.write() as s:
        assert mark_stable(s, 3600, set()) == 0  # still inside the quiet period
        assert mark_stable(s, 0, {("clinical", series_uid)}) == 0  # an association is still sending
        assert mark_stable(s, 0, set()) == 1
    # A late instance makes the series and study unstable again, and stable again later.
    archive.ingestor.ingest_dataset(next(ct_series(study, 1, series_uid=series_uid, rows=16, columns=16)))
    with archive.db.read() as s:
        assert s.scalar(select(Study.stable)) is False
    with archive.db.write() as s:
        assert mark_stable(s, 0, set()) == 1
    assert _kinds(archive).count(ChangeKind.STUDY_STABLE) == 2


class _Collect:
    name = "collect"

    def __call__(self, session: Any, change: ChangeLog) -> list[tuple[str, str, dict[str, Any]]]:
        if change.kind != ChangeKind.STUDY_STABLE:
            return []
        return [("work", change.StudyInstanceUID, {"study": change.StudyInstanceUID})]


def test_jobs_run_once_and_retry_with_backoff(archive: Archive) -> None:
    calls: list[str] = []
    failures = {"left": 2}

    def work(_archive: Archive, payload: dict[str, Any]) -> dict[str, Any]:
        calls.append(payload["study"])
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("peer down")
        return {"ok": True}

    runner = JobRunner(archive)
    runner.register(_Collect(), work=JobKind(work, max_attempts=5, base_delay=0.0))
    study = _ingest_study(archive)
    for _ in range(5):
        runner.tick()
    assert calls == [study.StudyInstanceUID] * 3  # two failures, then success, then nothing more
    with archive.db.read() as s:
        job = s.scalars(select(Job)).one()
    assert (job.status, job.attempts, job.result) == ("done", 3, {"ok": True})
    assert "peer down" in job.last_error or job.last_error == ""


def test_failed_job_is_kept_with_its_error(archive: Archive) -> None:
    def broken(_archive: Archive, _payload: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("bad bundle")

    runner = JobRunner(archive)
    runner.register(_Collect(), work=JobKind(broken, max_attempts=2, base_delay=0.0))
    _ingest_study(archive)
    for _ in range(4):
        runner.tick()
    with archive.db.read() as s:
        job = s.scalars(select(Job)).one()
    assert job.status == "failed" and job.attempts == 2 and "bad bundle" in job.last_error


def test_restart_recovers_running_jobs_and_cursor(archive: Archive) -> None:
    _ingest_study(archive)
    runner = JobRunner(archive)
    runner.register(_Collect(), work=JobKind(lambda a, p: {}, base_delay=0.0))
    with archive.db.write() as s:
        mark_stable(s, 0, set())
    # Simulate a crash after the job was claimed: it is left `running`.
    runner.kinds.clear()
    runner.tick()  # consumes the change log, enqueues, but has no kind to run it
    with archive.db.write() as s:
        job = s.scalars(select(Job)).one()
        job.status = "running"
        job.next_attempt_at = dt.datetime(2000, 1, 1)
    archive.close()

    reopened = Archive.open(archive.settings)
    ran: list[str] = []
    again = JobRunner(reopened)
    again.register(_Collect(), work=JobKind(lambda a, p: ran.append(p["study"]) or {}, base_delay=0.0))
    again.recover()
    again.tick()
    again.tick()
    assert len(ran) == 1  # re-run once after the restart; the consumer cursor did not re-enqueue
    with reopened.db.read() as s:
        assert s.scalars(select(Job)).one().status == "done"
    reopened.close()


def test_two_runners_share_the_work_without_running_a_job_twice(make_archive: Any, db_url: str) -> None:
    """Scale-out: two worker processes on one index (threads here, separate engines) each claim distinct jobs."""
    first = make_archive(stability_seconds=0)
    second = make_archive(stability_seconds=0)  # same PostgreSQL database (db_url), its own engine
    if first.db.is_sqlite:
        second = first  # one SQLite file per archive: share the first one's index
    ran: list[tuple[str, str]] = []
    lock = threading.Lock()

    def work(name: str) -> Any:
        def run(_archive: Archive, payload: dict[str, Any]) -> dict[str, Any]:
            with lock:
                ran.append((name, payload["n"]))
            return {}

        return run

    runners = []
    for name, a in (("a", first), ("b", second)):
        r = JobRunner(a)
        r.register(n=JobKind(work(name), base_delay=0.0))
        runners.append(r)
    from imaging.jobs.runner import enqueue

    with first.db.write() as s:
        for i in range(40):
            enqueue(s, "n", str(i), {"n": str(i)})
    threads = [threading.Thread(target=r.tick) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = sorted(int(n) for _, n in ran)
    assert done == list(range(40))  # every job exactly once
