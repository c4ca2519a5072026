"""The worklist read model (triage.worklist), on SQLite and PostgreSQL: order by priority then time, the
findings summary and bundle of the series' latest outcomes, the status of each study from its outcomes and
triage jobs (failed with the job's reason, pending while waiting or retrying, done, none), the filters, and
the change token the page polls with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update

from imaging.archive import Archive
from imaging.index.schema import Job, Study
from imaging.jobs.stability import mark_stable
from imaging.priority import Priority
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from tests.archive_fixtures import db_url, make_archive, pg_database  # noqa: F401 (fixtures)
from triage.records import TriageOutcome
from triage.worker import JOB_KIND
from triage.worklist import WorklistFilter, changes_since, worklist

VERSION = "0.2.0+abcdef012345"


def _study(archive: Archive, n: int, date: str, modality: str = "CT") -> tuple[str, str]:
    st = SyntheticStudy(patient=synthetic_patient(n), StudyDate=date, StudyTime="120000")
    (ds,) = ct_series(st, 1, rows=16, columns=16, modality=modality)
    archive.ingestor.ingest_dataset(ds, source="test")
    return st.StudyInstanceUID, str(ds.SeriesInstanceUID)


def _job(archive: Archive, series: str, status: str, error: str = "", attempts: int = 1) -> None:
    with archive.db.write() as session:
        session.add(
            Job(
                kind=JOB_KIND,
                key=f"clinical:{series}:{VERSION}",
                status=status,
                attempts=attempts,
                last_error=error,
                payload={},
            )
        )


def _outcome(
    archive: Archive, study: str, series: str, findings: list[float] | None, priority: str = ""
) -> None:
    with archive.db.write() as session:
        session.add(
            TriageOutcome(
                partition="clinical",
                StudyInstanceUID=study,
                SeriesInstanceUID=series,
                bundle_version=VERSION,
                selected=findings is not None,
                priority=priority,
                findings=[
                    {"position_lps": [0, 0, 0], "diameter_mm": d, "score": 0.9} for d in findings or []
                ],
                sr_sop_instance_uid="1.2.3.4" if findings is not None else "",
            )
        )
        if priority:
            session.execute(update(Study).where(Study.StudyInstanceUID == study).values(priority=priority))


def _by_uid(entries: list[Any]) -> dict[str, Any]:
    return {e.StudyInstanceUID: e for e in entries}


def test_status_findings_order_and_filters(make_archive: Callable[..., Archive], db_url: str) -> None:  # noqa: F811
    archive = make_archive()
    done = _study(archive, 1, "20240101")
    failed = _study(archive, 2, "20240301")
    retrying = _study(archive, 3, "20240201")
    report = _study(archive, 4, "20240401", modality="SR")
    skipped = _study(archive, 5, "20231201")
    with archive.db.write() as session:
        mark_stable(session, 0, set())
    arriving = _study(archive, 6, "20240501")  # not stable yet: waits for triage
    _job(archive, done[1], "done")
    _outcome(archive, *done, [9.5, 4.0], priority="HIGH")
    _job(
        archive, failed[1], "failed", "VolumeError: the series has gaps between slices\nat line 3", attempts=5
    )
    _job(archive, retrying[1], "pending", "OutOfMemoryError: CUDA out of memory", attempts=2)
    _job(archive, skipped[1], "done")
    _outcome(archive, *skipped, None)

    with archive.db.read() as session:
        entries = worklist(session, WorklistFilter())
    assert [e.StudyInstanceUID for e in entries] == [
        done[0],
        arriving[0],
        report[0],
        failed[0],
        retrying[0],
        skipped[0],
    ]  # fmt: skip  (HIGH first, then newest study date first)
    found = _by_uid(entries)
    first = found[done[0]]
    assert (first.status, first.findings, first.largest_mm, first.bundles) == ("done", 2, 9.5, [VERSION])
    assert first.sr_sop_instance_uids == ["1.2.3.4"] and first.priority == "HIGH"
    assert (found[failed[0]].status, found[failed[0]].reason) == (
        "failed", "VolumeError: the series has gaps between slices"
    )  # fmt: skip
    assert (found[retrying[0]].status, found[retrying[0]].reason) == (
        "pending", "OutOfMemoryError: CUDA out of memory"
    )  # fmt: skip
    assert found[arriving[0]].status == "pending" and found[arriving[0]].reason == ""
    assert found[report[0]].status == "none"  # an SR alone is never triaged
    assert found[skipped[0]].status == "none" and found[skipped[0]].findings == 0

    with archive.db.read() as session:
        high = worklist(session, WorklistFilter(priorities=(Priority.HIGH,)))
        reports = worklist(session, WorklistFilter(modality="SR"))
        early = worklist(session, WorklistFilter(study_date="-20240215"))
        paged = worklist(session, WorklistFilter(limit=2, offset=2))
    assert [e.StudyInstanceUID for e in high] == [done[0]]
    assert [e.StudyInstanceUID for e in reports] == [report[0]]
    assert {e.StudyInstanceUID for e in early} == {done[0], retrying[0], skipped[0]}
    assert [e.StudyInstanceUID for e in paged] == [report[0], failed[0]]


def test_the_change_token_moves_only_when_the_worklist_may_have(
    make_archive: Callable[..., Archive],  # noqa: F811
    db_url: str,  # noqa: F811
) -> None:
    archive = make_archive()
    study, series = _study(archive, 1, "20240101")
    with archive.db.read() as session:
        before = changes_since(session)
        assert changes_since(session) == before  # asking changes nothing
    another = SyntheticStudy(patient=synthetic_patient(9))
    (ds,) = ct_series(another, 1, rows=16, columns=16)
    archive.ingestor.ingest_dataset(ds, partition="clinical", source="test")
    with archive.db.read() as session:
        after_store = changes_since(session)
    assert after_store != before
    _job(archive, series, "failed", "ValueError: undecodable pixels")
    with archive.db.read() as session:
        after_failure = changes_since(session)
    assert after_failure != after_store
    _outcome(archive, study, series, [])
    with archive.db.read() as session:
        after_outcome = changes_since(session)
        running = session.scalars(select(Job)).one()
    assert after_outcome != after_failure
    with archive.db.write() as session:
        session.execute(update(Job).where(Job.job_pk == running.job_pk).values(attempts=9))
    with archive.db.read() as session:
        assert changes_since(session) == after_outcome  # a job's bookkeeping alone is no change
